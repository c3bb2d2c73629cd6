/* engine/_ckmemo.h: one book's memo of its rendered top, and the walk that keeps it, for
 * engine._cksum.
 *
 * Owns: the Memo type (one per book, in Book.memo), the Spec of one call (rule, depth,
 * precision, and the hint: the levels the book's last apply set), the two ways a memo's entries
 * are made the book's best n levels a side (patch(): the one rank a one-level change touched;
 * walk(): any change, rendering only levels whose key or qty objects changed), the checksum
 * text's order of positions for each rule (Kraken: asks then bids; OKX: bid/ask interleaved,
 * ":" between), and compute(): the CRC of that text, summed from the entries' own CRCs
 * (crc_of_pieces; Kraken's per side, kept).
 *
 * Must not: decide anything the Python rules decide beyond the text's order the rule's
 * docstring states (codecs/kraken_book.py, codecs/okx_checksum.py); change the book; raise on
 * book content (it declines: the caller's Python rule answers).
 */
#ifndef ENGINE_CKMEMO_H
#define ENGINE_CKMEMO_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_cknum.h"
#include "_crc32.h"

/* a decline (not what this code renders): laid out off the steady path */
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ------------------------------------------------------------------ the walk over a book's top */

#define KRAKEN 1
#define OKX 2
#define MAX_N 25
/* one level's text: Kraken price+qty digits, OKX "px:sz" */
#define TEXT (2 * PIECE + 1)
#if 2 * MAX_N * (TEXT + 1) >= CRC_TEXT_MAX || TEXT + 1 > 255
#error "a whole text (OKX's separators included) must be one crc_of_pieces takes, a level's length a byte"
#endif

static uint32_t COLON; /* crc32(":"): OKX's separator, the first byte of every OKX entry's text */

typedef struct { /* 64 bytes, and the pool aligned to 64: one cache line an entry */
    u128 px;         /* the price's value */
    PyObject *key;   /* the book's key object (bids: the price; asks: the negated price); NULL: free */
    PyObject *price; /* the price as the side's dict keys it */
    PyObject *qty;   /* the qty object the dict held when the text was rendered */
    uint32_t crc;    /* crc32 of its text (the text itself is not kept: only its CRC is read);
                      * OKX: of ":" + "px:sz", the level's piece after the first */
    int len;         /* the text's length */
    uint32_t pcrc;   /* crc32 of the price's part of the text (OKX: ":px:") */
    int plen;        /* its length: a new qty renders only the rest */
} Entry;
_Static_assert(sizeof(Entry) == 64, "an Entry is one cache line");

typedef struct {
    Entry *pool;                /* 2 * n entries: the top as it was and as it is always fit */
    void *mem;                  /* the pool's allocation (the pool is mem aligned to 64) */
    unsigned char rank[MAX_N];  /* the pool index of each rank, best first */
    int count;
    uint64_t held;              /* the pool indexes rank[0..count) hold, as bits */
    u128 worst;                 /* (count > 0) the px of the last rank: a hint's bound */
} Side;

/* A Memo (one per book, kept in the book's memo slot) keeps the last top's entries, each holding
 * references to its key and qty objects.  A level whose key and qty are the very objects an entry
 * holds has that entry's text (ints are immutable, and the references keep the objects alive, so
 * an identical object is an equal value): only levels that changed are rendered, and an entry
 * keeps only its text's CRC and length (the text's CRC is summed from them).  It can never
 * change a result; it is emptied whenever the rule, depth or precision
 * asked for changes, and whenever this code declines (then Python answers). */
typedef struct {
    PyObject_HEAD int kind;
    long n, pd, qd, scale;
    long long version; /* the book version the entries and crc are of (-1: none) */
    long crc;
    Side side[2];      /* 0: bids, 1: asks */
    uint32_t scrc[2];  /* Kraken: the CRC of each side's text (its levels', best first) */
    int slen[2];       /* and its length: the whole text's CRC is their combine */
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
        m->side[s].held = 0;
    }
    m->version = -1;
}

