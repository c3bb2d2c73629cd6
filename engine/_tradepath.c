/* engine._tradepath: an optional C fast path for the fused trade stage (engine/tradefan.py).
 *
 * Owns: the *common case* of one trade through the selection rule
 * (engine.trades.select_trade) and three trade consumers whose per-trade work
 * is plain accumulation: TradeAggregator (trade inside the current bucket),
 * TradeTape (append), Candles (trade inside every open candle) and the
 * AnomalyDetector when nothing fires (no alert, no new volume interval, no
 * new or stale stream, no scan due).  Anything else is declined and the
 * Python code, which stays the definition, does it:
 *
 *   run(spec, ev, sel, records) -> int
 *     -1   the selection itself was not the common case (no exchange time,
 *          first trade of a symbol, other kind, duplicate id, a value outside
 *          int64): nothing was touched; the caller runs select_trade and
 *          every on_trade in Python.
 *     >=0  the trade was selected (sel.hi updated exactly as select_trade
 *          would); bit k set means member k was declined (or is not a C
 *          member) and its on_trade must still run in Python, with nothing
 *          of that member touched here.  Members handled here never have
 *          outputs in the common case, so the caller's member order of
 *          outputs is kept.
 *
 * A member is checked completely before any of its state is written, so a
 * decline never leaves a half-applied trade.  Every object read by slot
 * offset is first checked to be exactly the class the offsets came from
 * (configure()), so a wrong argument can never read outside an object.
 * Sums use Python integer arithmetic (exact, any size); int64 is only
 * required of times, ids and (for the anomaly detector) prices, quantities
 * and its running sums, which the codecs bound to int64 anyway; products are
 * compared in 128 bits.  A value outside int64 is a decline, never an error.
 *
 * runner(spec, records, resume, other) wraps run() as the pipeline's stage: a C callable that
 * looks the trade's symbol up in the fan's records and, when C applies every member,
 * returns () without entering Python; anything else goes to resume(ev, code).
 *
 * tests/test_tradefan.py compares the fused stage with and without this module
 * against the one-by-one Python fold, and checks that it is actually taken.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

/* --------------------------------------------------------------- classes and slot offsets */

enum { C_TRADE, C_SEL, C_AGG, C_TAPE, C_CANDLES, C_SERIES, C_ASTATE, C_WATCH, N_CLASSES };
static const char *CLASS_NAMES[N_CLASSES] = {
    "Trade",         "TradeSelect",  "SymbolTrades",  "SymbolTape",
    "SymbolCandles", "CandleSeries", "AnomalyState", "SymbolWatch"};
static PyTypeObject *classes[N_CLASSES];

typedef struct {
    int cls;
    const char *name;
    Py_ssize_t off;
} Field;

enum {
    /* Trade */
    T_PRICE, T_QTY, T_SIDE, T_EXCH, T_TXN, T_FIRST, T_LAST, T_AGG,
    /* TradeSelect */
    S_AGG, S_HI,
    /* SymbolTrades */
    A_LAST_MS, A_LAST_PRICE, A_CUR_START, A_CUR_COUNT, A_CUR_VOLUME, A_CUR_BUY, A_CUR_NOTIONAL,
    /* SymbolTape */
    P_RECENT,
    /* SymbolCandles */
    K_SERIES, K_BROKEN,
    /* CandleSeries */
    R_LENGTH, R_START, R_HIGH, R_LOW, R_CLOSE, R_VOLUME, R_BUY, R_TRADES, R_LAST_ID,
    /* AnomalyState */
    N_NOW, N_NEXT_CHECK,
    /* SymbolWatch */
    W_LAST_MS, W_LAST_PRICE, W_CUR_END, W_CUR_VOL, W_VOL_THR, W_RECENT, W_RECENT_SUM, W_SEEN,
    W_STALE, T_RECV, T_SYMBOL,
    N_FIELDS
};

