/* engine._depthscan: an optional C fast path for Binance depthUpdate frames.
 *
 * Owns: one scanner for the exact byte shapes Binance sends for diff depth,
 *
 *   {"e":"depthUpdate","E":1,["T":1,]"s":"SYM","U":1,"u":2,["pu":0,]"b":[["p","q"],...],"a":[...]}
 *
 * raw or inside the combined wrapper {"stream":"name","data":{...}}, with no
 * whitespace anywhere.  scan_depth() returns the engine.events.DepthDiff the
 * Python codec (codecs/binance.py) would build, prices and quantities as exact
 * ints in units of 1e-18 (engine.num.SCALE), without creating intermediate
 * Python strings.  At 1e-18 a price of 9.23 no longer fits int64, so values
 * accumulate in unsigned __int128 (GCC and Clang; without it the build fails,
 * which pip treats as "no extension" and the pure-Python path runs) and become
 * Python ints exactly (from the 128-bit value's bytes).
 *
 * None means "let Python decide": anything outside that grammar (other key
 * orders or keys, whitespace, escapes, non-ASCII, signs, exponents, more than
 * 18 decimals, more than 38 digits, values beyond engine.num.MAX (10**38 - 1
 * units), ids of more than 18 digits, U > u, a
 * missing pu when need_pu ...) returns None and the Python path produces the
 * events or the DecodeError.  This code never raises on input and can never
 * change what a frame decodes to: where it answers, the answer is the Python
 * path's (tests/test_depthscan.py checks that differentially).
 *
 * Must not: allocate anything but the result objects, recurse, or read past
 * the payload (every read goes through the bounds-checked cursor below).
 *
 * configure(cls) hands over the DepthDiff class once: each DepthDiff field must
 * be an object slot of it; the result is allocated with the type's tp_alloc and
 * its slots filled directly: what attrs' __init__ does (the codec only calls
 * configure while DepthDiff has no validators, converters or post-init), without
 * eleven object.__setattr__ calls (checksum is always None: Binance sends none).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#ifndef __SIZEOF_INT128__
#error "engine._depthscan needs unsigned __int128 (GCC or Clang); the Python codec runs without it"
#endif
typedef unsigned __int128 u128;
#define SCALE 18 /* engine.num.SCALE */
#define NFIELDS 11

static const char *FIELDS[NFIELDS] = {"seq",     "recv_ns", "symbol", "first_id", "last_id",
                                      "prev_id", "exch_ms", "txn_ms", "bids",     "asks",    "checksum"};
static PyTypeObject *diff_type = NULL;
static Py_ssize_t offsets[NFIELDS];

typedef struct {
    const unsigned char *p, *end;
} Cur;

static u128 POW10[SCALE + 1]; /* 10**i, filled at module init */
static u128 MAXV;              /* engine.num.MAX = 10**38 - 1: what decimal128(38, 18) holds */

/* Consume the literal `lit` (length n) if it is next. */
static inline int lit(Cur *c, const char *s, Py_ssize_t n) {
    if (c->end - c->p < n || memcmp(c->p, s, (size_t)n) != 0)
        return 0;
    c->p += n;
    return 1;
}
#define LIT(c, s) lit((c), (s), (Py_ssize_t)(sizeof(s) - 1))

/* A JSON integer id: "0" or [1-9][0-9]{0,17} (below 1e18, so within int64). */
static int json_int(Cur *c, int64_t *out) {
    const unsigned char *p = c->p, *e = c->end;
    if (p >= e || *p < '0' || *p > '9')
        return 0;
    if (*p == '0') {
        if (p + 1 < e && p[1] >= '0' && p[1] <= '9')
            return 0; /* leading zero: invalid JSON, Python reports it */
        c->p = p + 1;
        *out = 0;
        return 1;
    }
    int64_t v = 0;
    int n = 0;
    while (p < e && *p >= '0' && *p <= '9') {
        if (++n > 18)
            return 0;
        v = v * 10 + (*p++ - '0');
    }
    c->p = p;
    *out = v;
    return 1;
}