static void memo_free_pools(Memo *m) {
    memo_clear(m);
    for (int s = 0; s < 2; s++) {
        PyMem_Free(m->side[s].mem);
        m->side[s].pool = m->side[s].mem = NULL;
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
    if (n == 0) return 1; /* (sp->nt[s] is 0) */
    PyObject **items = PySequence_Fast_ITEMS(levels);
    u128 worst = sd->worst;
    if (n == 1) { /* the venues' usual change: one level */
        PyObject *lv = items[0];
        u128 px;
        if (UNLIKELY(!PyTuple_CheckExact(lv) || PyTuple_GET_SIZE(lv) != 2)) return 0;
        if (UNLIKELY(!to_u128(PyTuple_GET_ITEM(lv, 0), &px))) return 0;
        if (sd->count && !(s ? px > worst : px < worst)) {
            sp->touched[s][0] = px;
            sp->tlevel[s][0] = lv;
            sp->nt[s] = 1;
        }
        return 1;
    }
    if (sd->count == 0) return 1; /* no entry to look up */
    int kept = 0, sorted = 1;     /* sorted: each kept price worse than the one before */
    u128 *t = sp->touched[s];
    PyObject **tl = sp->tlevel[s];
    for (Py_ssize_t i = 0; i < n; i++) { /* the kept prices, in the hint's order */
        PyObject *lv = items[i];
        u128 px;
        if (UNLIKELY(!PyTuple_CheckExact(lv) || PyTuple_GET_SIZE(lv) != 2)) return 0;
        if (UNLIKELY(!to_u128(PyTuple_GET_ITEM(lv, 0), &px))) return 0;
        if (s ? px > worst : px < worst) continue;
        if (kept == MAX_TOUCHED) return 0;
        if (kept && !better(s, t[kept - 1], px)) sorted = 0;
        t[kept] = px;
        tl[kept++] = lv;
    }
    sp->nt[s] = kept;
    if (sorted) return 1; /* (the venues send a side best first: no price twice) */
    for (int i = 1; i < kept; i++) { /* insertion sort, best first, stable: a price set twice
                                      * keeps its order */
        u128 px = t[i];
        PyObject *lv = tl[i];
        int j = i;
        for (; j > 0 && better(s, px, t[j - 1]); j--) {
            t[j] = t[j - 1];
            tl[j] = tl[j - 1];
        }
        t[j] = px;
        tl[j] = lv;
    }
    int n2 = 0; /* of a price set more than once, the last setting (what the book holds) */
    for (int i = 0; i < kept; i++) {
        if (i + 1 < kept && t[i + 1] == t[i]) continue;
        t[n2] = t[i];
        tl[n2++] = tl[i];
    }
    sp->nt[s] = n2;
    return 1;
}

/* The price's part of a level's text (Kraken: its digits; OKX: ":", its text and ":") into e's
 * px, pcrc and plen; 0 if declined. */
static int render_price(const Spec *sp, Entry *e, PyObject *price) {
    u128 px;
    char t[PIECE + 2], *end = t + sizeof t, *p;
    if (!to_u128(price, &px)) return 0;
    if (sp->kind == KRAKEN) {
        if ((p = kraken_piece(end, px, sp->pd, sp->scale)) == NULL) return 0;
    } else {
        *--end = ':';
        p = okx_piece(end, px, sp->scale);
        *--p = ':';
        end++;
    }
    e->px = px;
    e->pcrc = crc_of(p, (int)(end - p));
    e->plen = (int)(end - p);
    return 1;
}

/* A level's text after its price part: the qty's, so e's crc and len are the whole text's; 0
 * if declined. */
static int render_qty(const Spec *sp, Entry *e, PyObject *qty) {
    u128 q;
    char t[PIECE], *end = t + sizeof t, *p;
    if (!to_u128(qty, &q)) return 0;
    p = sp->kind == KRAKEN ? kraken_piece(end, q, sp->qd, sp->scale) : okx_piece(end, q, sp->scale);
    if (p == NULL) return 0;
    int k = (int)(end - p);
    e->crc = crc_combine(e->pcrc, crc_of(p, k), k);
    e->len = e->plen + k;
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
/* (not inlined: the steady case, patch(), keeps its code together without it) */
__attribute__((noinline)) static int walk(Memo *m, const Spec *sp, int s, PyObject *keys,
                                          PyObject *dict, Py_ssize_t cnt) {
    Side *sd = &m->side[s];
    Entry *pool = sd->pool;
    uint64_t busy = sd->held, used = 0; /* pool indexes of the old top, of the new one */
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
            /* (a level before the next touched price is not touched: no search) */
            if (j < 0 || (tc < sp->nt[s] && !better(s, px, sp->touched[s][tc])))
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
                if (!render_qty(sp, &pool[j], q)) return 0; /* (its price as it was) */
                Py_SETREF(pool[j].qty, Py_NewRef(q));
            }
        } else { /* a new level: the first entry neither top holds (2n entries always suffice) */
            j = __builtin_ctzll(~(busy | used));
            Entry *e = &pool[j];
            if (!render_price(sp, e, price) || !render_qty(sp, e, q)) {
                Py_DECREF(price);
                return 0;
            }
            e->key = Py_NewRef(k);
            e->price = price;
            e->qty = Py_NewRef(q);
        }
        nr[i] = (unsigned char)j;
        used |= (uint64_t)1 << j;
    }
    for (uint64_t gone = busy & ~used; gone; gone &= gone - 1) /* the entries that left the top */
        entry_clear(&pool[__builtin_ctzll(gone)]);
    memcpy(sd->rank, nr, (size_t)cnt);
    sd->count = (int)cnt;
    sd->held = used;
    return 1;
}