static Field fields[N_FIELDS] = {
    {C_TRADE, "price"},          {C_TRADE, "qty"},         {C_TRADE, "side"},
    {C_TRADE, "exch_ms"},        {C_TRADE, "txn_ms"},      {C_TRADE, "first_id"},
    {C_TRADE, "last_id"},        {C_TRADE, "agg"},         {C_SEL, "agg"},
    {C_SEL, "hi"},               {C_AGG, "last_ms"},       {C_AGG, "last_price"},
    {C_AGG, "cur_start"},        {C_AGG, "cur_count"},     {C_AGG, "cur_volume"},
    {C_AGG, "cur_buy"},          {C_AGG, "cur_notional"},  {C_TAPE, "recent"},
    {C_CANDLES, "series"},       {C_CANDLES, "broken"},    {C_SERIES, "length"},
    {C_SERIES, "start"},         {C_SERIES, "high"},       {C_SERIES, "low"},
    {C_SERIES, "close"},         {C_SERIES, "volume"},     {C_SERIES, "buy"},
    {C_SERIES, "trades"},        {C_SERIES, "last_id"},    {C_ASTATE, "now"},
    {C_ASTATE, "next_check"},    {C_WATCH, "last_ms"},     {C_WATCH, "last_price"},
    {C_WATCH, "cur_end"},        {C_WATCH, "cur_vol"},     {C_WATCH, "vol_thr"},
    {C_WATCH, "recent"},         {C_WATCH, "recent_sum"},  {C_WATCH, "seen"},
    {C_WATCH, "stale"},          {C_TRADE, "recv_ns"},     {C_TRADE, "symbol"},
};

static int configured = 0;
static PyObject *BUY = NULL;        /* "buy" */
static PyObject *STR_APPEND = NULL; /* "append" */
static PyObject *STR_POPLEFT = NULL; /* "popleft" */
static PyObject *KIND_AGG = NULL;   /* "aggTrade": the stream kind of an aggTrade */
static PyObject *KIND_TRADE = NULL; /* "trade" */

#define GET(obj, f) (*(PyObject **)((char *)(obj) + fields[f].off)) /* borrowed, may be NULL */

/* Replace a slot's value (steals ``v``; NULL v: error already set). */
static int put(PyObject *obj, int f, PyObject *v) {
    if (v == NULL)
        return -1;
    PyObject **addr = (PyObject **)((char *)obj + fields[f].off);
    PyObject *old = *addr;
    *addr = v;
    Py_XDECREF(old);
    return 0;
}

/* slot += v (Python int addition). */
static int add(PyObject *obj, int f, PyObject *v) {
    PyObject *cur = GET(obj, f);
    if (cur == NULL) {
        PyErr_Format(PyExc_AttributeError, "slot %s is unset", fields[f].name);
        return -1;
    }
    return put(obj, f, PyNumber_Add(cur, v));
}

/* An exact int that fits int64 -> 1 and *out; anything else -> 0 (no error set). */
static int i64(PyObject *o, int64_t *out) {
    if (o == NULL || !PyLong_CheckExact(o))
        return 0;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return 1;
}

/* --------------------------------------------------------------- the spec of one fan */

enum { M_PY = 0, M_AGG = 1, M_TAPE = 2, M_CANDLES = 3, M_ANOMALY = 4 };

/* AnomalyDetector's trade thresholds (0 / -1: that check is off) */
typedef struct {
    int stale, volume;      /* stale-stream bookkeeping on; volume intervals on */
    __int128 big;           /* large_notional * ONE, 0 = off */
    int64_t k100, window;   /* 100 * large_window and large_window, 0 = off */
    int64_t ratio;          /* large_ratio_pct */
    int64_t bps;            /* price_jump_bps, -1 = off */
} Watch;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    int kind[32];
    int64_t bucket_ms[32]; /* M_AGG only */
    Watch watch[32];       /* M_ANOMALY only */
} Spec;

static PyTypeObject SpecType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engine._tradepath.Spec",
    .tp_basicsize = sizeof(Spec),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What each member of a fan is: ('agg', bucket_ms) | ('tape',) | ('candles',) | "
              "('anomaly', stale, volume, big_hi, big_lo, k100, window, ratio, bps) | None",
};

/* ('anomaly', stale, volume, big_hi, big_lo, k100, window, ratio, bps) -> 1 and *w, else 0
 * (big = big_hi * 2**62 + big_lo, both in [0, 2**62)) */
static int watch_spec(PyObject *m, Watch *w) {
    int64_t v[8];
    for (int i = 0; i < 8; i++)
        if (!i64(PyTuple_GET_ITEM(m, i + 1), &v[i]))
            return 0;
    if (v[2] < 0 || v[2] >= ((int64_t)1 << 62) || v[3] < 0 || v[4] < 0 || v[5] < 0 ||
        v[6] < 0 || v[6] > 1000000000 || v[7] < -1 || v[4] > 1000000000000)
        return 0;
    w->stale = v[0] != 0;
    w->volume = v[1] != 0;
    if (v[3] >= ((int64_t)1 << 62))
        return 0;
    w->big = ((__int128)v[2] << 62) | (__int128)v[3];
    w->k100 = v[4];
    w->window = v[5];
    w->ratio = v[6];
    w->bps = v[7];
    return 1;
}

