/* engine._cksum: an optional C fast path for the exchanges' book checksum TEXT and its CRC32.
 *
 * Owns: the byte work of two checksums whose rules are defined, once, in Python:
 *
 *   kraken(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, pd, qd, scale)
 *       codecs/kraken_book.py: the best n asks (lowest first) then the best n
 *       bids (highest first), each level's price and qty rendered at the given
 *       decimals, the "." removed and the leading zeros stripped, concatenated;
 *       CRC32 (unsigned).
 *   okx(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, scale)
 *       codecs/okx_checksum.py: the best n bids and asks interleaved
 *       bidPx:bidSz:askPx:askSz:... (the longer side goes on alone), every value
 *       in its shortest decimal form, joined with ":"; CRC32 read as signed 32-bit.
 *   BookChecksum(rule, n, scale, fallback)
 *       the same read straight from an engine.book.Book's slots (its class handed
 *       over once by configure(Book)), the memo kept in the book's memo slot: its
 *       checksum method, called as the rule's Python function `fallback` is (which
 *       answers whatever this code declines), is the codecs' `checksum`; its
 *       matches(want, ...) method, checksum(...) == want, their `matches` (the sync
 *       rules' test, with no int made for the checksum).
 *   crc32(data, value=0, /, *, impl=None), crc32_impl()
 *       the CRC alone (engine/_crc32.h: zlib's CRC-32, table or PCLMULQDQ folding),
 *       as zlib.crc32 answers, for tests/test_crc32.py and bench/crc.py.
 *
 * Both walk a Book's own structures without copying them (Book.sorted_keys()):
 * bk, the bid prices ascending (best last), bids the dict price -> qty; ak, the
 * *negated* ask prices ascending (best last), asks the dict price -> qty.  Values
 * are exact ints in units of 10**-scale (engine.num.SCALE), carried here in
 * unsigned __int128.
 *
 * Work skipped, never a result changed (a Memo, one per book, see its comment):
 * a level whose key and qty objects are the ones the memo rendered is not
 * rendered again; asked at the version the memo is of (Book.version counts
 * applies), the memo's crc is the answer; asked one version later with the
 * hint (hint_bids, hint_asks: the levels that one apply set), a level no kept
 * price of the hint touched is not even looked up, a touched one's qty is the
 * hint's own object (Book.apply stores it), a side the hint left alone is not
 * read at all, and the text's CRC is summed from its levels' own CRCs, each
 * computed once, when the level is rendered (the text itself is never kept).
 *
 * The parts (one extension, compiled from this file): engine/_crc32.h the CRC-32
 * and its combine; engine/_cknum.h ints and their texts; engine/_ckmemo.h the
 * memo, the walk and compute(); this file the Python interface and the module.
 *
 * None means "let Python decide": anything this code does not fully understand
 * (not exact lists/dicts/ints, a missing level, a negative value, a value of
 * 2**128 units or more, scale > 19, decimals > 30, a value with more decimals than
 * the precision asked: Python raises ValueError there) returns None and the
 * Python definition answers.  It never raises on book content: where it answers,
 * the answer is the Python path's (tests/test_cksum.py checks that
 * differentially).  Must not: hold a rule of its own (which levels, in which
 * order, at which precision: the Python modules say), or modify anything it is
 * given but a Book's memo slot.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#include "_crc32.h" /* zlib's CRC-32 (table or PCLMULQDQ) and crc32_combine */
#include "_cknum.h" /* int values and their checksum texts */
#include "_ckmemo.h" /* the Memo, the walk over a book's top, compute() */

/* A book version (an exact int >= 0 and below 2**63), or -1. */
static long long version_of(PyObject *version) {
    long v;
    if (small_int(version, 0, (1L << 30) - 1, &v)) return v; /* (one digit: no call) */
    int overflow = 0;
    long long w = PyLong_CheckExact(version) ? PyLong_AsLongLongAndOverflow(version, &overflow) : -1;
    return overflow || w < 0 ? -1 : w;
}