/* A free pool entry of side sd: one no rank holds. */
static Entry *free_entry(Side *sd, int *j) {
    *j = __builtin_ctzll(~sd->held);
    return &sd->pool[*j];
}

/* The key object at rank i (best first) of a side's sorted keys (best last). */
#define RANK_KEY(items, len, i) ((items)[(len) - 1 - (i)])

/* Side s's memo made the book's top where the hint touched exactly one price of it: that
 * level's qty changed (rendered again in place), it left (the ranks below move up, and the
 * book's next level joins at the end), or it is new (inserted at its rank, the last one
 * dropped if the top was full).  Before anything changes, the book's sorted keys are checked
 * at the ranks that moved: they must be the memo's level objects there (and, for a new level,
 * the hint's price), else this is not that case.  1 if done, 0 if declined (the caller empties
 * the memo), -1 if not this case (nothing changed: the caller walks the side). */
static int patch(Memo *m, const Spec *sp, int s, PyObject *keys, PyObject *dict) {
    Side *sd = &m->side[s];
    if (sp->nt[s] != 1) return -1;
    Entry *pool = sd->pool;
    PyObject *lv = sp->tlevel[s][0];
    u128 t = sp->touched[s][0];
    PyObject *const *items = ((PyListObject *)keys)->ob_item;
    Py_ssize_t len = PyList_GET_SIZE(keys);
    int c = sd->count, n = (int)sp->n, cnt = len < n ? (int)len : n, r = 0;
    while (r < c && better(s, pool[sd->rank[r]].px, t)) r++;
    PyObject *q = hinted_qty(lv); /* NULL: the level is gone */
    if (r < c && pool[sd->rank[r]].px == t) {
        Entry *e = &pool[sd->rank[r]];
        if (q != NULL) { /* its qty changed: the ranks are as they were */
            if (cnt != c || RANK_KEY(items, len, r) != e->key) return -1;
            if (e->qty != q) {
                if (!render_qty(sp, e, q)) return 0;
                Py_SETREF(e->qty, Py_NewRef(q));
            }
            return 1;
        }
        /* it left: rank r + 1 moves to r, ..., and the book's level at rank c - 1 (if it has
         * one more) joins */
        if (cnt != c && cnt != c - 1) return -1;
        if (r + 1 < c && (RANK_KEY(items, len, r) != pool[sd->rank[r + 1]].key ||
                          RANK_KEY(items, len, c - 2) != pool[sd->rank[c - 1]].key))
            return -1;
        PyObject *k = NULL;
        if (cnt == c) { /* the joining level: worse than every one kept */
            int neg;
            u128 kx;
            k = RANK_KEY(items, len, c - 1);
            if (!int_parts(k, &kx, &neg) || (s ? !neg && kx : neg)) return 0;
            if (c > 1 && !better(s, pool[sd->rank[c - 1]].px, kx)) return -1;
        }
        entry_clear(e);
        sd->held &= ~((uint64_t)1 << sd->rank[r]);
        memmove(&sd->rank[r], &sd->rank[r + 1], (size_t)(c - r - 1));
        sd->count = --c;
        if (k == NULL) return 1;
        PyObject *price; /* a new reference: the price as the dict keys it */
        if (!s) {
            price = Py_NewRef(k);
        } else if ((price = PyNumber_Negative(k)) == NULL) {
            PyErr_Clear();
            return 0;
        }
        PyObject *kq = PyDict_GetItemWithError(dict, price); /* borrowed */
        int j;
        Entry *f = free_entry(sd, &j);
        f->price = price;
        f->key = Py_NewRef(k);
        if (kq == NULL) {
            PyErr_Clear();
            return 0;
        }
        f->qty = Py_NewRef(kq);
        if (!render_price(sp, f, price) || !render_qty(sp, f, kq)) return 0;
        sd->rank[c] = (unsigned char)j;
        sd->held |= (uint64_t)1 << j;
        sd->count = c + 1;
        return 1;
    }
    /* a new level at rank r: the one at rank n - 1 drops out if the top was full */
    if (q == NULL || !(cnt == c + 1 || (cnt == c && c == n && r < c))) return -1;
    PyObject *k = RANK_KEY(items, len, r);
    u128 kx;
    int neg;
    if (!int_parts(k, &kx, &neg) || kx != t || (s ? !neg : neg)) return -1;
    if (r < c && r + 1 < len && RANK_KEY(items, len, r + 1) != pool[sd->rank[r]].key) return -1;
    if (cnt == c) { /* the last level leaves */
        entry_clear(&pool[sd->rank[c - 1]]);
        sd->held &= ~((uint64_t)1 << sd->rank[c - 1]);
        sd->count = --c;
    }
    int j;
    Entry *f = free_entry(sd, &j);
    memmove(&sd->rank[r + 1], &sd->rank[r], (size_t)(c - r));
    sd->rank[r] = (unsigned char)j;
    sd->held |= (uint64_t)1 << j;
    sd->count = c + 1;
    f->price = Py_NewRef(PyTuple_GET_ITEM(lv, 0));
    f->key = Py_NewRef(k);
    f->qty = Py_NewRef(q);
    return render_price(sp, f, f->price) && render_qty(sp, f, q);
}

