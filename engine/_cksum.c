/* engine._cksum: an optional C fast path for the exchanges' book checksum TEXT and its CRC32.
 *
 * Owns: the byte work of two checksums whose rules are defined, once, in Python:
 *
 *   kraken(memo, version, change, bk, bids, ak, asks, n, price_decimals, qty_decimals, scale)
 *       codecs/kraken_book.py: the best n asks (lowest first) then the best n
 *       bids (highest first), each level's price and qty rendered at the given
 *       decimals, the "." removed and the leading zeros stripped, concatenated;
 *       CRC32 (unsigned).
 *   okx(memo, version, change, bk, bids, ak, asks, n, scale)
 *       codecs/okx_checksum.py: the best n bids and asks interleaved
 *       bidPx:bidSz:askPx:askSz:... (the longer side goes on alone), every value
 *       in its shortest decimal form, joined with ":"; CRC32 read as signed 32-bit.
 *   kraken_book(book, change, n, pd, qd, scale), okx_book(book, change, n, scale)
 *       the same read straight from an engine.book.Book's slots (its class handed
 *       over once by configure(Book)), the memo kept in the book's memo slot.
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
 * `change` that one apply set, a level no kept price of the change touched is
 * not even looked up, and a side the change left alone is not read at all.
 *
 * None means "let Python decide": anything this code does not fully understand
 * (not exact lists/dicts/ints, a missing level, a negative value, a whole part
 * of 2**64 or more, scale > 19, decimals > 30, a value with more decimals than
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

#include "_crc32.h" /* crc_init, crc_update: zlib's CRC-32, running value without the final xor */

#ifndef __SIZEOF_INT128__
#error "engine._cksum needs unsigned __int128 (GCC or Clang); the Python checksums run without it"
#endif
typedef unsigned __int128 u128;

#define MAX_DECIMALS 30
#define MAX_SCALE 19 /* 10**19 < 2**64 */
/* one value's text: ≤ 20 whole digits + "." + ≤ MAX_DECIMALS decimals */
#define PIECE 64

static uint64_t POW10[MAX_SCALE + 1];

static void pow10_init(void) {
    POW10[0] = 1;
    for (int i = 1; i <= MAX_SCALE; i++) POW10[i] = POW10[i - 1] * 10;
}

/* A non-negative exact int → *out; 0 if it is not one (or does not fit 128 bits). */
static int to_u128(PyObject *o, u128 *out) {
    if (!PyLong_CheckExact(o)) return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) {
        if (v < 0) return 0; /* also -1 with an error set: an exact int never sets one */
        *out = (u128)v;
        return 1;
    }
    if (overflow < 0) return 0;
#if PY_VERSION_HEX < 0x030C0000 && PyLong_SHIFT == 30
    { /* 3.11's int layout (sign and size in ob_size, 30-bit digits): read the digits directly,
       * the common case at SCALE 18 (a whole part above 9) without the general converter */
        Py_ssize_t nd = Py_SIZE(o);
        if (nd <= 0) return 0;
        const digit *dg = ((PyLongObject *)o)->ob_digit;
        if (nd > 5 || (nd == 5 && (dg[4] >> 8))) return 0; /* 4 * 30 + 8 = 128 bits at most */
        u128 x = 0;
        for (Py_ssize_t i = nd - 1; i >= 0; i--) x = (x << PyLong_SHIFT) | (u128)dg[i];
        *out = x;
        return 1;
    }
#endif
    unsigned char buf[16];
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t r = PyLong_AsNativeBytes(
        o, buf, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    if (r > 16) return 0;
#else
    if (_PyLong_AsByteArray((PyLongObject *)o, buf, 16, 1, 0) < 0) {
        PyErr_Clear();
        return 0;
    }
#endif
    u128 x = 0;
    for (int i = 15; i >= 0; i--) x = (x << 8) | buf[i];
    *out = x;
    return 1;
}