/* The lists' checksum with memo (a Memo, or None: a memo for this call only). */
static PyObject *generic(Spec *sp, PyObject *memo, PyObject *version, PyObject *hb, PyObject *ha,
                         PyObject *const *lists) {
    long long v = version_of(version);
    if (v < 0) Py_RETURN_NONE;
    if (hb == Py_None || ha == Py_None) hb = ha = NULL;
    long crc;
    int done;
    if (memo != Py_None) {
        if (!Py_IS_TYPE(memo, &MemoType)) Py_RETURN_NONE;
        done = compute((Memo *)memo, sp, v, hb, ha, lists, &crc);
    } else {
        PyObject *tmp = Memo_new(&MemoType, NULL, NULL);
        if (tmp == NULL) return NULL;
        done = compute((Memo *)tmp, sp, v, hb, ha, lists, &crc);
        Py_DECREF(tmp);
    }
    if (!done) Py_RETURN_NONE;
    return PyLong_FromLong(crc);
}

/* kraken(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, pd, qd, scale) */
static PyObject *kraken(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "kraken(memo, version, hint_bids, hint_asks, bk, bids, "
                                         "ak, asks, n, pd, qd, scale)");
        return NULL;
    }
    Spec sp;
    if (!spec_init(&sp, KRAKEN, a[8], a[9], a[10], a[11])) Py_RETURN_NONE;
    return generic(&sp, a[0], a[1], a[2], a[3], a + 4);
}

/* okx(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, scale) */
static PyObject *okx(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError,
                        "okx(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, scale)");
        return NULL;
    }
    Spec sp;
    if (!spec_init(&sp, OKX, a[8], NULL, NULL, a[9])) Py_RETURN_NONE;
    return generic(&sp, a[0], a[1], a[2], a[3], a + 4);
}

/* ------------------------------------------------------------------ straight from a Book */

#define NSLOTS 6
static const char *SLOTS[NSLOTS] = {"memo", "version", "_bk", "bids", "_ak", "asks"};
static PyTypeObject *book_type = NULL;
static Py_ssize_t slot_offsets[NSLOTS];

/* configure(Book): the class whose slots a BookChecksum reads (each must be one). */
static PyObject *configure(PyObject *self, PyObject *cls) {
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes the Book class");
        return NULL;
    }
    PyTypeObject *tp = (PyTypeObject *)cls;
    Py_ssize_t offs[NSLOTS];
    for (int i = 0; i < NSLOTS; i++) {
        PyObject *d = PyDict_GetItemString(tp->tp_dict, SLOTS[i]); /* borrowed */
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX ||
            ((PyMemberDescrObject *)d)->d_common.d_type != tp) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, SLOTS[i]);
            return NULL;
        }
        offs[i] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    memcpy(slot_offsets, offs, sizeof offs);
    Py_XSETREF(book_type, (PyTypeObject *)Py_NewRef(cls));
    Py_RETURN_NONE;
}

/* A BookChecksum: the checksum of a Book as one rule computes it.  Its checksum method is called
 * like the rule's Python function and answers exactly what that function answers, calling it
 * whenever this code declines (so Python's exceptions, ValueError among them, are the caller's):
 *   Kraken: checksum(book, price_decimals, qty_decimals[, bids, asks])
 *   OKX:    checksum(book[, bids, asks])
 * bids, asks: the levels the book's last Book.apply set (the diff just applied).  Its matches
 * method takes the checksum wanted first, then the same arguments: checksum(...) == want. */
typedef struct {
    PyObject_HEAD int kind;
    long n, scale; /* the rule's depth and engine.num.SCALE, read once */
    PyObject *fallback;
} Checksum;

/* The checksum of the book args[0] (the rest: the rule's other arguments) into *crc: 1, 0 if
 * declined (keyword arguments, or anything this code does not render: the fallback answers),
 * -1 on an error of our own (set). */
