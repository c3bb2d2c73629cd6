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
 *       over once by configure(Book)), the memo kept in the book's memo slot, called
 *       as the rule's Python function `fallback` is, which answers whatever this
 *       code declines: that object is the codecs' `checksum`.
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
 * read at all, and the CRC resumes from the first position of the text that is
 * not as the memo's last text had it.
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

#if PY_VERSION_HEX < 0x030C0000 && PyLong_SHIFT == 30
#define DIRECT_DIGITS 1 /* 3.11's int layout: sign and size in ob_size, 30-bit digits */
#endif

/* An exact int's magnitude → *out and whether it is negative → *neg; 0 if it is not an exact
 * int (or its magnitude does not fit 128 bits).  3.11: read straight from its digits. */
static int int_parts(PyObject *o, u128 *out, int *neg) {
    if (!PyLong_CheckExact(o)) return 0;
#ifdef DIRECT_DIGITS
    Py_ssize_t nd = Py_SIZE(o);
    *neg = nd < 0;
    if (nd < 0) nd = -nd;
    const digit *dg = ((PyLongObject *)o)->ob_digit;
    if (nd > 5 || (nd == 5 && (dg[4] >> 8))) return 0; /* 4 * 30 + 8 = 128 bits at most */
    u128 x = 0;
    for (Py_ssize_t i = nd - 1; i >= 0; i--) x = (x << PyLong_SHIFT) | (u128)dg[i];
    *out = x;
    return 1;
#else
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) { /* (-1 with an error set is not possible: an exact int never sets one) */
        *neg = v < 0;
        *out = v < 0 ? (u128)(-(v + 1)) + 1 : (u128)v;
        return 1;
    }
    PyObject *mag = overflow < 0 ? PyNumber_Negative(o) : Py_NewRef(o);
    if (mag == NULL) {
        PyErr_Clear();
        return 0;
    }
    *neg = overflow < 0;
    unsigned char buf[16];
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t r = PyLong_AsNativeBytes(
        mag, buf, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER);
    Py_DECREF(mag);
    if (r < 0) {
        PyErr_Clear();
        return 0;
    }
    if (r > 16) return 0;
#else
    int bad = _PyLong_AsByteArray((PyLongObject *)mag, buf, 16, 1, 0) < 0;
    Py_DECREF(mag);
    if (bad) {
        PyErr_Clear();
        return 0;
    }
#endif
    u128 x = 0;
    for (int i = 15; i >= 0; i--) x = (x << 8) | buf[i];
    *out = x;
    return 1;
#endif
}

/* A non-negative exact int → *out; 0 if it is not one (or does not fit 128 bits). */
static int to_u128(PyObject *o, u128 *out) {
    int neg;
    return int_parts(o, out, &neg) && !neg;
}

static const char DIG2[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* The decimal digits of v (no leading zeros; "" for 0) written backwards ending at *end. */
static char *u64_back(char *end, uint64_t v) {
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        end -= 2;
        memcpy(end, DIG2 + 2 * r, 2);
    }
    if (v >= 10) {
        end -= 2;
        memcpy(end, DIG2 + 2 * v, 2);
    } else if (v) {
        *--end = (char)('0' + v);
    }
    return end;
}

/* Exactly k digits of v (zero-padded; v < 10**k) written backwards ending at *end. */
static char *u64_back_fixed(char *end, uint64_t v, int k) {
    for (; k >= 2; k -= 2) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        end -= 2;
        memcpy(end, DIG2 + 2 * r, 2);
    }
    if (k) *--end = (char)('0' + v % 10);
    return end;
}

/* The decimal digits of v (no leading zeros; "" for 0) written backwards ending at *end. */
static char *u128_back(char *end, u128 v) {
    while (v >> 64) {
        u128 q = v / POW10[19];
        end = u64_back_fixed(end, (uint64_t)(v - q * POW10[19]), 19);
        v = q;
    }
    return u64_back(end, (uint64_t)v);
}

/* Kraken's piece of one value: render(v, d) without "." and leading zeros, which is the
 * integer v * 10**(d - scale) in decimal ("" for 0).  Returns its length (written at out), or
 * -1 if v cannot be rendered exactly at d decimals (or is out of range). */