/* The decimal digits of v (no leading zeros; "" for 0) written backwards ending at *end. */
static char *digits_back(char *end, uint64_t v) {
    while (v) {
        *--end = (char)('0' + v % 10);
        v /= 10;
    }
    return end;
}

/* whole, frac of v at 10**scale; 0 if the whole part does not fit 64 bits. */
static int split(u128 v, int scale, uint64_t *whole, uint64_t *frac) {
    uint64_t one = POW10[scale];
    u128 w = v / one;
    if (w >> 64) return 0;
    *whole = (uint64_t)w;
    *frac = (uint64_t)(v - w * one);
    return 1;
}

/* Kraken's piece of one value: render(v, d) without "." and leading zeros.  Returns its length
 * (written at out), or -1 if v cannot be rendered exactly at d decimals (or is out of range). */
static int kraken_piece(char *out, u128 v, int d, int scale) {
    uint64_t whole, frac;
    if (!split(v, scale, &whole, &frac)) return -1;
    char buf[PIECE];
    char *end = buf + PIECE, *p = end;
    int keep = d < scale ? d : scale;
    if (d > scale) { /* zeros past the engine's scale */
        p -= d - scale;
        memset(p, '0', (size_t)(d - scale));
    }
    if (keep < scale) {
        uint64_t drop = POW10[scale - keep];
        if (frac % drop) return -1; /* finer than the precision: Python raises */
        frac /= drop;
    }
    for (int i = 0; i < keep; i++) { /* exactly `keep` frac digits, zero-padded */
        *--p = (char)('0' + frac % 10);
        frac /= 10;
    }
    p = digits_back(p, whole);
    while (p < end && *p == '0') p++; /* leading zeros stripped (whole 0 wrote none) */
    int n = (int)(end - p);
    memcpy(out, p, (size_t)n);
    return n;
}

/* OKX's text of one value: its shortest decimal form ("5.16", "30316", "0.5", "0"). */
static int okx_piece(char *out, u128 v, int scale) {
    uint64_t whole, frac;
    if (!split(v, scale, &whole, &frac)) return -1;
    char buf[PIECE];
    char *end = buf + PIECE, *p = end;
    if (frac) {
        int k = scale;
        while (frac % 10 == 0) {
            frac /= 10;
            k--;
        }
        for (int i = 0; i < k; i++) {
            *--p = (char)('0' + frac % 10);
            frac /= 10;
        }
        *--p = '.';
    }
    if (whole)
        p = digits_back(p, whole);
    else
        *--p = '0';
    int n = (int)(end - p);
    memcpy(out, p, (size_t)n);
    return n;
}

/* ------------------------------------------------------------------ the walk over a book's top */

#define KRAKEN 1
#define OKX 2
#define MAX_N 25
/* one level's text: Kraken price+qty digits, OKX "px:sz"; ≤ 2 * (20 + MAX_DECIMALS) + 1 */
#define TEXT (2 * (20 + MAX_DECIMALS) + 1)

typedef struct {
    PyObject *key;   /* the book's key object (bids: the price; asks: the negated price) */
    PyObject *price; /* the price as the side's dict keys it */
    PyObject *qty;   /* the qty object the dict held when the text was rendered */
    u128 px;         /* the price's value */
    int len;
    char text[TEXT];
} Entry;

/* A Memo (one per book: held by the caller with the book) keeps the last top's entries, each
 * holding references to its key and qty objects.  A level whose key and qty are the very objects
 * an entry holds has that entry's text (ints are immutable, and the references keep the objects
 * alive, so an identical object is an equal value): only levels that changed are rendered.  It
 * can never change a result; it is emptied whenever the rule or precision asked for changes. */
typedef struct {
    PyObject_HEAD int kind;
    long n, pd, qd, scale;
    long long version; /* the book version the entries and crc are of (-1: none) */
    long crc;
    uint32_t crc_asks;        /* Kraken: the running CRC after the asks' text */
    Py_ssize_t count[2];
    int cur[2];               /* per side, the bank holding its entries; the other: the next */
    Entry bank[2][2][MAX_N];  /* [bank][side: 0 bids, 1 asks][rank, best first] */
} Memo;