static int checksum_fast(Checksum *ck, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames, long *crc) {
    Py_ssize_t base = ck->kind == KRAKEN ? 3 : 1;
    if (UNLIKELY((kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) ||
                 (nargs != base && nargs != base + 2) || book_type == NULL ||
                 !Py_IS_TYPE(args[0], book_type)))
        return 0;
    Spec sp;
    PyObject *pd = ck->kind == KRAKEN ? args[1] : NULL, *qd = ck->kind == KRAKEN ? args[2] : NULL;
    if (UNLIKELY(!spec_set(&sp, ck->kind, ck->n, ck->scale, pd, qd)))
        return 0;
    PyObject *s[NSLOTS];
    for (int i = 0; i < NSLOTS; i++) {
        s[i] = *(PyObject **)((char *)args[0] + slot_offsets[i]);
        if (UNLIKELY(s[i] == NULL)) return 0;
    }
    if (UNLIKELY(s[0] == Py_None)) { /* the book's memo, kept in its slot from now on */
        PyObject *m = Memo_new(&MemoType, NULL, NULL);
        if (m == NULL) return -1;
        Py_SETREF(*(PyObject **)((char *)args[0] + slot_offsets[0]), m);
        s[0] = m;
    }
    if (UNLIKELY(!Py_IS_TYPE(s[0], &MemoType))) return 0;
    long long v = version_of(s[1]);
    if (UNLIKELY(v < 0)) return 0;
    PyObject *hb = nargs > base ? args[base] : NULL, *ha = nargs > base ? args[base + 1] : NULL;
    if (hb == Py_None || ha == Py_None) hb = ha = NULL;
    return compute((Memo *)s[0], &sp, v, hb, ha, s + 2, crc);
}

/* BookChecksum.checksum(...): the call the codecs hand out, a builtin method (CPython 3.11
 * specializes calls to builtin functions and methods, and not those to other callables) */
static PyObject *Checksum_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames) {
    Checksum *ck = (Checksum *)self;
    long crc;
    int done = checksum_fast(ck, args, nargs, kwnames, &crc);
    if (done < 0) return NULL;
    /* (declined: the rule's Python function answers, its exceptions the caller's) */
    return done ? PyLong_FromLong(crc)
                : PyObject_Vectorcall(ck->fallback, args, (size_t)nargs, kwnames);
}

/* BookChecksum.matches(want, ...): checksum(...) == want, without making the checksum an int
 * object where this code answers and want is an exact int (the sync rules' test) */
static PyObject *Checksum_matches(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                  PyObject *kwnames) {
    Checksum *ck = (Checksum *)self;
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "matches(want, book, ...) takes the checksum wanted first");
        return NULL;
    }
    PyObject *want = args[0];
    long crc;
    int done = checksum_fast(ck, args + 1, nargs - 1, kwnames, &crc);
    if (done < 0) return NULL;
    if (done && PyLong_CheckExact(want)) { /* (read from its digits: no call) */
        u128 w;
        int neg;
        u128 mag = crc < 0 ? (u128)(-(crc + 1)) + 1 : (u128)crc;
        return PyBool_FromLong(int_parts(want, &w, &neg) && neg == (crc < 0) && w == mag);
    }
    PyObject *const *rest = args + 1;
    PyObject *got = done ? PyLong_FromLong(crc)
                         : PyObject_Vectorcall(ck->fallback, rest, (size_t)(nargs - 1), kwnames);
    if (got == NULL) return NULL;
    PyObject *r = PyObject_RichCompare(got, want, Py_EQ);
    Py_DECREF(got);
    return r;
}