static int kraken_piece(char *out, u128 v, int d, int scale) {
    u128 x;
    if (d <= scale) {
        uint64_t drop = POW10[scale - d];
        if (v >> 64) {
            x = v / drop;
            if (v - x * drop) return -1; /* finer than the precision: Python raises */
        } else {
            uint64_t w = (uint64_t)v;
            if (w % drop) return -1;
            x = w / drop;
        }
    } else { /* zeros past the engine's scale */
        if (d - scale > MAX_SCALE) return -1;
        uint64_t up = POW10[d - scale];
        if (v > ~(u128)0 / up) return -1;
        x = v * up;
    }
    char buf[PIECE];
    char *end = buf + PIECE, *p = u128_back(end, x);
    int n = (int)(end - p);
    memcpy(out, p, (size_t)n);
    return n;
}

/* OKX's text of one value: its shortest decimal form ("5.16", "30316", "0.5", "0"). */
static int okx_piece(char *out, u128 v, int scale) {
    uint64_t one = POW10[scale], frac;
    u128 whole;
    if (v >> 64) {
        whole = v / one;
        frac = (uint64_t)(v - whole * one);
    } else {
        whole = (uint64_t)v / one;
        frac = (uint64_t)v % one;
    }
    char buf[PIECE];
    char *end = buf + PIECE, *p = end;
    if (frac) { /* its k significant decimals: the trailing zeros dropped, 8, 4, 2, 1 at a time */
        int k = scale;
        while (frac % 100000000u == 0) frac /= 100000000u, k -= 8;
        if (frac % 10000u == 0) frac /= 10000u, k -= 4;
        if (frac % 100u == 0) frac /= 100u, k -= 2;
        if (frac % 10u == 0) frac /= 10u, k -= 1;
        p = u64_back_fixed(p, frac, k);
        *--p = '.';
    }
    if (whole)
        p = u128_back(p, whole);
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
/* one level's text: Kraken price+qty digits, OKX "px:sz" */
#define TEXT (2 * PIECE + 1)

/* ------------------------------------------------------------------ CRCs of concatenations
 *
 * crc32(A || B) = x^(8 len B) * crc32(A) + crc32(B) mod P, in CRC32's reflected representation
 * (zlib's crc32_combine): so the text's CRC is a fold over its levels' own CRCs, each computed
 * once, when the level is rendered.  The product is a carry-less multiply (PCLMULQDQ where the
 * CPU has it, else by nibbles) reduced mod P by four table steps (the CRC of four zero bytes). */

#define X8N_MAX (TEXT + 2)
static uint32_t X8N[X8N_MAX]; /* x^(8n) mod P for the lengths of one level's text */

static uint64_t clmul_sw(uint32_t a, uint32_t b) {
    uint64_t t[16], r = 0;
    t[0] = 0;
    for (int i = 1; i < 16; i++) t[i] = (i & 1) ? t[i - 1] ^ b : t[i >> 1] << 1;
    for (int i = 28; i >= 0; i -= 4) r = (r << 4) ^ t[(a >> i) & 15];
    return r;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
__attribute__((target("pclmul,sse2"))) static uint64_t clmul_hw(uint32_t a, uint32_t b) {
    __m128i x = _mm_cvtsi32_si128((int)a), y = _mm_cvtsi32_si128((int)b);
    return (uint64_t)_mm_cvtsi128_si64(_mm_clmulepi64_si128(x, y, 0));
}
static int have_clmul(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("pclmul");
}
#else
static uint64_t clmul_hw(uint32_t a, uint32_t b) { return clmul_sw(a, b); }
static int have_clmul(void) { return 0; }
#endif

static int use_hw_clmul = 0;
static uint32_t COLON; /* crc32(":") */

/* a * b mod P (reflected 32-bit polynomials) */
static uint32_t multmodp(uint32_t a, uint32_t b, int hw) {
    uint64_t t = (hw ? clmul_hw(a, b) : clmul_sw(a, b)) << 1;
    uint32_t c = (uint32_t)t; /* its x^32..x^63 part, times x^32 mod P: */
    c = CRC[3][c & 0xFF] ^ CRC[2][(c >> 8) & 0xFF] ^ CRC[1][(c >> 16) & 0xFF] ^ CRC[0][c >> 24];
    return c ^ (uint32_t)(t >> 32);
}

/* crc32 of pieces 0..n (CRCs crc[i] of len[i] bytes each) after a text whose crc32 is c, with
 * the running crc32 after each piece into out[i]: one loop per multiply, so each inlines its
 * own (the hardware one compiled for PCLMULQDQ, called only where the CPU has it). */
#define FOLD(NAME, ATTR, CLMUL)                                                                 \
    ATTR static uint32_t NAME(uint32_t c, const uint32_t *crc, const unsigned char *len, int n, \
                              uint32_t *out) {                                                  \
        for (int i = 0; i < n; i++) {                                                           \
            uint64_t t = CLMUL(X8N[len[i]], c) << 1;                                            \
            uint32_t h = (uint32_t)t;                                                           \
            h = CRC[3][h & 0xFF] ^ CRC[2][(h >> 8) & 0xFF] ^ CRC[1][(h >> 16) & 0xFF] ^         \
                CRC[0][h >> 24];                                                                \
            out[i] = c = h ^ (uint32_t)(t >> 32) ^ crc[i];                                      \
        }                                                                                       \
        return c;                                                                               \
    }
FOLD(fold_sw, , clmul_sw)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
FOLD(fold_hw, __attribute__((target("pclmul,sse2"))), clmul_hw)
#else
#define fold_hw fold_sw
#endif

/* crc32(A || B) of crc1 = crc32(A), crc2 = crc32(B), B being len2 bytes (len2 < X8N_MAX) */
static uint32_t crc_combine(uint32_t crc1, uint32_t crc2, int len2, int hw) {
    return multmodp(X8N[len2], crc1, hw) ^ crc2;
}

/* crc32 of bytes (standard: initial and final xor) */
static uint32_t crc_of(const char *p, int n) {
    return crc_update(0xFFFFFFFFu, (const unsigned char *)p, (size_t)n) ^ 0xFFFFFFFFu;
}

static void combine_init(void) {
    use_hw_clmul = have_clmul();
    COLON = crc_of(":", 1);
    X8N[0] = 0x80000000u; /* x^0 */
    for (int i = 1; i < X8N_MAX; i++) X8N[i] = multmodp(X8N[i - 1], 0x00800000u /* x^8 */, 0);
}

typedef struct {
    PyObject *key;   /* the book's key object (bids: the price; asks: the negated price); NULL: free */
    PyObject *price; /* the price as the side's dict keys it */
    PyObject *qty;   /* the qty object the dict held when the text was rendered */
    u128 px;         /* the price's value */
    uint64_t stamp;  /* the memo's render count when this text was written */
    uint32_t crc;    /* crc32 of text */
    uint32_t crc_sep; /* OKX: crc32 of ":" + text (the level's piece after the first) */
    int len;
    char text[TEXT];
} Entry;

typedef struct {
    Entry *pool;                /* 2 * n entries: the top as it was and as it is always fit */
    unsigned char rank[MAX_N];  /* the pool index of each rank, best first */
    int count;
} Side;

/* A Memo (one per book, kept in the book's memo slot) keeps the last top's entries, each holding
 * references to its key and qty objects.  A level whose key and qty are the very objects an entry
 * holds has that entry's text (ints are immutable, and the references keep the objects alive, so
 * an identical object is an equal value): only levels that changed are rendered.  It also keeps,
 * for every position of the last checksum's text (the rule's order of the entries), which entry
 * text stood there and the running CRC after it: a new text is CRC'd from its first position that
 * differs.  It can never change a result; it is emptied whenever the rule, depth or precision
 * asked for changes, and whenever this code declines (then Python answers). */
typedef struct {
    PyObject_HEAD int kind;
    long n, pd, qd, scale;
    long long version; /* the book version the entries and crc are of (-1: none) */
    long crc;
    uint64_t renders;
    Side side[2];      /* 0: bids, 1: asks */
    int npos;
    unsigned char pos_side[2 * MAX_N], pos_idx[2 * MAX_N];
    uint64_t pos_stamp[2 * MAX_N];
    uint32_t pos_crc[2 * MAX_N];
} Memo;

static void entry_clear(Entry *e) {
    Py_CLEAR(e->key);
    Py_CLEAR(e->price);
    Py_CLEAR(e->qty);
}

/* Every entry released and the memo of no version (its configuration kept). */
static void memo_clear(Memo *m) {
    for (int s = 0; s < 2; s++) {
        if (m->side[s].pool != NULL)
            for (long i = 0; i < 2 * m->n; i++) entry_clear(&m->side[s].pool[i]);
        m->side[s].count = 0;
    }
    m->npos = 0;
    m->version = -1;
}

static void memo_free_pools(Memo *m) {
    memo_clear(m);
    for (int s = 0; s < 2; s++) {
        PyMem_Free(m->side[s].pool);
        m->side[s].pool = NULL;
    }
    m->kind = 0;
    m->n = 0;
}

static void Memo_dealloc(Memo *m) {
    memo_free_pools(m);
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

#define MAX_TOUCHED 64
typedef struct {
    int kind;
    long n;
    int pd, qd, scale;
    /* hinted: the book changed once since the memo's version, at these prices only */
    int hinted;
    int unchanged[2]; /* hinted, and that side's top is the memo's (see prepare) */
    int nt[2];
    u128 touched[2][MAX_TOUCHED];
    PyObject *tlevel[2][MAX_TOUCHED]; /* the (price, qty) each came in (borrowed from the hint) */
} Spec;

/* px is better than qx on side s (bids: higher; asks: lower): best-first order */
static inline int better(int s, u128 px, u128 qx) { return s ? px < qx : px > qx; }

/* The hint's last (price, qty) at px on side s (what the apply left there), or NULL; *cur is
 * a cursor into the side's touched prices (sorted best first), px never better than the last
 * asked. */
static PyObject *touched(const Spec *sp, int s, int *cur, u128 px) {
    int i = *cur, n = sp->nt[s];
    const u128 *t = sp->touched[s];
    while (i < n && better(s, t[i], px)) i++;
    *cur = i;
    return i < n && t[i] == px ? sp->tlevel[s][i] : NULL;
}

/* The prices of one side of a change ((price, qty) pairs) into sp, sorted best first, keeping
 * only those that could be a memo entry's (within its worst entry's price: only entries are
 * looked up in sp->touched); 0 if not understood. */
static int hint_side(Spec *sp, int s, PyObject *levels, const Side *sd) {
    if (!PyList_CheckExact(levels) && !PyTuple_CheckExact(levels)) return 0;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(levels);
    PyObject **items = PySequence_Fast_ITEMS(levels);
    u128 worst = sd->count ? sd->pool[sd->rank[sd->count - 1]].px : 0;
    int kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *lv = items[i];
        u128 px;
        if (!PyTuple_CheckExact(lv) || PyTuple_GET_SIZE(lv) != 2) return 0;
        if (!to_u128(PyTuple_GET_ITEM(lv, 0), &px)) return 0;
        if (sd->count == 0 || (s ? px > worst : px < worst)) continue;
        if (kept == MAX_TOUCHED) return 0;
        int j = kept++; /* insertion sort, best first, stable: a price set twice keeps its order */
        while (j > 0 && better(s, px, sp->touched[s][j - 1])) {
            sp->touched[s][j] = sp->touched[s][j - 1];
            sp->tlevel[s][j] = sp->tlevel[s][j - 1];
            j--;
        }
        sp->touched[s][j] = px;
        sp->tlevel[s][j] = lv;
    }
    int n2 = 0; /* of a price set more than once, the last setting (what the book holds) */
    for (int i = 0; i < kept; i++) {
        if (i + 1 < kept && sp->touched[s][i + 1] == sp->touched[s][i]) continue;
        sp->touched[s][n2] = sp->touched[s][i];
        sp->tlevel[s][n2++] = sp->tlevel[s][i];
    }
    sp->nt[s] = n2;
    return 1;
}

/* The text of one level (its price and qty objects) into e->text; 0 if declined. */
static int render_level(const Spec *sp, Entry *e, PyObject *price, PyObject *qty) {
    u128 px, q;
    if (!to_u128(price, &px) || !to_u128(qty, &q)) return 0;
    int k1, k2;
    char *t = e->text;
    if (sp->kind == KRAKEN) {
        if ((k1 = kraken_piece(t, px, sp->pd, sp->scale)) < 0) return 0;
        if ((k2 = kraken_piece(t + k1, q, sp->qd, sp->scale)) < 0) return 0;
        e->len = k1 + k2;
    } else {
        if ((k1 = okx_piece(t, px, sp->scale)) < 0) return 0;
        t[k1] = ':';
        if ((k2 = okx_piece(t + k1 + 1, q, sp->scale)) < 0) return 0;
        e->len = k1 + 1 + k2;
    }
    e->crc = crc_of(t, e->len);
    if (sp->kind == OKX) e->crc_sep = crc_combine(COLON, e->crc, e->len, use_hw_clmul);
    e->px = px;
    return 1;
}

/* The qty object the book holds at a touched level lv (the hint's (price, qty): Book.apply
 * stores the very object it was given), or NULL if it says the level is gone (then the book
 * is asked). */
static PyObject *hinted_qty(PyObject *lv) {
    PyObject *q = PyTuple_GET_ITEM(lv, 1);
    u128 v;
    return to_u128(q, &v) && v ? q : NULL;
}

/* Side s's memo entries made the best cnt levels of keys/dict, best first: an entry whose key
 * and qty objects are the level's is kept as it is (hinted and not touched: without looking the
 * level up), a kept level whose qty changed is rendered again in place, a new level gets a free
 * entry; entries that left the top are released.  Hinted, a touched level's price and qty are
 * the hint's objects (the book holds those), else the book's dict is asked.  0 if declined (the
 * caller empties the memo). */
static int walk(Memo *m, const Spec *sp, int s, PyObject *keys, PyObject *dict, Py_ssize_t cnt) {
    Side *sd = &m->side[s];
    Entry *pool = sd->pool;
    uint64_t busy = 0, used = 0; /* pool indexes of the old top, of the new one */
    for (int i = 0; i < sd->count; i++) busy |= (uint64_t)1 << sd->rank[i];
    unsigned char nr[MAX_N];
    Py_ssize_t len = PyList_GET_SIZE(keys);
    int o = 0, tc = 0; /* cursors: the old top (best first, as the new one is), the hint */
    for (Py_ssize_t i = 0; i < cnt; i++) {
        PyObject *k = PyList_GET_ITEM(keys, len - 1 - i);
        int j = -1;
        u128 px;
        if (o < sd->count && pool[sd->rank[o]].key == k) { /* the level the old top had next */
            j = sd->rank[o++];
            px = pool[j].px;
        } else { /* by price: old levels better than it are gone; an equal one is this level */
            int neg;
            if (!int_parts(k, &px, &neg) || (s ? !neg && px : neg)) return 0;
            while (o < sd->count && better(s, pool[sd->rank[o]].px, px)) o++;
            if (o < sd->count && pool[sd->rank[o]].px == px) {
                j = sd->rank[o++];
                Py_SETREF(pool[j].key, Py_NewRef(k)); /* the book's key object from now on */
            }
        }
        PyObject *lv = NULL, *q = NULL;
        if (sp->hinted) {
            lv = touched(sp, s, &tc, px);
            if (lv == NULL && j >= 0) { /* unchanged: as it was */
                nr[i] = (unsigned char)j;
                used |= (uint64_t)1 << j;
                continue;
            }
            if (lv != NULL) q = hinted_qty(lv);
        }
        PyObject *price; /* a new reference */
        if (j >= 0) {
            price = Py_NewRef(pool[j].price);
        } else if (q != NULL) {
            price = Py_NewRef(PyTuple_GET_ITEM(lv, 0));
        } else if (s) {
            if (!PyLong_CheckExact(k) || (price = PyNumber_Negative(k)) == NULL) {
                PyErr_Clear();
                return 0;
            }
        } else {
            price = Py_NewRef(k);
        }
        if (q == NULL && (q = PyDict_GetItemWithError(dict, price)) == NULL) { /* borrowed */
            PyErr_Clear();
            Py_DECREF(price);
            return 0;
        }
        if (j >= 0) { /* a level the memo holds: rendered again if its qty is another object */
            Py_DECREF(price);
            if (pool[j].qty != q) {
                if (!render_level(sp, &pool[j], pool[j].price, q)) return 0;
                Py_SETREF(pool[j].qty, Py_NewRef(q));
                pool[j].stamp = ++m->renders;
            }
        } else { /* a new level: the first entry neither top holds (2n entries always suffice) */
            j = __builtin_ctzll(~(busy | used));
            Entry *e = &pool[j];
            if (!render_level(sp, e, price, q)) {
                Py_DECREF(price);
                return 0;
            }
            e->key = Py_NewRef(k);
            e->price = price;
            e->qty = Py_NewRef(q);
            e->stamp = ++m->renders;
        }
        nr[i] = (unsigned char)j;
        used |= (uint64_t)1 << j;
    }
    for (int i = 0; i < sd->count; i++) /* the entries that left the top */
        if (!(used & ((uint64_t)1 << sd->rank[i]))) entry_clear(&pool[sd->rank[i]]);
    memcpy(sd->rank, nr, (size_t)cnt);
    sd->count = (int)cnt;
    return 1;
}

/* The memo made ready for sp (emptied, and its pools made, if it was for another rule, depth or
 * precision), and whether the hint (hb, ha) may be trusted: the memo is of the book's previous
 * version, so those levels (the one Book.apply since) are all that moved.  0 if declined. */
static int prepare(Memo *m, Spec *sp, long long version, PyObject *hb, PyObject *ha,
                   PyObject *const *lists) {
    sp->hinted = sp->unchanged[0] = sp->unchanged[1] = sp->nt[0] = sp->nt[1] = 0;
    if (m->kind != sp->kind || m->n != sp->n || m->pd != sp->pd || m->qd != sp->qd ||
        m->scale != sp->scale) {
        if (m->n != sp->n || m->side[0].pool == NULL) {
            memo_free_pools(m);
            for (int s = 0; s < 2 && sp->n > 0; s++) {
                m->side[s].pool = PyMem_Calloc((size_t)(2 * sp->n), sizeof(Entry));
                if (m->side[s].pool == NULL) {
                    memo_free_pools(m);
                    return 0;
                }
            }
        } else {
            memo_clear(m);
        }
        m->kind = sp->kind;
        m->n = sp->n;
        m->pd = sp->pd;
        m->qd = sp->qd;
        m->scale = sp->scale;
    }
    if (m->version >= 0 && version == m->version + 1 && hb != NULL && ha != NULL)
        sp->hinted = hint_side(sp, 0, hb, &m->side[0]) && hint_side(sp, 1, ha, &m->side[1]);
    /* A side no kept price of the change touched has the memo's top: with n entries, every
     * change was below its n-th level (and the side still has n levels: no truncation cut
     * into them); with fewer (the memo held the whole side), nothing was added either. */
    for (int s = 0; sp->hinted && s < 2; s++) {
        Py_ssize_t len = PyList_GET_SIZE(lists[2 * s]);
        int c = m->side[s].count;
        sp->unchanged[s] = sp->nt[s] == 0 && (c == sp->n ? len >= sp->n : len == c);
    }
    return 1;
}

/* The checksum text's positions in the rule's order, as (side, pool index); their number. */
static int text_order(const Memo *m, unsigned char *ps, unsigned char *pi) {
    const Side *b = &m->side[0], *a = &m->side[1];
    int np = 0;
    if (m->kind == KRAKEN) { /* asks lowest first, then bids highest first */
        for (int i = 0; i < a->count; i++, np++) ps[np] = 1, pi[np] = a->rank[i];
        for (int i = 0; i < b->count; i++, np++) ps[np] = 0, pi[np] = b->rank[i];
    } else { /* OKX: the bid, then the ask, of each row; the longer side goes on alone */
        int rows = b->count > a->count ? b->count : a->count;
        for (int r = 0; r < rows; r++) {
            if (r < b->count) ps[np] = 0, pi[np++] = b->rank[r];
            if (r < a->count) ps[np] = 1, pi[np++] = a->rank[r];
        }
    }
    return np;
}

/* The CRC of the memo's top as the rule writes it (OKX: ":" between positions): the fold of
 * its levels' CRCs, resumed from the CRC of the text before its first position that is not as
 * the last text had it. */
static uint32_t text_crc(Memo *m) {
    unsigned char ps[2 * MAX_N], pi[2 * MAX_N];
    int np = text_order(m, ps, pi), p = 0;
    while (p < np && p < m->npos && m->pos_side[p] == ps[p] && m->pos_idx[p] == pi[p] &&
           m->pos_stamp[p] == m->side[ps[p]].pool[pi[p]].stamp)
        p++;
    uint32_t c = p ? m->pos_crc[p - 1] : 0; /* crc32 of the text before p ("" is 0) */
    uint32_t piece[2 * MAX_N];
    unsigned char plen[2 * MAX_N];
    for (int q = p; q < np; q++) { /* each position's piece: its level's text (OKX: ":" first) */
        const Entry *e = &m->side[ps[q]].pool[pi[q]];
        int sep = m->kind == OKX && q;
        piece[q] = sep ? e->crc_sep : e->crc;
        plen[q] = (unsigned char)(e->len + sep);
        m->pos_side[q] = ps[q];
        m->pos_idx[q] = pi[q];
        m->pos_stamp[q] = e->stamp;
    }
    if (p < np) c = (use_hw_clmul ? fold_hw : fold_sw)(c, piece + p, plen + p, np - p, m->pos_crc + p);
    m->npos = np;
    return c;
}

/* The checksum of the book's lists (bk, bids, ak, asks) kept in memo m: a new int, Py_None
 * (a new reference) if declined, NULL on an error of our own (memory). */
static PyObject *compute(Memo *m, Spec *sp, long long version, PyObject *hb, PyObject *ha,
                         PyObject *const *lists) {
    if (!PyList_CheckExact(lists[0]) || !PyDict_CheckExact(lists[1]) ||
        !PyList_CheckExact(lists[2]) || !PyDict_CheckExact(lists[3]))
        Py_RETURN_NONE;
    if (!prepare(m, sp, version, hb, ha, lists)) Py_RETURN_NONE;
    if (m->version == version || (sp->unchanged[0] && sp->unchanged[1])) {
        m->version = version; /* the top is as it was */
        return PyLong_FromLong(m->crc);
    }
    for (int s = 0; s < 2; s++) {
        if (sp->unchanged[s]) continue;
        Py_ssize_t len = PyList_GET_SIZE(lists[2 * s]);
        if (!walk(m, sp, s, lists[2 * s], lists[2 * s + 1], len < sp->n ? len : sp->n)) {
            memo_clear(m);
            Py_RETURN_NONE;
        }
    }
    uint32_t c = text_crc(m);
    long crc = sp->kind == OKX && c >= 0x80000000u ? (long)c - 0x100000000L : (long)c;
    m->version = version;
    m->crc = crc;
    return PyLong_FromLong(crc);
}

static int small_int(PyObject *o, long lo, long hi, long *out) {
    if (!PyLong_CheckExact(o)) return 0;
#ifdef DIRECT_DIGITS
    if (Py_SIZE(o) == 0 || Py_SIZE(o) == 1) { /* 0 ≤ v < 2**30: its one digit */
        long v = Py_SIZE(o) ? (long)((PyLongObject *)o)->ob_digit[0] : 0;
        if (v < lo || v > hi) return 0;
        *out = v;
        return 1;
    }
#endif
    int overflow = 0;
    long v = PyLong_AsLongAndOverflow(o, &overflow);
    if (overflow || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int spec_init(Spec *sp, int kind, PyObject *n, PyObject *pd, PyObject *qd,
                     PyObject *scale) {
    long vn, vpd = 0, vqd = 0, vscale;
    if (!small_int(n, 0, MAX_N, &vn) || !small_int(scale, 0, MAX_SCALE, &vscale)) return 0;
    if (kind == KRAKEN &&
        (!small_int(pd, 0, MAX_DECIMALS, &vpd) || !small_int(qd, 0, MAX_DECIMALS, &vqd)))
        return 0;
    sp->kind = kind;
    sp->n = vn;
    sp->pd = (int)vpd;
    sp->qd = (int)vqd;
    sp->scale = (int)vscale;
    return 1;
}

/* The lists' checksum with memo (a Memo, or None: a memo for this call only). */
static PyObject *generic(Spec *sp, PyObject *memo, PyObject *version, PyObject *hb, PyObject *ha,
                         PyObject *const *lists) {
    int overflow = 0;
    long long v = PyLong_CheckExact(version) ? PyLong_AsLongLongAndOverflow(version, &overflow) : -1;
    if (overflow || v < 0) Py_RETURN_NONE;
    if (hb == Py_None || ha == Py_None) hb = ha = NULL;
    if (memo != Py_None) {
        if (!Py_IS_TYPE(memo, &MemoType)) Py_RETURN_NONE;
        return compute((Memo *)memo, sp, v, hb, ha, lists);
    }
    PyObject *tmp = Memo_new(&MemoType, NULL, NULL);
    if (tmp == NULL) return NULL;
    PyObject *r = compute((Memo *)tmp, sp, v, hb, ha, lists);
    Py_DECREF(tmp);
    return r;
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

/* A BookChecksum: the checksum of a Book as one rule computes it, called like the rule's Python
 * function and answering exactly what that function answers, which it calls whenever this code
 * declines (so Python's exceptions, ValueError among them, are the caller's to see):
 *   Kraken: checksum(book, price_decimals, qty_decimals[, bids, asks])
 *   OKX:    checksum(book[, bids, asks])
 * bids, asks: the levels the book's last Book.apply set (the diff just applied). */
typedef struct {
    PyObject_HEAD vectorcallfunc vectorcall;
    int kind;
    PyObject *n, *scale; /* the rule's depth and engine.num.SCALE, as ints */
    PyObject *fallback;
} Checksum;

static PyObject *checksum_fast(Checksum *ck, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t base = ck->kind == KRAKEN ? 3 : 1;
    if ((nargs != base && nargs != base + 2) || book_type == NULL ||
        !Py_IS_TYPE(args[0], book_type))
        Py_RETURN_NONE;
    Spec sp;
    if (!spec_init(&sp, ck->kind, ck->n, ck->kind == KRAKEN ? args[1] : NULL,
                   ck->kind == KRAKEN ? args[2] : NULL, ck->scale))
        Py_RETURN_NONE;
    PyObject *s[NSLOTS];
    for (int i = 0; i < NSLOTS; i++) {
        s[i] = *(PyObject **)((char *)args[0] + slot_offsets[i]);
        if (s[i] == NULL) Py_RETURN_NONE;
    }
    if (s[0] == Py_None) { /* the book's memo, kept in its slot from now on */
        PyObject *m = Memo_new(&MemoType, NULL, NULL);
        if (m == NULL) return NULL;
        Py_SETREF(*(PyObject **)((char *)args[0] + slot_offsets[0]), m);
        s[0] = m;
    }
    if (!Py_IS_TYPE(s[0], &MemoType)) Py_RETURN_NONE;
    int overflow = 0;
    long long v = PyLong_CheckExact(s[1]) ? PyLong_AsLongLongAndOverflow(s[1], &overflow) : -1;
    if (overflow || v < 0) Py_RETURN_NONE;
    PyObject *hb = nargs > base ? args[base] : NULL, *ha = nargs > base ? args[base + 1] : NULL;
    if (hb == Py_None || ha == Py_None) hb = ha = NULL;
    return compute((Memo *)s[0], &sp, v, hb, ha, s + 2);
}

static PyObject *Checksum_call(PyObject *self, PyObject *const *args, size_t nargsf,
                               PyObject *kwnames) {
    Checksum *ck = (Checksum *)self;
    if (kwnames == NULL || PyTuple_GET_SIZE(kwnames) == 0) {
        PyObject *r = checksum_fast(ck, args, PyVectorcall_NARGS(nargsf));
        if (r != Py_None) return r; /* the answer, or our own error */
        Py_DECREF(r);
    }
    return PyObject_Vectorcall(ck->fallback, args, nargsf, kwnames);
}

static PyObject *Checksum_new(PyTypeObject *t, PyObject *args, PyObject *kw) {
    const char *rule;
    PyObject *n, *scale, *fallback;
    static char *names[] = {"rule", "n", "scale", "fallback", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "sO!O!O:BookChecksum", names, &rule, &PyLong_Type,
                                     &n, &PyLong_Type, &scale, &fallback))
        return NULL;
    int kind = strcmp(rule, "kraken") == 0 ? KRAKEN : strcmp(rule, "okx") == 0 ? OKX : 0;
    if (kind == 0 || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_ValueError, "BookChecksum(rule 'kraken' or 'okx', n, scale, fallback)");
        return NULL;
    }
    Checksum *ck = (Checksum *)t->tp_alloc(t, 0);
    if (ck == NULL) return NULL;
    ck->vectorcall = Checksum_call;
    ck->kind = kind;
    ck->n = Py_NewRef(n);
    ck->scale = Py_NewRef(scale);
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
    Py_CLEAR(ck->n);
    Py_CLEAR(ck->scale);
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
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Checksum_new,
    .tp_dealloc = (destructor)Checksum_dealloc,
    .tp_traverse = (traverseproc)Checksum_traverse,
    .tp_clear = (inquiry)Checksum_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Checksum, vectorcall),
    .tp_members = Checksum_members,
    .tp_doc = "BookChecksum(rule, n, scale, fallback): a Book's checksum as the rule's Python "
              "function `fallback` computes it (Kraken: (book, pd, qd[, bids, asks]); OKX: "
              "(book[, bids, asks])), in C where it can, by `fallback` where it declines.",
};

/* crc32_combine(crc1, crc2, len2, hw) -> crc32(A + B): for the tests (hw: PCLMULQDQ if the CPU
 * has it; a len2 beyond one level's text raises ValueError) */
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
    if (c1 > 0xFFFFFFFFul || c2 > 0xFFFFFFFFul || len2 < 0 || len2 >= X8N_MAX) {
        PyErr_SetString(PyExc_ValueError, "crc32_combine: CRCs are 32-bit, len2 one level's text");
        return NULL;
    }
    return PyLong_FromUnsignedLong(
        crc_combine((uint32_t)c1, (uint32_t)c2, (int)len2, hw && use_hw_clmul));
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
    combine_init();
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