static void entries_clear(Entry *e, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_CLEAR(e[i].key);
        Py_CLEAR(e[i].price);
        Py_CLEAR(e[i].qty);
    }
}

static void memo_clear(Memo *m) {
    for (int s = 0; s < 2; s++) {
        entries_clear(m->bank[m->cur[s]][s], m->count[s]);
        m->count[s] = 0;
    }
    m->kind = 0;
    m->version = -1;
}

static void Memo_dealloc(Memo *m) {
    memo_clear(m);
    Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyObject *Memo_new(PyTypeObject *t, PyObject *args, PyObject *kw) {
    Memo *m = (Memo *)PyType_GenericNew(t, args, kw);
    if (m != NULL) m->version = -1;
    return (PyObject *)m;
}

static PyTypeObject MemoType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engine._cksum.Memo",
    .tp_basicsize = sizeof(Memo),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Memo_new,
    .tp_dealloc = (destructor)Memo_dealloc,
    .tp_doc = "Memo(): one book's rendered top levels (pass the same one with the same book).",
};

/* The memo entry of side s holding key object k (identity), looked for near rank i first. */
static Entry *find(Memo *m, int s, PyObject *k, Py_ssize_t i) {
    if (m == NULL) return NULL;
    Py_ssize_t c = m->count[s];
    Entry *e = m->bank[m->cur[s]][s];
    if (i < c && e[i].key == k) return &e[i];
    if (i > 0 && i - 1 < c && e[i - 1].key == k) return &e[i - 1];
    if (i + 1 < c && e[i + 1].key == k) return &e[i + 1];
    for (Py_ssize_t j = 0; j < c; j++)
        if (e[j].key == k) return &e[j];
    return NULL;
}

#define MAX_TOUCHED 64
typedef struct {
    int kind;
    int pd, qd, scale;
    /* hinted: the book changed once since the memo's version, at these prices only */
    int hinted;
    int unchanged[2]; /* hinted, and that side's top is the memo's (see prepare) */
    int nt[2];
    u128 touched[2][MAX_TOUCHED];
} Spec;

static void spec_init(Spec *sp, int kind, int pd, int qd, int scale) {
    sp->kind = kind;
    sp->pd = pd;
    sp->qd = qd;
    sp->scale = scale;
    sp->hinted = sp->unchanged[0] = sp->unchanged[1] = sp->nt[0] = sp->nt[1] = 0;
}

static int touched(const Spec *sp, int s, u128 px) {
    for (int i = 0; i < sp->nt[s]; i++)
        if (sp->touched[s][i] == px) return 1;
    return 0;
}

/* The prices of one side of a change ((price, qty) pairs) into sp, keeping only those that
 * could be a memo entry's (within its worst entry's price: only entries are looked up in
 * sp->touched); 0 if not understood. */
static int hint_side(Spec *sp, int s, PyObject *levels, const Entry *e, Py_ssize_t count) {
    if (!PyList_CheckExact(levels) && !PyTuple_CheckExact(levels)) return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(levels);
    PyObject **items = PySequence_Fast_ITEMS(levels);
    int kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lv = items[i];
        u128 px;
        if (!PyTuple_CheckExact(lv) || PyTuple_GET_SIZE(lv) != 2) return 0;
        if (!to_u128(PyTuple_GET_ITEM(lv, 0), &px)) return 0;
        if (count == 0 || (s ? px > e[count - 1].px : px < e[count - 1].px)) continue;
        if (kept == MAX_TOUCHED) return 0;
        sp->touched[s][kept++] = px;
    }
    sp->nt[s] = kept;
    return 1;
}