static PyMethodDef Checksum_methods[] = {
    {"checksum", (PyCFunction)(void (*)(void))Checksum_method, METH_FASTCALL | METH_KEYWORDS,
     "checksum(book, ...): the rule's checksum of book, called as the rule's Python function is"},
    {"matches", (PyCFunction)(void (*)(void))Checksum_matches, METH_FASTCALL | METH_KEYWORDS,
     "matches(want, book, ...): checksum(book, ...) == want (the sync rules' test)"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Checksum_new(PyTypeObject *t, PyObject *args, PyObject *kw) {
    const char *rule;
    long n, scale;
    PyObject *fallback;
    static char *names[] = {"rule", "n", "scale", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sllO:BookChecksum", names, &rule, &n, &scale,
                                     &fallback))
        return NULL;
    int kind = strcmp(rule, "kraken") == 0 ? KRAKEN : strcmp(rule, "okx") == 0 ? OKX : 0;
    if (kind == 0 || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_ValueError, "BookChecksum(rule 'kraken' or 'okx', n, scale, fallback)");
        return NULL;
    }
    Checksum *ck = (Checksum *)t->tp_alloc(t, 0);
    if (ck == NULL) return NULL;
    ck->kind = kind;
    ck->n = n; /* (one this code does not render: every call declines, Python answers) */
    ck->scale = scale;
    ck->fallback = Py_NewRef(fallback);
    return (PyObject *)ck;
}

static int Checksum_traverse(Checksum *ck, visitproc visit, void *arg) {
    Py_VISIT(ck->fallback);
    return 0;
}

static int Checksum_clear(Checksum *ck) {
    Py_CLEAR(ck->fallback);
    return 0;
}

static void Checksum_dealloc(Checksum *ck) {
    PyObject_GC_UnTrack(ck);
    Checksum_clear(ck);
    Py_TYPE(ck)->tp_free((PyObject *)ck);
}

static PyMemberDef Checksum_members[] = {
    {"fallback", T_OBJECT, offsetof(Checksum, fallback), READONLY,
     "the rule's Python function, which answers whatever this object declines"},
    {NULL},
};

static PyTypeObject ChecksumType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engine._cksum.BookChecksum",
    .tp_basicsize = sizeof(Checksum),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Checksum_new,
    .tp_dealloc = (destructor)Checksum_dealloc,
    .tp_traverse = (traverseproc)Checksum_traverse,
    .tp_clear = (inquiry)Checksum_clear,
    .tp_members = Checksum_members,
    .tp_methods = Checksum_methods,
    .tp_doc = "BookChecksum(rule, n, scale, fallback).checksum: a Book's checksum as the rule's "
              "Python function `fallback` computes it (Kraken: (book, pd, qd[, bids, asks]); OKX: "
              "(book[, bids, asks])), in C where it can, by `fallback` where it declines.",
};

/* crc32_combine(crc1, crc2, len2, hw) -> crc32(A + B): for the tests (hw: PCLMULQDQ if the CPU
 * has it; a len2 of CRC_TEXT_MAX (8192) or more raises ValueError) */
static PyObject *py_crc32_combine(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    unsigned long c1, c2;
    long len2;
    int hw;
    if (nargs != 4 || !PyLong_Check(a[0]) || !PyLong_Check(a[1])) {
        PyErr_SetString(PyExc_TypeError, "crc32_combine(crc1, crc2, len2, hw)");
        return NULL;
    }
    c1 = PyLong_AsUnsignedLong(a[0]);
    c2 = PyLong_AsUnsignedLong(a[1]);
    len2 = PyLong_AsLong(a[2]);
    hw = PyObject_IsTrue(a[3]);
    if (PyErr_Occurred()) return NULL;
    if (c1 > 0xFFFFFFFFul || c2 > 0xFFFFFFFFul || len2 < 0 || len2 >= CRC_TEXT_MAX) {
        PyErr_SetString(PyExc_ValueError, "crc32_combine: CRCs are 32-bit, len2 under 8192");
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        crc_combine_with(hw && crc_pclmul_on, (uint32_t)c1, (uint32_t)c2, (int)len2));
}

