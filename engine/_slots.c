/* engine._slots: store an attrs value object's fields straight into its slots.
 *
 * Why: events and outputs are frozen attrs classes, built on the hot path.
 * Storing a field of a frozen instance costs a descriptor call per field in
 * Python (engine/frozen.py); here a whole object is one C call.
 *
 *   spec = spec(cls, names)          # once per class: checks every name is an
 *                                    # object slot *of cls itself*
 *   fill(obj, spec, v0, v1, ...)     # obj.names[i] = vi, for an instance of cls
 *
 * fill() checks that obj is an instance of the spec's class and that it got
 * exactly one value per name, so it can never write outside an object of the
 * right layout.  It replaces (and releases) whatever a slot held.
 *
 * Optional: engine/frozen.py falls back to Python descriptor stores when this
 * extension did not build (tests/test_frozen.py runs both).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    Py_ssize_t n;
    Py_ssize_t offsets[1]; /* n of them */
} Spec;

static void spec_dealloc(Spec *s) {
    Py_XDECREF(s->cls);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyTypeObject SpecType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engine._slots.Spec",
    .tp_basicsize = sizeof(Spec) - sizeof(Py_ssize_t),
    .tp_itemsize = sizeof(Py_ssize_t),
    .tp_dealloc = (destructor)spec_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Slot offsets of one class's fields (engine._slots.spec)",
};

/* spec(cls, names: tuple[str, ...]) -> Spec */
static PyObject *spec(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "spec(cls, names: tuple)");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)args[0];
    Py_ssize_t n = PyTuple_GET_SIZE(args[1]);
    Spec *s = PyObject_NewVar(Spec, &SpecType, n);
    if (s == NULL)
        return NULL;
    s->cls = NULL;
    s->n = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(args[1], i);
        PyObject *d = PyUnicode_Check(name) ? PyDict_GetItemWithError(tp->tp_dict, name) : NULL;
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX ||
            ((PyMemberDescrObject *)d)->d_common.d_type != tp) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s.%R is not an object slot of the class",
                             tp->tp_name, name);
            Py_DECREF(s);
            return NULL;
        }
        s->offsets[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    s->cls = (PyTypeObject *)Py_NewRef(tp);
    return (PyObject *)s;
}

/* fill(obj, spec, *values) -> None */
static PyObject *fill(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 2 || !Py_IS_TYPE(args[1], &SpecType)) {
        PyErr_SetString(PyExc_TypeError, "fill(obj, spec, *values)");
        return NULL;
    }
    Spec *s = (Spec *)args[1];
    PyObject *obj = args[0];
    if (!PyObject_TypeCheck(obj, s->cls)) {
        PyErr_Format(PyExc_TypeError, "fill() needs a %s, got %s", s->cls->tp_name,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (nargs - 2 != s->n) {
        PyErr_Format(PyExc_TypeError, "fill() needs %zd values, got %zd", s->n, nargs - 2);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < s->n; i++) {
        PyObject **addr = (PyObject **)((char *)obj + s->offsets[i]);
        PyObject *old = *addr;
        *addr = Py_NewRef(args[i + 2]);
        Py_XDECREF(old);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"spec", (PyCFunction)(void (*)(void))spec, METH_FASTCALL,
     "spec(cls, names) -> Spec: the slot offsets of names, each an object slot of cls"},
    {"fill", (PyCFunction)(void (*)(void))fill, METH_FASTCALL,
     "fill(obj, spec, *values): store values into obj's slots (obj: an instance of spec's class)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engine._slots",
    "Store attrs value objects' fields straight into their slots (see the C source header).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__slots(void) {
    if (PyType_Ready(&SpecType) < 0)
        return NULL;
    return PyModule_Create(&module);
}