/* The text of one level (its price and qty objects) into e->text; 0 if declined. */
static int render_level(const Spec *sp, Entry *e, PyObject *price, PyObject *qty) {
    u128 px, q;
    if (!to_u128(price, &px) || !to_u128(qty, &q)) return 0;
    e->px = px;
    int k1, k2;
    if (sp->kind == KRAKEN) {
        if ((k1 = kraken_piece(e->text, px, sp->pd, sp->scale)) < 0) return 0;
        if ((k2 = kraken_piece(e->text + k1, q, sp->qd, sp->scale)) < 0) return 0;
        e->len = k1 + k2;
    } else {
        if ((k1 = okx_piece(e->text, px, sp->scale)) < 0) return 0;
        e->text[k1] = ':';
        if ((k2 = okx_piece(e->text + k1 + 1, q, sp->scale)) < 0) return 0;
        e->len = k1 + 1 + k2;
    }
    return 1;
}

/* Fill out[0..cnt) with the best cnt levels of one side (s 0: bids, 1: asks, negated keys),
 * reusing memo entries where the level's objects are the entry's.  Returns the number of
 * entries filled (each holding references); fewer than cnt means declined. */
static Py_ssize_t walk(Memo *m, const Spec *sp, int s, PyObject *keys, PyObject *dict,
                       Py_ssize_t cnt, Entry *out) {
    Py_ssize_t len = PyList_GET_SIZE(keys);
    for (Py_ssize_t i = 0; i < cnt; i++) {
        PyObject *k = PyList_GET_ITEM(keys, len - 1 - i);
        Entry *old = find(m, s, k, i);
        PyObject *price;
        if (old != NULL && sp->hinted && !touched(sp, s, old->px)) { /* unchanged: as it was */
            Entry *e = &out[i];
            e->px = old->px;
            e->len = old->len;
            memcpy(e->text, old->text, (size_t)old->len);
            Py_INCREF(e->key = old->key);
            Py_INCREF(e->price = old->price);
            Py_INCREF(e->qty = old->qty);
            continue;
        }
        if (old != NULL) {
            price = old->price;
            Py_INCREF(price);
        } else if (s) {
            if (!PyLong_CheckExact(k) || (price = PyNumber_Negative(k)) == NULL) {
                PyErr_Clear();
                return i;
            }
        } else {
            price = k;
            Py_INCREF(price);
        }
        PyObject *q = PyDict_GetItemWithError(dict, price); /* borrowed */
        if (q == NULL) {
            PyErr_Clear();
            Py_DECREF(price);
            return i;
        }
        Entry *e = &out[i];
        if (old != NULL && old->qty == q) {
            e->px = old->px;
            e->len = old->len;
            memcpy(e->text, old->text, (size_t)old->len);
        } else if (!render_level(sp, e, price, q)) {
            Py_DECREF(price);
            return i;
        }
        Py_INCREF(k);
        Py_INCREF(q);
        e->key = k;
        e->price = price;
        e->qty = q;
    }
    return cnt;
}

/* The memo argument made ready for sp (emptied if it was for another rule or precision), and
 * whether the change given may be trusted: the memo is of the book's previous version, so the
 * change (the levels of the one Book.apply since) is all that moved.  0 if declined. */
static int prepare(PyObject *memo, PyObject *version, PyObject *change, Spec *sp, long n,
                   PyObject *const *a, Memo **mp, long long *vp) {
    *mp = NULL;
    sp->hinted = sp->unchanged[0] = sp->unchanged[1] = 0;
    if (!PyLong_CheckExact(version)) return 0;
    int overflow = 0;
    *vp = PyLong_AsLongLongAndOverflow(version, &overflow);
    if (overflow || *vp < 0) return 0;
    if (memo == Py_None) return 1;
    if (!Py_IS_TYPE(memo, &MemoType)) return 0;
    Memo *m = *mp = (Memo *)memo;
    if (m->kind != sp->kind || m->n != n || m->pd != sp->pd || m->qd != sp->qd ||
        m->scale != sp->scale) {
        memo_clear(m);
        m->kind = sp->kind;
        m->n = n;
        m->pd = sp->pd;
        m->qd = sp->qd;
        m->scale = sp->scale;
    }
    if (m->version >= 0 && *vp == m->version + 1 && PyTuple_CheckExact(change) &&
        PyTuple_GET_SIZE(change) == 2)
        sp->hinted = hint_side(sp, 0, PyTuple_GET_ITEM(change, 0), m->bank[m->cur[0]][0],
                               m->count[0]) &&
                     hint_side(sp, 1, PyTuple_GET_ITEM(change, 1), m->bank[m->cur[1]][1],
                               m->count[1]);
    /* A side no kept price of the change touched has the memo's top: with n entries, every
     * change was below its n-th level (and the side still has n levels: no truncation cut
     * into them); with fewer (the memo held the whole side), nothing was added either. */
    for (int s = 0; sp->hinted && s < 2; s++) {
        Py_ssize_t len = PyList_GET_SIZE(a[2 * s]);
        sp->unchanged[s] = sp->nt[s] == 0 && (m->count[s] == n ? len >= n : len == m->count[s]);
    }
    return 1;
}

