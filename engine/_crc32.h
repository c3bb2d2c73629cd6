/* engine/_crc32.h: CRC-32 as zlib computes it (IEEE 802.3, reflected polynomial 0xEDB88320)
 * for engine._cksum's checksum text.
 *
 * Owns: the one CRC-32 of the C checksum path, in two implementations that give the same
 * value for every input, and the choice between them (made once, at module init):
 *
 *   crc_init()               the tables, then the choice: the PCLMULQDQ folding version where
 *                            the CPU has PCLMULQDQ and SSE4.1 (x86-64 only), else the table
 *                            version; ENGINE_CRC32=table in the environment forces the table.
 *   crc_update(c, p, n)      the running value c (start 0xFFFFFFFF, no final xor) carried over
 *                            the n bytes at p: any length, any alignment.
 *   crc_update_with(pclmul, c, p, n)   the same with the implementation named (tests, bench).
 *   crc_impl()               "pclmul" or "table": what crc_update uses.
 *   crc_of(p, n)             crc32 of n bytes (zlib's value: initial and final xor).
 *   crc_combine(c1, c2, n)   crc32(A || B) from c1 = crc32(A), c2 = crc32(B), n = len B (under
 *                            CRC_TEXT_MAX).
 *   crc_of_pieces(crcs, lens, n)   crc32 of a text from its n pieces' crc32s and lengths
 *                            (total under CRC_TEXT_MAX), the pieces' terms summed independently.
 *                            The multiply is PCLMULQDQ's where the folding version runs, else
 *                            one by nibbles (crc_combine_with names it, for the tests).
 *
 * The table version is slicing-by-8 (eight 256-entry tables, 8 bytes a step).  The folding
 * version is Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ
 * Instruction" (Gopal, Ozturk et al., 2009), the method of zlib-ng, Chromium's zlib and
 * Linux's crc32-pclmul: the message is kept as a 128-bit remainder (four of them side by
 * side while 64 bytes or more remain), each folded 128 (or 512) bits forward by two carry-less
 * multiplications by x^k mod P, the next 16 bytes xored in; a last partial block is folded
 * in by shifting (PSHUFB); the 128 bits left are reduced to 32 (two more folds, then
 * Barrett's reduction).  Under 16 bytes (one block) the table version runs; from 20 up
 * the folding one is the faster (~10 ns a call up to 48 bytes, against 9-24 ns), and
 * about 5x at 256-800 bytes (bench/crc.py).
 *
 * The constants (bit-reflected, as the reflected CRC needs; the "<< 1" makes up for the
 * reflected product's one-bit offset), with K(e) = reflect32(x^e mod P) << 1:
 *   fold by 512 bits: K(512+32) = 0x154442bd4, K(512-32) = 0x1c6e41596
 *   fold by 128 bits: K(128+32) = 0x1751997d0, K(128-32) = 0x0ccaa009e
 *   96 -> 64 bits:    K(64)     = 0x163cd6124
 *   Barrett:          P' = reflect33(P) = 0x1db710641, mu' = reflect33(x^64 div P) = 0x1f7011641
 * (P = x^32 + 0x04C11DB7; each is computed in a few lines of Python from those definitions.)
 *
 * Must not: hold anything but the CRC (no checksum rule: engine/_cksum.c and the Python
 * codecs own those), or read anything outside [p, p + n).
 */
#ifndef ENGINE_CRC32_H
#define ENGINE_CRC32_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* below this many bytes the table version is used (the folding version needs one block;
 * from 16 on every line of the folding version is one that tests/test_crc32.py reaches) */
#define CRC_PCLMUL_MIN 16

static uint32_t CRC[8][256];
static int crc_pclmul_on; /* crc_update folds with PCLMULQDQ */

