/* engine/_cknum.h: exact int values rendered as the exchanges' checksum texts, for engine._cksum.
 *
 * Owns: reading a Python int's value into unsigned __int128 (int_parts, to_u128, small_int; on
 * CPython 3.11 straight from its 30-bit digits), decimal digit writers, and the two renderings the
 * checksum rules name: kraken_piece (render(v, d) without "." and leading zeros: the integer
 * v * 10**(d - scale)) and okx_piece (the value's shortest decimal form).  Values are exact ints
 * in units of 10**-scale (engine.num.SCALE).
 *
 * Must not: hold a rule (which levels, which precision: the Python codecs say), allocate, or
 * raise: anything it cannot render exactly it declines (0 or -1), and Python answers instead.
 */
#ifndef ENGINE_CKNUM_H
#define ENGINE_CKNUM_H

#include <Python.h>
#include <stdint.h>
#include <string.h>

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
    uint64_t lo = nd > 0 ? dg[0] : 0; /* digits 0-1 in 64 bits, the rest above them */
    if (nd > 1) lo |= (uint64_t)dg[1] << 30;
    u128 x = lo;
    if (nd > 2) {
        uint64_t hi = dg[2];
        if (nd > 3) hi |= (uint64_t)dg[3] << 30;
        x |= (u128)hi << 60;
        if (nd > 4) x |= (u128)dg[4] << 120;
    }
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
 * integer v * 10**(d - scale) in decimal ("" for 0), written backwards ending at end (PIECE
 * bytes before it are the caller's).  Returns where it starts, or NULL if v cannot be rendered
 * exactly at d decimals (or is out of range). */
static char *kraken_piece(char *end, u128 v, int d, int scale) {
    u128 x;
    if (d <= scale) {
        uint64_t drop = POW10[scale - d];
        if (v >> 64) {
            x = v / drop;
            if (v - x * drop) return NULL; /* finer than the precision: Python raises */
        } else {
            uint64_t w = (uint64_t)v;
            if (w % drop) return NULL;
            x = w / drop;
        }
    } else { /* zeros past the engine's scale */
        if (d - scale > MAX_SCALE) return NULL;
        uint64_t up = POW10[d - scale];
        if (v > ~(u128)0 / up) return NULL;
        x = v * up;
    }
    return u128_back(end, x);
}

/* OKX's text of one value: its shortest decimal form ("5.16", "30316", "0.5", "0"), written
 * backwards ending at end (PIECE bytes before it are the caller's); returns where it starts. */
static char *okx_piece(char *end, u128 v, int scale) {
    uint64_t one = POW10[scale], frac;
    u128 whole;
    if (v >> 64) {
        whole = v / one;
        frac = (uint64_t)(v - whole * one);
    } else {
        whole = (uint64_t)v / one;
        frac = (uint64_t)v % one;
    }
    char *p = end;
    if (frac) { /* its k significant decimals: the trailing zeros dropped, 8, 4, 2, 1 at a time */
        int k = scale;
        while (frac % 100000000u == 0) frac /= 100000000u, k -= 8;
        if (frac % 10000u == 0) frac /= 10000u, k -= 4;
        if (frac % 100u == 0) frac /= 100u, k -= 2;
        if (frac % 10u == 0) frac /= 10u, k -= 1;
        p = u64_back_fixed(p, frac, k);
        *--p = '.';
    }
    if (whole) return u128_back(p, whole);
    *--p = '0';
    return p;
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

#endif