/* Both sides' entries, best first (*bp: bids, *ap: asks): each side's current memo bank (refilled
 * unless unchanged) or sb and sa without a memo.  0 if declined (nothing new held, the memo as
 * it was). */
static int top(Memo *m, const Spec *sp, PyObject *const *a, long n, Entry *sb, Entry *sa,
               Entry **bp, Entry **ap, Py_ssize_t *nb, Py_ssize_t *na) {
    Py_ssize_t cnt[2], got[2] = {0, 0};
    Entry *out[2] = {sb, sa};
    int walked[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        cnt[s] = PyList_GET_SIZE(a[2 * s]) < n ? PyList_GET_SIZE(a[2 * s]) : n;
        if (m != NULL && sp->unchanged[s]) { /* as it was: nothing to read */
            out[s] = m->bank[m->cur[s]][s];
            continue;
        }
        if (m != NULL) out[s] = m->bank[!m->cur[s]][s]; /* fill the other bank */
        walked[s] = 1;
        got[s] = walk(m, sp, s, a[2 * s], a[2 * s + 1], cnt[s], out[s]);
        if (got[s] < cnt[s]) {
            for (int t = 0; t <= s; t++)
                if (walked[t]) entries_clear(out[t], got[t]);
            return 0;
        }
    }
    for (int s = 0; m != NULL && s < 2; s++) { /* each refilled side's new top becomes the memo's */
        if (!walked[s]) continue;
        entries_clear(m->bank[m->cur[s]][s], m->count[s]);
        m->cur[s] = !m->cur[s];
        m->count[s] = cnt[s];
    }
    *bp = out[0];
    *ap = out[1];
    *nb = cnt[0];
    *na = cnt[1];
    return 1;
}

/* Release what top() filled when there is no memo to hold it (the texts stay readable). */
static void done(Memo *m, Entry *b, Py_ssize_t nb, Entry *as, Py_ssize_t na) {
    if (m == NULL) {
        entries_clear(b, nb);
        entries_clear(as, na);
    }
}

static int args_ok(PyObject *const *a) {
    return PyList_CheckExact(a[0]) && PyDict_CheckExact(a[1]) && PyList_CheckExact(a[2]) &&
           PyDict_CheckExact(a[3]);
}