/* spec(members: tuple) -> Spec; a member is None (Python only) or a tuple as in tp_doc. */
static PyObject *spec(PyObject *self, PyObject *members) {
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "engine._tradepath.configure() was not called");
        return NULL;
    }
    if (!PyTuple_Check(members) || PyTuple_GET_SIZE(members) > 32) {
        PyErr_SetString(PyExc_TypeError, "spec() takes a tuple of at most 32 members");
        return NULL;
    }
    Spec *s = PyObject_New(Spec, &SpecType);
    if (s == NULL)
        return NULL;
    s->n = PyTuple_GET_SIZE(members);
    for (Py_ssize_t k = 0; k < s->n; k++) {
        PyObject *m = PyTuple_GET_ITEM(members, k);
        s->kind[k] = M_PY;
        s->bucket_ms[k] = 0;
        if (m == Py_None)
            continue;
        PyObject *name = PyTuple_Check(m) && PyTuple_GET_SIZE(m) ? PyTuple_GET_ITEM(m, 0) : NULL;
        if (name && PyUnicode_Check(name) && !PyUnicode_CompareWithASCIIString(name, "agg") &&
            PyTuple_GET_SIZE(m) == 2 && i64(PyTuple_GET_ITEM(m, 1), &s->bucket_ms[k]) &&
            s->bucket_ms[k] > 0)
            s->kind[k] = M_AGG;
        else if (name && PyUnicode_Check(name) && !PyUnicode_CompareWithASCIIString(name, "tape"))
            s->kind[k] = M_TAPE;
        else if (name && PyUnicode_Check(name) &&
                 !PyUnicode_CompareWithASCIIString(name, "candles"))
            s->kind[k] = M_CANDLES;
        else if (name && PyUnicode_Check(name) &&
                 !PyUnicode_CompareWithASCIIString(name, "anomaly") && PyTuple_GET_SIZE(m) == 9 &&
                 watch_spec(m, &s->watch[k]))
            s->kind[k] = M_ANOMALY;
        else {
            Py_DECREF(s);
            PyErr_Format(PyExc_ValueError, "unknown fan member %R", m);
            return NULL;
        }
    }
    return (PyObject *)s;
}

/* --------------------------------------------------------------- members */

/* The aggregator: -1 error, 0 declined (untouched), 1 applied. */
static int agg_member(PyObject *rec, int64_t bucket, PyObject *ev, PyObject *t_obj, int64_t t,
                      PyObject *n, int is_buy) {
    if (!Py_IS_TYPE(rec, classes[C_AGG]))
        return 0;
    int64_t last, start;
    if (!i64(GET(rec, A_LAST_MS), &last) || !i64(GET(rec, A_CUR_START), &start))
        return 0;
    int64_t tc = t < last ? last : t;
    if (start < 0 || start % bucket || tc < start || tc - start >= bucket)
        return 0; /* a new bucket: _roll, in Python */
    PyObject *p = GET(ev, T_PRICE), *q = GET(ev, T_QTY);
    if (!GET(rec, A_CUR_COUNT) || !GET(rec, A_CUR_VOLUME) || !GET(rec, A_CUR_NOTIONAL) ||
        !GET(rec, A_CUR_BUY) || !GET(rec, A_LAST_PRICE))
        return 0;
    if (t >= last && put(rec, A_LAST_MS, Py_NewRef(t_obj)) < 0)
        return -1;
    if (put(rec, A_LAST_PRICE, Py_NewRef(p)) < 0 || add(rec, A_CUR_COUNT, n) < 0 ||
        add(rec, A_CUR_VOLUME, q) < 0)
        return -1;
    PyObject *pq = PyNumber_Multiply(p, q);
    if (pq == NULL)
        return -1;
    int r = add(rec, A_CUR_NOTIONAL, pq);
    Py_DECREF(pq);
    if (r < 0 || (is_buy && add(rec, A_CUR_BUY, q) < 0))
        return -1;
    return 1;
}