/* ------------------------------------------------------------------ the CRC alone */

/* crc32(data, value=0, /, *, impl=None): zlib.crc32(data, value), by the implementation
 * crc_update uses (impl None), or the one named ("table", or "pclmul" where the CPU has it);
 * parsed by hand (fast call) so that a bench measures the CRC, not the argument parsing */
static PyObject *crc32(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                       PyObject *kwnames) {
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "crc32() takes 1 or 2 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    int pclmul = crc_pclmul_on;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, i), *v = args[nargs + i];
        if (!PyUnicode_Check(name) || PyUnicode_CompareWithASCIIString(name, "impl") != 0) {
            PyErr_Format(PyExc_TypeError, "crc32() got an unexpected keyword argument %R", name);
            return NULL;
        }
        if (v == Py_None) continue;
        if (PyUnicode_Check(v) && PyUnicode_CompareWithASCIIString(v, "table") == 0) {
            pclmul = 0;
        } else if (PyUnicode_Check(v) && PyUnicode_CompareWithASCIIString(v, "pclmul") == 0) {
            if (!crc_pclmul_supported()) {
                PyErr_SetString(PyExc_ValueError, "impl='pclmul': this CPU lacks PCLMULQDQ/SSE4.1");
                return NULL;
            }
            pclmul = 1;
        } else {
            PyErr_Format(PyExc_ValueError, "impl is 'table', 'pclmul' or None, not %R", v);
            return NULL;
        }
    }
    unsigned int value = 0;
    if (nargs == 2) { /* as zlib: any int, taken modulo 2**32 */
        value = (unsigned int)PyLong_AsUnsignedLongMask(args[1]);
        if (value == (unsigned int)-1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    uint32_t c = crc_update_with(pclmul, value ^ 0xFFFFFFFFu, (const unsigned char *)data.buf,
                                 (size_t)data.len);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(c ^ 0xFFFFFFFFu);
}

static PyObject *crc32_impl(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(crc_impl());
}

static PyMethodDef methods[] = {
    {"crc32_combine", (PyCFunction)(void (*)(void))py_crc32_combine, METH_FASTCALL,
     "crc32_combine(crc1, crc2, len2, hw) -> crc32 of the concatenation (for the tests)"},
    {"configure", configure, METH_O, "configure(Book): the class a BookChecksum reads"},
    {"kraken", (PyCFunction)(void (*)(void))kraken, METH_FASTCALL,
     "kraken(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, price_decimals, "
     "qty_decimals, scale) -> int | None"},
    {"okx", (PyCFunction)(void (*)(void))okx, METH_FASTCALL,
     "okx(memo, version, hint_bids, hint_asks, bk, bids, ak, asks, n, scale) -> int | None"},
    {"crc32", (PyCFunction)(void (*)(void))crc32, METH_FASTCALL | METH_KEYWORDS,
     "crc32(data, value=0, /, *, impl=None) -> int: zlib.crc32(data, value); impl names the "
     "implementation ('table', 'pclmul'), None the one the checksums use"},
    {"crc32_impl", crc32_impl, METH_NOARGS,
     "crc32_impl() -> 'pclmul' | 'table': the CRC-32 the checksums use (ENGINE_CRC32=table forces "
     "the table)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engine._cksum",
    "Optional C fast path for the Kraken and OKX book checksum text and CRC32 "
    "(the rules: codecs/kraken_book.py, codecs/okx_checksum.py).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__cksum(void) {
    crc_init();
    pow10_init();
    COLON = crc_of(":", 1);
    if (PyType_Ready(&MemoType) < 0 || PyType_Ready(&ChecksumType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    if (PyModule_AddObjectRef(mod, "Memo", (PyObject *)&MemoType) < 0 ||
        PyModule_AddObjectRef(mod, "BookChecksum", (PyObject *)&ChecksumType) < 0) {
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