static int small_int(PyObject *o, long lo, long hi, long *out) {
    if (!PyLong_CheckExact(o)) return 0;
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(o, &overflow);
    if (overflow || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

/* Entries' texts are read after done(): the references they held are the memo's, or were
 * released, and the texts stay valid either way. */
static PyObject *kraken(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    long n, pd, qd, scale;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError,
                        "kraken(memo, version, change, bk, bids, ak, asks, n, pd, qd, scale)");
        return NULL;
    }
    if (!args_ok(a + 3) || !small_int(a[7], 0, MAX_N, &n) ||
        !small_int(a[8], 0, MAX_DECIMALS, &pd) || !small_int(a[9], 0, MAX_DECIMALS, &qd) ||
        !small_int(a[10], 0, MAX_SCALE, &scale))
        Py_RETURN_NONE;
    Spec sp; /* (not zeroed whole: touched[] is read only up to nt[]) */
    spec_init(&sp, KRAKEN, (int)pd, (int)qd, (int)scale);
    Memo *m;
    long long version;
    if (!prepare(a[0], a[1], a[2], &sp, n, a + 3, &m, &version)) Py_RETURN_NONE;
    if (m != NULL && m->version == version) return PyLong_FromLong(m->crc);
    if (m != NULL && sp.unchanged[0] && sp.unchanged[1]) { /* the top is as it was */
        m->version = version;
        return PyLong_FromLong(m->crc);
    }
    Entry sb[MAX_N], sa[MAX_N], *b, *as;
    Py_ssize_t nb, na;
    if (!top(m, &sp, a + 3, n, sb, sa, &b, &as, &nb, &na)) Py_RETURN_NONE;
    done(m, b, nb, as, na);
    char text[MAX_N * TEXT], *t;
    text[0] = 0; /* (a side without levels reads none of it) */
    uint32_t c; /* asks lowest first, then bids highest first */
    if (m != NULL && sp.unchanged[1]) {
        c = m->crc_asks;
    } else {
        t = text;
        for (Py_ssize_t i = 0; i < na; i++) {
            memcpy(t, as[i].text, (size_t)as[i].len);
            t += as[i].len;
        }
        c = crc_update(0xFFFFFFFFu, (const unsigned char *)text, (size_t)(t - text));
        if (m != NULL) m->crc_asks = c;
    }
    t = text;
    for (Py_ssize_t i = 0; i < nb; i++) {
        memcpy(t, b[i].text, (size_t)b[i].len);
        t += b[i].len;
    }
    c = crc_update(c, (const unsigned char *)text, (size_t)(t - text));
    long crc = (long)(c ^ 0xFFFFFFFFu);
    if (m != NULL) {
        m->version = version;
        m->crc = crc;
    }
    return PyLong_FromLong(crc);
}

static PyObject *okx(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    long n, scale;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "okx(memo, version, change, bk, bids, ak, asks, n, scale)");
        return NULL;
    }
    if (!args_ok(a + 3) || !small_int(a[7], 0, MAX_N, &n) ||
        !small_int(a[8], 0, MAX_SCALE, &scale))
        Py_RETURN_NONE;
    Spec sp;
    spec_init(&sp, OKX, 0, 0, (int)scale);
    Memo *m;
    long long version;
    if (!prepare(a[0], a[1], a[2], &sp, n, a + 3, &m, &version)) Py_RETURN_NONE;
    if (m != NULL && m->version == version) return PyLong_FromLong(m->crc);
    if (m != NULL && sp.unchanged[0] && sp.unchanged[1]) { /* the top is as it was */
        m->version = version;
        return PyLong_FromLong(m->crc);
    }
    Entry sb[MAX_N], sa[MAX_N], *b, *as;
    Py_ssize_t nb, na;
    if (!top(m, &sp, a + 3, n, sb, sa, &b, &as, &nb, &na)) Py_RETURN_NONE;
    done(m, b, nb, as, na);
    char text[2 * MAX_N * (TEXT + 1)], *t = text;
    Py_ssize_t rows = nb > na ? nb : na;
    for (Py_ssize_t i = 0; i < rows; i++) { /* the bid, then the ask, of each row, ":" between */
        for (int s = 0; s < 2; s++) {
            Entry *e = s ? (i < na ? &as[i] : NULL) : (i < nb ? &b[i] : NULL);
            if (e == NULL) continue;
            memcpy(t, e->text, (size_t)e->len);
            t += e->len;
            *t++ = ':';
        }
    }
    if (t > text) t--; /* no ":" after the last */
    uint32_t c = crc_update(0xFFFFFFFFu, (const unsigned char *)text, (size_t)(t - text));
    c ^= 0xFFFFFFFFu;
    long crc = c >= 0x80000000u ? (long)c - 0x100000000L : (long)c;
    if (m != NULL) {
        m->version = version;
        m->crc = crc;
    }
    return PyLong_FromLong(crc);
}