/* The tape: always applied (-1 error, 1 applied). */
static int tape_member(PyObject *rec, PyObject *ev, PyObject *t_obj, PyObject *n) {
    if (!Py_IS_TYPE(rec, classes[C_TAPE]) || GET(rec, P_RECENT) == NULL)
        return 0;
    PyObject *item = PyTuple_Pack(5, t_obj, GET(ev, T_PRICE), GET(ev, T_QTY), GET(ev, T_SIDE), n);
    if (item == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodOneArg(GET(rec, P_RECENT), STR_APPEND, item);
    Py_DECREF(item);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 1;
}

/* The candles: applied only when the trade lies inside every open candle. */
static int candles_member(PyObject *rec, PyObject *ev, int64_t t, PyObject *n, int is_buy) {
    if (!Py_IS_TYPE(rec, classes[C_CANDLES]) || GET(rec, K_BROKEN) != Py_False)
        return 0;
    PyObject *series = GET(rec, K_SERIES);
    if (series == NULL || !PyList_CheckExact(series))
        return 0;
    Py_ssize_t ns = PyList_GET_SIZE(series);
    for (Py_ssize_t i = 0; i < ns; i++) { /* check every series before touching any */
        PyObject *ser = PyList_GET_ITEM(series, i);
        int64_t start, length;
        if (!Py_IS_TYPE(ser, classes[C_SERIES]) || !i64(GET(ser, R_START), &start) ||
            !i64(GET(ser, R_LENGTH), &length))
            return 0;
        if (start < 0 || t < start || t - start >= length)
            return 0; /* closes a candle, or late: Python */
        if (!GET(ser, R_HIGH) || !GET(ser, R_LOW) || !GET(ser, R_VOLUME) || !GET(ser, R_BUY) ||
            !GET(ser, R_TRADES))
            return 0;
    }
    PyObject *p = GET(ev, T_PRICE), *q = GET(ev, T_QTY), *last_id = GET(ev, T_LAST);
    for (Py_ssize_t i = 0; i < ns; i++) {
        PyObject *ser = PyList_GET_ITEM(series, i);
        int gt = PyObject_RichCompareBool(p, GET(ser, R_HIGH), Py_GT);
        if (gt < 0)
            return -1;
        if (gt) {
            if (put(ser, R_HIGH, Py_NewRef(p)) < 0)
                return -1;
        } else {
            int lt = PyObject_RichCompareBool(p, GET(ser, R_LOW), Py_LT);
            if (lt < 0 || (lt && put(ser, R_LOW, Py_NewRef(p)) < 0))
                return -1;
        }
        if (put(ser, R_CLOSE, Py_NewRef(p)) < 0 || add(ser, R_VOLUME, q) < 0 ||
            (is_buy && add(ser, R_BUY, q) < 0) || add(ser, R_TRADES, n) < 0 ||
            put(ser, R_LAST_ID, Py_NewRef(last_id)) < 0)
            return -1;
    }
    return 1;
}

/* The anomaly detector (record: the pair (AnomalyState, SymbolWatch)): applied only when
 * no alert fires, no volume interval rolls, no stream is new or stale and no scan is due. */
static int anomaly_member(PyObject *pair, const Watch *w, PyObject *ev, PyObject *t_obj,
                          int64_t t) {
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2)
        return 0;
    PyObject *st = PyTuple_GET_ITEM(pair, 0), *s = PyTuple_GET_ITEM(pair, 1);
    if (!Py_IS_TYPE(st, classes[C_ASTATE]) || !Py_IS_TYPE(s, classes[C_WATCH]))
        return 0;
    int64_t recv, now, next, tc, end, cur, thr, p, q, pp;
    PyObject *recv_obj = GET(ev, T_RECV), *now_obj = GET(st, N_NOW);
    if (!i64(recv_obj, &recv) || !i64(now_obj, &now) || !i64(GET(st, N_NEXT_CHECK), &next) ||
        !i64(GET(s, W_LAST_MS), &tc) || !i64(GET(s, W_CUR_END), &end) ||
        !i64(GET(s, W_CUR_VOL), &cur) || !i64(GET(s, W_VOL_THR), &thr) ||
        !i64(GET(ev, T_PRICE), &p) || !i64(GET(ev, T_QTY), &q) ||
        !i64(GET(s, W_LAST_PRICE), &pp))
        return 0;
    int newer = recv > now;
    if (newer)
        now = recv;
    PyObject *kind = GET(ev, T_AGG) == Py_True ? KIND_AGG : KIND_TRADE;
    PyObject *seen = GET(s, W_SEEN), *stale = GET(s, W_STALE);
    if (w->stale) {
        if (!seen || !stale || !PyDict_CheckExact(seen) || !PyDict_CheckExact(stale) ||
            PyDict_GET_SIZE(stale) != 0)
            return 0;
        int has = PyDict_Contains(seen, kind);
        if (has <= 0) {
            if (has < 0)
                PyErr_Clear();
            return 0; /* a new stream: _refresh, in Python */
        }
        if (now >= next)
            return 0; /* a stale scan is due */
    }
    int later = t > tc;
    if (later)
        tc = t;
    if (w->volume && tc >= end)
        return 0; /* a new volume interval */
    int64_t v;
    if (__builtin_add_overflow(cur, q, &v) || (thr && v >= thr))
        return 0; /* volume spike */
    if (w->big && (__int128)p * q >= w->big)
        return 0; /* large trade (notional) */
    PyObject *rec = NULL;
    int64_t total = 0, after = 0;
    Py_ssize_t len = 0;
    if (w->k100) {
        rec = GET(s, W_RECENT);
        if (!rec || !i64(GET(s, W_RECENT_SUM), &total) || (len = PyObject_Length(rec)) < 0) {
            PyErr_Clear();
            return 0;
        }
        __int128 next_total = (__int128)total + q;
        if (len == w->window) {
            if (total && (__int128)q * w->k100 >= (__int128)w->ratio * total)
                return 0; /* large trade (vs recent) */
            PyObject *oldest = PySequence_GetItem(rec, 0); /* popped below */
            int64_t o;
            int ok = i64(oldest, &o);
            Py_XDECREF(oldest);
            if (!ok) {
                PyErr_Clear();
                return 0;
            }
            next_total -= o;
        }
        if (next_total > INT64_MAX || next_total < INT64_MIN)
            return 0;
        after = (int64_t)next_total;
    }
    if (p != pp && pp && w->bps >= 0) {
        int64_t d = p > pp ? p - pp : pp - p;
        if ((__int128)d * 10000 >= (__int128)w->bps * pp)
            return 0; /* price jump */
    }
    /* nothing fires: apply, in on_trade's order */
    if (newer && put(st, N_NOW, Py_NewRef(recv_obj)) < 0)
        return -1;
    if (w->stale && PyDict_SetItem(seen, kind, newer ? recv_obj : now_obj) < 0)
        return -1;
    if (later && put(s, W_LAST_MS, Py_NewRef(t_obj)) < 0)
        return -1;
    if (put(s, W_CUR_VOL, PyLong_FromLongLong(v)) < 0)
        return -1;
    if (rec) {
        if (len == w->window) {
            PyObject *oldest = PyObject_CallMethodNoArgs(rec, STR_POPLEFT);
            if (oldest == NULL)
                return -1;
            Py_DECREF(oldest);
        }
        if (put(s, W_RECENT_SUM, PyLong_FromLongLong(after)) < 0)
            return -1;
        PyObject *r = PyObject_CallMethodOneArg(rec, STR_APPEND, GET(ev, T_QTY));
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if (p != pp && put(s, W_LAST_PRICE, Py_NewRef(GET(ev, T_PRICE))) < 0)
        return -1;
    return 1;
}

/* --------------------------------------------------------------- run */

/* One trade: -1 (selection not the common case, nothing touched), a mask >= 0 (see the
 * header), or -2 with an exception set. */
static long run_core(Spec *s, PyObject *ev, PyObject *sel, PyObject *recs) {
    if (PyTuple_GET_SIZE(recs) != s->n) {
        PyErr_SetString(PyExc_TypeError, "run(): one record per spec member");
        return -2;
    }
    if (!Py_IS_TYPE(ev, classes[C_TRADE]) || !Py_IS_TYPE(sel, classes[C_SEL]))
        return -1;
    /* the selection rule's common case (engine.trades.select_trade) */
    PyObject *t_obj = GET(ev, T_TXN);
    if (t_obj == Py_None)
        t_obj = GET(ev, T_EXCH);
    PyObject *agg = GET(sel, S_AGG), *ev_agg = GET(ev, T_AGG);
    int64_t t, fid, lid, hi;
    if (!i64(t_obj, &t) || (agg != Py_True && agg != Py_False) || ev_agg != agg ||
        !i64(GET(ev, T_FIRST), &fid) || !i64(GET(ev, T_LAST), &lid) || !i64(GET(sel, S_HI), &hi))
        return -1;
    if (fid > 0 && fid <= hi)
        return -1; /* a duplicate: counted in Python */
    PyObject *side = GET(ev, T_SIDE), *price = GET(ev, T_PRICE), *qty = GET(ev, T_QTY);
    if (side == NULL || price == NULL || qty == NULL)
        return -1;
    /* trades an event covers: last_id - first_id + 1 for an aggTrade, else 1 */
    int64_t count = 1;
    if (ev_agg == Py_True) {
        if (__builtin_sub_overflow(lid, fid, &count) || __builtin_add_overflow(count, 1, &count))
            return -1;
    }
    int is_buy = PyObject_RichCompareBool(side, BUY, Py_EQ);
    if (is_buy < 0)
        return -2;
    PyObject *n = PyLong_FromLongLong(count);
    if (n == NULL)
        return -2;
    if (fid > 0 && put(sel, S_HI, Py_NewRef(GET(ev, T_LAST))) < 0)
        goto fail;
    long mask = 0;
    for (Py_ssize_t k = 0; k < s->n; k++) {
        PyObject *rec = PyTuple_GET_ITEM(recs, k);
        int r = 0;
        switch (s->kind[k]) {
        case M_AGG:
            r = agg_member(rec, s->bucket_ms[k], ev, t_obj, t, n, is_buy);
            break;
        case M_TAPE:
            r = tape_member(rec, ev, t_obj, n);
            break;
        case M_CANDLES:
            r = candles_member(rec, ev, t, n, is_buy);
            break;
        case M_ANOMALY:
            r = anomaly_member(rec, &s->watch[k], ev, t_obj, t);
            break;
        }
        if (r < 0)
            goto fail;
        if (r == 0)
            mask |= 1L << k;
    }
    Py_DECREF(n);
    return mask;
fail:
    Py_DECREF(n);
    return -2;
}

/* run(spec, ev, sel, records) -> int (see the header) */
static PyObject *run(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !Py_IS_TYPE(args[0], &SpecType) || !PyTuple_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "run(spec, ev, sel, records: tuple)");
        return NULL;
    }
    long r = run_core((Spec *)args[0], args[1], args[2], args[3]);
    return r == -2 ? NULL : PyLong_FromLong(r);
}