/* a byte at a time through one table: the running value c over p[0..n) */
static inline uint32_t crc_update_bytes(uint32_t c, const unsigned char *p, size_t n) {
    while (n--) c = CRC[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}
/* slicing by 8: the running value c over p[0..n) */
static uint32_t crc_update_table(uint32_t c, const unsigned char *p, size_t n) {
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = CRC[7][lo & 0xFF] ^ CRC[6][(lo >> 8) & 0xFF] ^ CRC[5][(lo >> 16) & 0xFF] ^
            CRC[4][lo >> 24] ^ CRC[3][p[4]] ^ CRC[2][p[5]] ^ CRC[1][p[6]] ^ CRC[0][p[7]];
        p += 8;
        n -= 8;
    }
    return crc_update_bytes(c, p, n);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CRC_HAVE_PCLMUL 1
#include <immintrin.h>

#define CRC_TARGET __attribute__((target("pclmul,sse4.1")))

/* PSHUFB masks for a last block of r bytes (1..15), read at CRC_SHIFT + r: byte i is i+r-16,
 * so the mask moves bytes 0..r-1 up to 16-r..15 and zeroes the rest (its top bit set); xored
 * with 0xF0 it moves bytes r..15 down to 0..15-r and zeroes the rest. */
static const unsigned char CRC_SHIFT[32] = {
    0xF0, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF,
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
};

/* the remainder x carried forward over the distance k is made of, plus the block that follows */
CRC_TARGET static inline __m128i crc_fold(__m128i x, __m128i k, __m128i next) {
    __m128i earlier = _mm_clmulepi64_si128(x, k, 0x00); /* x's first 64 bits x K(d + 32) */
    __m128i later = _mm_clmulepi64_si128(x, k, 0x11);   /* x's last 64 bits x K(d - 32) */
    return _mm_xor_si128(_mm_xor_si128(earlier, later), next);
}

CRC_TARGET static inline __m128i crc_load(const unsigned char *p) {
    return _mm_loadu_si128((const __m128i *)(const void *)p);
}

/* 64 -> 32 bits (Barrett): the running value of x's 64 bits (its first 32 bits, the x^32..x^63
 * part, times x^32 mod P, plus its last 32): q = floor(x / P) from mu', then x - q P */
CRC_TARGET static inline uint32_t crc_barrett(__m128i x) {
    const __m128i barrett = _mm_set_epi64x(0x1f7011641, 0x1db710641); /* mu', P' */
    const __m128i low32 = _mm_set_epi32(0, -1, 0, -1);
    __m128i q = _mm_clmulepi64_si128(_mm_and_si128(x, low32), barrett, 0x10);
    __m128i qp = _mm_clmulepi64_si128(_mm_and_si128(q, low32), barrett, 0x00);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(x, qp), 1);
}
/* the running value after the whole message folded into the 128-bit remainder x */
CRC_TARGET static inline uint32_t crc_reduce(__m128i x) {
    const __m128i k96 = _mm_set_epi64x(0x0ccaa009e, 0);
    const __m128i k64 = _mm_set_epi64x(0, 0x163cd6124);
    const __m128i low32 = _mm_set_epi32(0, -1, 0, -1);
    /* 128 -> 96 bits: the first 64 times x^96 mod P, onto the last 64 */
    x = _mm_xor_si128(_mm_srli_si128(x, 8), _mm_clmulepi64_si128(x, k96, 0x10));
    /* 96 -> 64 bits: the first 32 times x^64 mod P, onto the last 64 */
    x = _mm_xor_si128(_mm_srli_si128(x, 4), _mm_clmulepi64_si128(_mm_and_si128(x, low32), k64, 0));
    return crc_barrett(x);
}

/* folding: the running value c over p[0..n), n >= 16 */
CRC_TARGET static uint32_t crc_update_pclmul(uint32_t c, const unsigned char *p, size_t n) {
    const unsigned char *end = p + n;
    const __m128i k128 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);
    __m128i x = _mm_xor_si128(crc_load(p), _mm_cvtsi32_si128((int)c));
    p += 16;
    if (end - p >= 48) { /* four remainders, 64 bytes apart, folded side by side */
        const __m128i k512 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4);
        __m128i x1 = crc_load(p), x2 = crc_load(p + 16), x3 = crc_load(p + 32);
        for (p += 48; end - p >= 64; p += 64) {
            x = crc_fold(x, k512, crc_load(p));
            x1 = crc_fold(x1, k512, crc_load(p + 16));
            x2 = crc_fold(x2, k512, crc_load(p + 32));
            x3 = crc_fold(x3, k512, crc_load(p + 48));
        }
        x = crc_fold(crc_fold(crc_fold(x, k128, x1), k128, x2), k128, x3);
    }
    for (; end - p >= 16; p += 16) x = crc_fold(x, k128, crc_load(p));
    size_t r = (size_t)(end - p);
    if (r) { /* x then r bytes = (x's first r bytes) then (x's last 16-r bytes, the r bytes) */
        __m128i up = crc_load(CRC_SHIFT + r);
        __m128i first = _mm_shuffle_epi8(x, up);
        __m128i rest = _mm_shuffle_epi8(x, _mm_xor_si128(up, _mm_set1_epi8((char)0xF0)));
        /* the last 16 bytes of the message end with the r bytes (n >= 16: all inside it) */
        rest = _mm_blendv_epi8(crc_load(end - 16), rest, up);
        x = crc_fold(first, k128, rest);
    }
    return crc_reduce(x);
}
#endif