/* The memo made ready for sp (emptied, and its pools made, if it was for another rule, depth or
 * precision), and whether the hint (hb, ha) may be trusted: the memo is of the book's previous
 * version, so those levels (the one Book.apply since) are all that moved.  0 if declined. */
static int prepare(Memo *m, Spec *sp, long long version, PyObject *hb, PyObject *ha,
                   PyObject *const *lists) {
    sp->hinted = sp->unchanged[0] = sp->unchanged[1] = sp->nt[0] = sp->nt[1] = 0;
    if (UNLIKELY(m->kind != sp->kind || m->n != sp->n || m->pd != sp->pd || m->qd != sp->qd ||
                 m->scale != sp->scale)) {
        if (m->n != sp->n || m->side[0].pool == NULL) {
            memo_free_pools(m);
            for (int s = 0; s < 2 && sp->n > 0; s++) {
                void *mem = PyMem_Calloc((size_t)(2 * sp->n + 1), sizeof(Entry));
                m->side[s].mem = mem;
                m->side[s].pool = (Entry *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
                if (mem == NULL) {
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

/* The CRC of side sd's levels' texts, best first, concatenated; *len their length. */
static uint32_t side_crc(const Side *sd, int *len) {
    uint32_t piece[MAX_N];
    unsigned char plen[MAX_N];
    int total = 0;
    for (int i = 0; i < sd->count; i++) {
        const Entry *e = &sd->pool[sd->rank[i]];
        piece[i] = e->crc;
        plen[i] = (unsigned char)e->len;
        total += e->len;
    }
    *len = total;
    return crc_of_pieces(piece, plen, sd->count);
}

/* The CRC of the memo's top as the rule writes it, from its levels' own CRCs.  Kraken: asks
 * lowest first, then bids highest first, the combine of the sides' CRCs, each side's kept in
 * the memo and summed again only where walked[s] (patched or walked).  OKX: the bid, then the
 * ask, of each row (the longer side goes on alone), ":" between positions. */
static uint32_t text_crc(Memo *m, const int *walked) {
    const Side *b = &m->side[0], *a = &m->side[1];
    if (m->kind == KRAKEN) {
        for (int s = 0; s < 2; s++)
            if (walked[s]) m->scrc[s] = side_crc(&m->side[s], &m->slen[s]);
        return crc_combine(m->scrc[1], m->scrc[0], m->slen[0]);
    }
    uint32_t piece[2 * MAX_N];
    unsigned char plen[2 * MAX_N];
    int np = 0, total = 0, rows = b->count > a->count ? b->count : a->count;
    for (int r = 0; r < rows; r++)
        for (int s = 0; s < 2; s++) {
            const Side *sd = &m->side[s];
            if (r >= sd->count) continue;
            const Entry *e = &sd->pool[sd->rank[r]];
            piece[np] = e->crc;
            plen[np++] = (unsigned char)e->len;
            total += e->len;
        }
    if (np == 0) return 0; /* crc32 of "" */
    /* every piece begins with ":", the text with its first level: crc32(":" + T) is
     * x^(8 len T) crc32(":") + crc32(T), so crc32(T) is that sum again (+ is xor) */
    return crc_combine(COLON, crc_of_pieces(piece, plen, np), total - 1);
}

/* The checksum of the book's lists (bk, bids, ak, asks) kept in memo m into *crc: 1, or 0 if
 * declined (Python answers). */
static int compute(Memo *m, Spec *sp, long long version, PyObject *hb, PyObject *ha,
                   PyObject *const *lists, long *crc) {
    if (UNLIKELY(!PyList_CheckExact(lists[0]) || !PyDict_CheckExact(lists[1]) ||
                 !PyList_CheckExact(lists[2]) || !PyDict_CheckExact(lists[3])))
        return 0;
    if (UNLIKELY(!prepare(m, sp, version, hb, ha, lists))) return 0;
    if (m->version == version || (sp->unchanged[0] && sp->unchanged[1])) {
        m->version = version; /* the top is as it was */
        *crc = m->crc;
        return 1;
    }
    int walked[2] = {0, 0};
    for (int s = 0; s < 2; s++) {
        if (sp->unchanged[s]) continue;
        Py_ssize_t len = PyList_GET_SIZE(lists[2 * s]);
        PyObject *keys = lists[2 * s], *dict = lists[2 * s + 1];
        int done = sp->hinted ? patch(m, sp, s, keys, dict) : -1;
        Py_ssize_t cnt = len < sp->n ? len : sp->n;
        if (UNLIKELY(done == 0 || (done < 0 && !walk(m, sp, s, keys, dict, cnt)))) {
            memo_clear(m);
            return 0;
        }
        Side *sd = &m->side[s];
        sd->worst = sd->count ? sd->pool[sd->rank[sd->count - 1]].px : 0;
        walked[s] = 1;
    }
    uint32_t c = text_crc(m, walked);
    m->version = version;
    m->crc = sp->kind == OKX && c >= 0x80000000u ? (long)c - 0x100000000L : (long)c;
    *crc = m->crc;
    return 1;
}


/* sp for rule kind at depth n and scale (already read) and, for Kraken, the precision pd, qd
 * (ints); 0 if any is out of what this code renders. */
static int spec_set(Spec *sp, int kind, long n, long scale, PyObject *pd, PyObject *qd) {
    long vpd = 0, vqd = 0;
    if (n < 0 || n > MAX_N || scale < 0 || scale > MAX_SCALE) return 0;
    if (kind == KRAKEN &&
        (!small_int(pd, 0, MAX_DECIMALS, &vpd) || !small_int(qd, 0, MAX_DECIMALS, &vqd)))
        return 0;
    sp->kind = kind;
    sp->n = n;
    sp->pd = (int)vpd;
    sp->qd = (int)vqd;
    sp->scale = (int)scale;
    return 1;
}

/* spec_set with the depth and scale given as ints */
static int spec_init(Spec *sp, int kind, PyObject *n, PyObject *pd, PyObject *qd,
                     PyObject *scale) {
    long vn, vscale;
    return small_int(n, 0, MAX_N, &vn) && small_int(scale, 0, MAX_SCALE, &vscale) &&
           spec_set(sp, kind, vn, vscale, pd, qd);
}

#endif