/* ------------------------------------------------------------------ straight from a Book */

#define NSLOTS 6
static const char *SLOTS[NSLOTS] = {"memo", "version", "_bk", "bids", "_ak", "asks"};
static PyTypeObject *book_type = NULL;
static Py_ssize_t slot_offsets[NSLOTS];

/* configure(Book): the class whose slots kraken_book()/okx_book() read (each must be one). */
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

/* args[0..6] = memo, version, bk, bids, ak, asks of book (its memo made if it had none);
 * 0 if book is not a configured Book with every slot set. */
static int book_args(PyObject *book, PyObject **args) {
    if (book_type == NULL || !Py_IS_TYPE(book, book_type)) return 0;
    for (int i = 0; i < NSLOTS; i++) {
        args[i] = *(PyObject **)((char *)book + slot_offsets[i]);
        if (args[i] == NULL) return 0;
    }
    if (args[0] == Py_None) { /* the book's memo, kept in its slot from now on */
        PyObject *m = Memo_new(&MemoType, NULL, NULL);
        if (m == NULL) {
            PyErr_Clear();
            return 0;
        }
        Py_SETREF(*(PyObject **)((char *)book + slot_offsets[0]), m);
        args[0] = m;
    }
    return 1;
}

/* f(memo, version, change, bk, bids, ak, asks, *rest) for a Book's own structures and memo:
 * a = (book, change, *rest), nrest of them; None if book is not a configured Book. */
static PyObject *of_book(PyObject *(*f)(PyObject *, PyObject *const *, Py_ssize_t),
                         PyObject *self, PyObject *const *a, Py_ssize_t nargs, Py_ssize_t nrest) {
    if (nargs != 2 + nrest) {
        PyErr_Format(PyExc_TypeError, "takes (book, change, ...): %zd arguments", 2 + nrest);
        return NULL;
    }
    PyObject *s[NSLOTS], *args[7 + 4];
    if (!book_args(a[0], s)) Py_RETURN_NONE;
    args[0] = s[0];
    args[1] = s[1];
    args[2] = a[1];
    for (int i = 2; i < NSLOTS; i++) args[i + 1] = s[i];
    for (Py_ssize_t i = 0; i < nrest; i++) args[7 + i] = a[2 + i];
    return f(self, args, 7 + nrest);
}

/* kraken_book(book, change, n, pd, qd, scale) / okx_book(book, change, n, scale) */
static PyObject *kraken_book(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    return of_book(kraken, self, a, nargs, 4);
}

static PyObject *okx_book(PyObject *self, PyObject *const *a, Py_ssize_t nargs) {
    return of_book(okx, self, a, nargs, 2);
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
    {"configure", configure, METH_O, "configure(Book): the class kraken_book/okx_book read"},
    {"kraken_book", (PyCFunction)(void (*)(void))kraken_book, METH_FASTCALL,
     "kraken_book(book, change, n, price_decimals, qty_decimals, scale) -> int | None"},
    {"okx_book", (PyCFunction)(void (*)(void))okx_book, METH_FASTCALL,
     "okx_book(book, change, n, scale) -> int | None"},
    {"kraken", (PyCFunction)(void (*)(void))kraken, METH_FASTCALL,
     "kraken(memo, version, change, bk, bids, ak, asks, n, price_decimals, qty_decimals, scale)"
     " -> int | None"},
    {"okx", (PyCFunction)(void (*)(void))okx, METH_FASTCALL,
     "okx(memo, version, change, bk, bids, ak, asks, n, scale) -> int | None"},
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
    if (PyType_Ready(&MemoType) < 0) return NULL;
    PyObject *mod = PyModule_Create(&module);
    if (mod == NULL) return NULL;
    Py_INCREF(&MemoType);
    if (PyModule_AddObject(mod, "Memo", (PyObject *)&MemoType) < 0) {
        Py_DECREF(&MemoType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