static uint32_t crc_update_with(int pclmul, uint32_t c, const unsigned char *p, size_t n) {
#ifdef CRC_HAVE_PCLMUL
    if (pclmul && n >= CRC_PCLMUL_MIN) return crc_update_pclmul(c, p, n);
#else
    (void)pclmul;
#endif
    return crc_update_table(c, p, n);
}

static inline uint32_t crc_update(uint32_t c, const unsigned char *p, size_t n) {
    return crc_update_with(crc_pclmul_on, c, p, n);
}

/* 1 if this CPU runs the folding version */
static int crc_pclmul_supported(void) {
#ifdef CRC_HAVE_PCLMUL
    __builtin_cpu_init();
    return __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#else
    return 0;
#endif
}

/* ------------------------------------------------------------------ CRCs of concatenations
 *
 * crc32(A || B) = x^(8 len B) * crc32(A) + crc32(B) mod P, in CRC32's reflected representation
 * (zlib's crc32_combine): so a text's CRC is a fold over its pieces' own CRCs.  The product is a
 * carry-less multiply (PCLMULQDQ where crc_init chose it, else by nibbles) reduced mod P by
 * four table steps (the CRC of four zero bytes). */

#define CRC_TEXT_MAX 8192 /* the longest text crc_of_pieces (and piece crc_combine) takes, + 1 */
static uint32_t X8N[CRC_TEXT_MAX]; /* x^(8n) mod P */

static uint64_t clmul_sw(uint32_t a, uint32_t b) {
    uint64_t t[16], r = 0;
    t[0] = 0;
    for (int i = 1; i < 16; i++) t[i] = (i & 1) ? t[i - 1] ^ b : t[i >> 1] << 1;
    for (int i = 28; i >= 0; i -= 4) r = (r << 4) ^ t[(a >> i) & 15];
    return r;
}

#ifdef CRC_HAVE_PCLMUL
CRC_TARGET static uint64_t clmul_hw(uint32_t a, uint32_t b) {
    __m128i x = _mm_cvtsi32_si128((int)a), y = _mm_cvtsi32_si128((int)b);
    return (uint64_t)_mm_cvtsi128_si64(_mm_clmulepi64_si128(x, y, 0));
}
#endif

/* a 64-bit product t (reflected, so shifted up one) mod P: its x^32..x^63 part times x^32 mod
 * P by four table steps (the CRC of four zero bytes), plus the rest */
static inline uint32_t reduce_sw(uint64_t t) {
    uint32_t c = (uint32_t)t;
    c = CRC[3][c & 0xFF] ^ CRC[2][(c >> 8) & 0xFF] ^ CRC[1][(c >> 16) & 0xFF] ^ CRC[0][c >> 24];
    return c ^ (uint32_t)(t >> 32);
}
/* a * b mod P (reflected 32-bit polynomials), in software */
static uint32_t multmodp_sw(uint32_t a, uint32_t b) { return reduce_sw(clmul_sw(a, b) << 1); }
#ifdef CRC_HAVE_PCLMUL
/* the same by Barrett's reduction (no table read) */
CRC_TARGET static inline uint32_t reduce_hw(uint64_t t) {
    return crc_barrett(_mm_cvtsi64_si128((long long)t));
}
/* a * b mod P by PCLMULQDQ (only where the CPU has it) */
CRC_TARGET static uint32_t multmodp_hw(uint32_t a, uint32_t b) {
    return reduce_hw(clmul_hw(a, b) << 1);
}
#else
#define reduce_hw reduce_sw
#define multmodp_hw multmodp_sw
#endif