/* A quoted decimal "ddd[.ddd]" → units of 1e-18 in [0, MAXV]; at most 38 digits
 * (10**38 < 2**127: the accumulator cannot overflow), 18 decimals. */
static int decimal(Cur *c, u128 *out) {
    const unsigned char *p = c->p, *e = c->end;
    if (p >= e || *p != '"')
        return 0;
    p++;
    u128 v = 0;
    int n = 0, frac = -1;
    for (;;) {
        if (p >= e)
            return 0;
        unsigned char ch = *p;
        if (ch >= '0' && ch <= '9') {
            if (++n > 38)
                return 0;
            v = v * 10 + (ch - '0');
            if (frac >= 0 && ++frac > SCALE)
                return 0;
        } else if (ch == '.' && frac < 0) {
            frac = 0;
        } else if (ch == '"') {
            break;
        } else {
            return 0;
        }
        p++;
    }
    if (n == 0)
        return 0;
    u128 m = POW10[SCALE - (frac < 0 ? 0 : frac)];
    if (v > MAXV / m)
        return 0;
    c->p = p + 1;
    *out = v * m;
    return 1;
}

/* A quoted plain-ASCII string without escapes (bytes 0x20..0x7e but '"' and '\\'). */
static int plain_str(Cur *c, const unsigned char **s, Py_ssize_t *n) {
    const unsigned char *p = c->p, *e = c->end;
    if (p >= e || *p != '"')
        return 0;
    const unsigned char *start = ++p;
    while (p < e && *p != '"') {
        if (*p < 0x20 || *p > 0x7e || *p == '\\')
            return 0;
        p++;
    }
    if (p >= e)
        return 0;
    *s = start;
    *n = p - start;
    c->p = p + 1;
    return 1;
}

/* An exact Python int of v (< 2**127) without going through text. */
static PyObject *units(u128 v) {
    if ((v >> 64) == 0)
        return PyLong_FromUnsignedLongLong((unsigned long long)v);
    unsigned char b[16];
    for (int i = 0; i < 16; i++, v >>= 8)
        b[i] = (unsigned char)v; /* little-endian */
    return _PyLong_FromByteArray(b, 16, 1, 0);
}

/* [["p","q"],...] → a new list of (int, int) tuples; NULL: no match, or (with an exception
 * set) out of memory. */
static PyObject *levels(Cur *c) {
    if (!LIT(c, "["))
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    if (LIT(c, "]"))
        return out;
    for (;;) {
        u128 pv, qv;
        if (!LIT(c, "[") || !decimal(c, &pv) || !LIT(c, ",") || !decimal(c, &qv) ||
            !LIT(c, "]"))
            goto fail;
        PyObject *t = PyTuple_New(2);
        if (t == NULL)
            goto fail;
        PyObject *a = units(pv), *b = a ? units(qv) : NULL;
        if (b == NULL) {
            Py_XDECREF(a);
            Py_DECREF(t);
            goto fail;
        }
        PyTuple_SET_ITEM(t, 0, a);
        PyTuple_SET_ITEM(t, 1, b);
        int r = PyList_Append(out, t);
        Py_DECREF(t);
        if (r < 0)
            goto fail;
        if (LIT(c, "]"))
            return out;
        if (!LIT(c, ","))
            goto fail;
    }
fail:
    Py_DECREF(out);
    return NULL;
}