/* --------------------------------------------------------------- the stage runner */

/* Runner(spec, records, resume, other): the fused stage as one C callable, runner(ev) ->
 * outputs.  An event that is not a trade returns other(ev).  records is the fan's dict
 * symbol -> (sel, calls, C records | None); a trade whose entry has C records and that C
 * applies to every member returns () without entering Python; any other trade returns
 * resume(ev, code, entry): code -2 = not handled at all (no entry, no C records), -1 = the
 * selection was declined, > 0 = the mask of run(). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Spec *spec;
    PyObject *records;
    PyObject *resume;
    PyObject *other; /* other(ev): every event that is not a trade */
} Runner;

static PyObject *EMPTY = NULL; /* () */

/* resume(ev, code, entry): entry is the symbol's records entry (None for code -2) */
static PyObject *resume(Runner *r, PyObject *ev, long code, PyObject *entry) {
    PyObject *c = PyLong_FromLong(code);
    if (c == NULL)
        return NULL;
    PyObject *args[3] = {ev, c, entry};
    PyObject *out = PyObject_Vectorcall(r->resume, args, 3, NULL);
    Py_DECREF(c);
    return out;
}

static PyObject *runner_call(PyObject *self, PyObject *const *args, size_t nargsf,
                             PyObject *kwnames) {
    Runner *r = (Runner *)self;
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "runner(ev)");
        return NULL;
    }
    PyObject *ev = args[0];
    if (!Py_IS_TYPE(ev, classes[C_TRADE]))
        return PyObject_Vectorcall(r->other, args, 1, NULL);
    PyObject *sym = GET(ev, T_SYMBOL);
    PyObject *entry = sym ? PyDict_GetItemWithError(r->records, sym) : NULL; /* borrowed */
    if (entry == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return resume(r, ev, -2, Py_None);
    }
    if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3 ||
        !PyTuple_CheckExact(PyTuple_GET_ITEM(entry, 2)))
        return resume(r, ev, -2, Py_None);
    Py_INCREF(entry); /* held across the Python call below (it may change the dict) */
    long left = run_core(r->spec, ev, PyTuple_GET_ITEM(entry, 0), PyTuple_GET_ITEM(entry, 2));
    PyObject *out;
    if (left == -2)
        out = NULL;
    else if (left == 0)
        out = Py_NewRef(EMPTY);
    else
        out = resume(r, ev, left, entry);
    Py_DECREF(entry);
    return out;
}