/* a * b mod P; hw: by PCLMULQDQ */
static uint32_t multmodp(uint32_t a, uint32_t b, int hw) {
    return hw ? multmodp_hw(a, b) : multmodp_sw(a, b);
}

/* crc32 of the text made of n pieces (crc32 crc[i] of len[i] bytes each): the combine rule
 * unrolled, crc32(P0 || ... || Pn-1) = sum over i of x^(8 * (bytes after Pi)) * crc[i] mod P,
 * terms that do not depend on each other (no chain from piece to piece), summed unreduced
 * (the reduction mod P is linear) and reduced once.  The pieces' total length must be under
 * CRC_TEXT_MAX.  One loop per multiply, so each inlines its own (the hardware one compiled for
 * PCLMULQDQ, called only where the CPU has it). */
#define PIECES(NAME, ATTR, CLMUL, REDUCE)                                                \
    ATTR static uint32_t NAME(const uint32_t *crc, const unsigned char *len, int n) {   \
        uint64_t acc = 0;                                                                \
        int after = 0;                                                                   \
        for (int i = n - 1; i >= 0; i--) {                                               \
            acc ^= CLMUL(X8N[after], crc[i]);                                            \
            after += len[i];                                                             \
        }                                                                                \
        return REDUCE(acc << 1);                                                         \
    }
PIECES(pieces_sw, , clmul_sw, reduce_sw)
#ifdef CRC_HAVE_PCLMUL
PIECES(pieces_hw, CRC_TARGET, clmul_hw, reduce_hw)
#else
#define pieces_hw pieces_sw
#endif

/* crc_of_pieces: pieces_hw or pieces_sw, the multiply crc_init chose */
static uint32_t crc_of_pieces(const uint32_t *crc, const unsigned char *len, int n) {
    return (crc_pclmul_on ? pieces_hw : pieces_sw)(crc, len, n);
}

/* crc32(A || B) of crc1 = crc32(A), crc2 = crc32(B), B being len2 bytes (len2 < CRC_TEXT_MAX);
 * hw: the hardware multiply (only where crc_init found it) */
static uint32_t crc_combine_with(int hw, uint32_t crc1, uint32_t crc2, int len2) {
    return multmodp(X8N[len2], crc1, hw) ^ crc2;
}

static uint32_t crc_combine(uint32_t crc1, uint32_t crc2, int len2) {
    return crc_combine_with(crc_pclmul_on, crc1, crc2, len2);
}

/* crc32 of bytes (standard: initial and final xor).  A short text (a price's or a qty's, just
 * written) goes a byte at a time through one table: each byte load is forwarded from the store
 * that wrote it (slicing's word loads span several stores and stall), and one 1 KB table stays
 * cached where eight would not. */
static uint32_t crc_of(const char *p, int n) {
    const unsigned char *b = (const unsigned char *)p;
    uint32_t c = n >= CRC_PCLMUL_MIN ? crc_update(0xFFFFFFFFu, b, (size_t)n)
                                     : crc_update_bytes(0xFFFFFFFFu, b, (size_t)n);
    return c ^ 0xFFFFFFFFu;
}

/* the powers of x the combine multiplies by (after the tables) */
static void crc_combine_init(void) {
    X8N[0] = 0x80000000u; /* x^0 */
    for (int i = 1; i < CRC_TEXT_MAX; i++)
        X8N[i] = multmodp(X8N[i - 1], 0x00800000u /* x^8 */, 0);
}

static const char *crc_impl(void) { return crc_pclmul_on ? "pclmul" : "table"; }

static void crc_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        CRC[0][i] = c;
    }
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++) CRC[t][i] = (CRC[t - 1][i] >> 8) ^ CRC[0][CRC[t - 1][i] & 0xFF];
    const char *forced = getenv("ENGINE_CRC32");
    crc_pclmul_on = crc_pclmul_supported() && !(forced != NULL && strcmp(forced, "table") == 0);
    crc_combine_init();
}

#endif