static PyObject *new_int_or_none(int has, int64_t v) {
    if (!has)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

/* scan_depth(payload: bytes, seq, recv_ns, need_pu: bool) -> DepthDiff | None */
static PyObject *scan_depth(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "scan_depth(payload, seq, recv_ns, need_pu)");
        return NULL;
    }
    if (diff_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "engine._depthscan.configure() was not called");
        return NULL;
    }
    if (!PyBytes_Check(args[0]))
        Py_RETURN_NONE;
    int need_pu = PyObject_IsTrue(args[3]);
    if (need_pu < 0)
        return NULL;
    Cur cur = {(const unsigned char *)PyBytes_AS_STRING(args[0]), NULL};
    Cur *c = &cur;
    cur.end = cur.p + PyBytes_GET_SIZE(args[0]);
    int wrapped = 0;
    const unsigned char *s;
    Py_ssize_t n;
    if (LIT(c, "{\"stream\":")) {
        if (!plain_str(c, &s, &n) || !LIT(c, ",\"data\":"))
            Py_RETURN_NONE;
        wrapped = 1;
    }
    int64_t E, T = 0, U, u, pu = 0;
    int has_t = 0, has_pu = 0;
    if (!LIT(c, "{\"e\":\"depthUpdate\",\"E\":") || !json_int(c, &E))
        Py_RETURN_NONE;
    if (LIT(c, ",\"T\":")) {
        if (!json_int(c, &T))
            Py_RETURN_NONE;
        has_t = 1;
    }
    if (!LIT(c, ",\"s\":") || !plain_str(c, &s, &n) || !LIT(c, ",\"U\":") || !json_int(c, &U) ||
        !LIT(c, ",\"u\":") || !json_int(c, &u))
        Py_RETURN_NONE;
    if (LIT(c, ",\"pu\":")) {
        if (!json_int(c, &pu))
            Py_RETURN_NONE;
        has_pu = 1;
    }
    if (U > u || (need_pu && !has_pu) || !LIT(c, ",\"b\":"))
        Py_RETURN_NONE;
    PyObject *vals[NFIELDS] = {NULL};
    vals[8] = levels(c);
    if (vals[8] == NULL)
        goto out;
    if (!LIT(c, ",\"a\":"))
        goto out;
    vals[9] = levels(c);
    if (vals[9] == NULL || !LIT(c, "}") || (wrapped && !LIT(c, "}")) || c->p != c->end)
        goto out;
    vals[0] = Py_NewRef(args[1]);
    vals[1] = Py_NewRef(args[2]);
    if (!(vals[2] = PyUnicode_DecodeASCII((const char *)s, n, NULL)) ||
        !(vals[3] = PyLong_FromLongLong(U)) || !(vals[4] = PyLong_FromLongLong(u)) ||
        !(vals[5] = new_int_or_none(has_pu, pu)) || !(vals[6] = PyLong_FromLongLong(E)) ||
        !(vals[7] = new_int_or_none(has_t, T)))
        goto out;
    vals[10] = Py_NewRef(Py_None); /* checksum: Binance sends none */
    PyObject *obj = diff_type->tp_alloc(diff_type, 0);
    if (obj == NULL)
        goto out;
    for (int i = 0; i < NFIELDS; i++)
        *(PyObject **)((char *)obj + offsets[i]) = vals[i]; /* steals */
    return obj;
out:
    for (int i = 0; i < NFIELDS; i++)
        Py_XDECREF(vals[i]);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* configure(cls): the DepthDiff class; checks each field is an object slot of it. */
static PyObject *configure(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes the DepthDiff class");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)cls;
    Py_ssize_t offs[NFIELDS];
    for (int i = 0; i < NFIELDS; i++) {
        PyObject *d = PyDict_GetItemString(tp->tp_dict, FIELDS[i]); /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX ||
            ((PyMemberDescrObject *)d)->d_common.d_type != tp) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, FIELDS[i]);
            return NULL;
        }
        offs[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    memcpy(offsets, offs, sizeof offs);
    Py_XSETREF(diff_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan_depth", (PyCFunction)(void (*)(void))scan_depth, METH_FASTCALL,
     "scan_depth(payload, seq, recv_ns, need_pu) -> DepthDiff | None (None: let Python decide)"},
    {"configure", configure, METH_O, "configure(DepthDiff): the class scan_depth builds"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engine._depthscan",
    "Optional C fast path for Binance depthUpdate frames (see the C source header).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__depthscan(void) {
    POW10[0] = 1;
    for (int i = 1; i <= SCALE; i++)
        POW10[i] = POW10[i - 1] * 10;
    MAXV = POW10[SCALE] * POW10[SCALE] * 100 - 1; /* 10**38 - 1 */
    return PyModule_Create(&module);
}