static void runner_dealloc(Runner *r) {
    Py_XDECREF(r->spec);
    Py_XDECREF(r->records);
    Py_XDECREF(r->resume);
    Py_XDECREF(r->other);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyTypeObject RunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "engine._tradepath.Runner",
    .tp_basicsize = sizeof(Runner),
    .tp_dealloc = (destructor)runner_dealloc,
    .tp_vectorcall_offset = offsetof(Runner, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "runner(spec, records, resume, other): the fused trade stage (see the C source)",
};

/* runner(spec, records: dict, resume: callable, other: callable) -> Runner */
static PyObject *runner(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !Py_IS_TYPE(args[0], &SpecType) || !PyDict_CheckExact(args[1]) ||
        !PyCallable_Check(args[2]) || !PyCallable_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "runner(spec, records: dict, resume, other)");
        return NULL;
    }
    Runner *r = PyObject_New(Runner, &RunnerType);
    if (r == NULL)
        return NULL;
    r->vectorcall = runner_call;
    r->spec = (Spec *)Py_NewRef(args[0]);
    r->records = Py_NewRef(args[1]);
    r->resume = Py_NewRef(args[2]);
    r->other = Py_NewRef(args[3]);
    return (PyObject *)r;
}

/* configure(classes: dict[str, type]): the classes above; checks every field is an object slot. */
static PyObject *configure(PyObject *self, PyObject *cls_map) {
    if (!PyDict_Check(cls_map)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes a dict of classes");
        return NULL;
    }
    PyTypeObject *found[N_CLASSES];
    for (int c = 0; c < N_CLASSES; c++) {
        PyObject *cls = PyDict_GetItemString(cls_map, CLASS_NAMES[c]); /* borrowed */
        if (cls == NULL || !PyType_Check(cls)) {
            PyErr_Format(PyExc_TypeError, "configure(): no class %s", CLASS_NAMES[c]);
            return NULL;
        }
        found[c] = (PyTypeObject *)cls;
    }
    Py_ssize_t offs[N_FIELDS];
    for (int f = 0; f < N_FIELDS; f++) {
        PyTypeObject *tp = found[fields[f].cls];
        PyObject *d = PyDict_GetItemString(tp->tp_dict, fields[f].name);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)d)->d_member->type != T_OBJECT_EX ||
            ((PyMemberDescrObject *)d)->d_common.d_type != tp) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name,
                         fields[f].name);
            return NULL;
        }
        offs[f] = ((PyMemberDescrObject *)d)->d_member->offset;
    }
    for (int f = 0; f < N_FIELDS; f++)
        fields[f].off = offs[f];
    for (int c = 0; c < N_CLASSES; c++)
        Py_XSETREF(classes[c], (PyTypeObject *)Py_NewRef(found[c]));
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_O, "configure(classes): the state and event classes"},
    {"spec", spec, METH_O, "spec(members) -> Spec"},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL,
     "run(spec, ev, sel, records) -> -1 (all Python) | mask of members left to Python"},
    {"runner", (PyCFunction)(void (*)(void))runner, METH_FASTCALL,
     "runner(spec, records, resume, other) -> the fused stage as one C callable"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engine._tradepath",
    "Optional C fast path for the fused trade stage (see the C source header).", -1, methods,
};

PyMODINIT_FUNC PyInit__tradepath(void) {
    if (PyType_Ready(&SpecType) < 0 || PyType_Ready(&RunnerType) < 0)
        return NULL;
    EMPTY = PyTuple_New(0);
    BUY = PyUnicode_InternFromString("buy");
    STR_APPEND = PyUnicode_InternFromString("append");
    STR_POPLEFT = PyUnicode_InternFromString("popleft");
    KIND_AGG = PyUnicode_InternFromString("aggTrade");
    KIND_TRADE = PyUnicode_InternFromString("trade");
    if (EMPTY == NULL || BUY == NULL || STR_APPEND == NULL || STR_POPLEFT == NULL || KIND_AGG == NULL ||
        KIND_TRADE == NULL)
        return NULL;
    return PyModule_Create(&module);
}
