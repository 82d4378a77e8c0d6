/* The AVX512_BF16 path of mlp_sbgemm (AMD Zen 4 and later, Intel Cooper Lake
 * and later), included by _bf16.h on x86-64 with gcc or clang.
 *
 * Structure (BLIS's): C = alpha * X @ Y.T + beta * C with X = op(A) (m x k)
 * and Y = op(B).T (n x k). For each block of NC columns of C and KC of k,
 * Y's block is packed once into slivers of MLP_BF16_NR rows; for each block
 * of MC rows, X's block is packed into slivers of MLP_BF16_MR rows (L2
 * resident); the micro-kernel multiplies one X sliver by one Y sliver into an
 * MR x NR tile of C held in 24 zmm registers.
 *
 * Packed format (both operands): for each pair of k (2p, 2p+1), the sliver's
 * R rows as R 32-bit words, each the two bfloat16 values of that row at k = 2p
 * (low half) and 2p + 1 (high half). That is what vdpbf16ps multiplies: in one
 * instruction, 16 rows of X times one row of Y (broadcast), over two k. An odd
 * k and the rows past the matrix's edge are packed as zeros, so the
 * micro-kernel never branches on them.
 *
 * Rounding: vcvtne2ps2bf16 rounds to nearest even, makes a NaN quiet and
 * treats float32 denormals as zero, which is mlp_f32_to_bf16 exactly;
 * vdpbf16ps adds both products to the float32 sum, treating denormal inputs
 * and outputs as zero. Only the order of the float32 sums differs from the
 * portable path. */
#ifndef MLP_BF16_AVX512_H
#define MLP_BF16_AVX512_H

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MLP_BF16_AVX512_TARGET \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))

/* Register tile and cache blocks. MR x NR = 32 x 12 uses 24 accumulators
 * (of 32 zmm registers), enough independent sums to hide vdpbf16ps's latency.
 * KC x MC bfloat16 of X (at most 512 x 384 = 384 KiB) stays in L2 (1 MiB on
 * Zen 4, 2 MiB on Sapphire Rapids); a Y sliver (KC x NR, 12 KiB) in L1; a Y
 * block (KC x NC, 3 MiB) in L3. */
#define MLP_BF16_MR 32
#define MLP_BF16_NR 12
#define MLP_BF16_KC 512
#define MLP_BF16_MC 384
#define MLP_BF16_NC 3072

static inline __mmask16 mlp_bf16_mask16(int n) {
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* 16 rows of 16 float32 -> 16 rows of 16 bfloat16 pairs: even k in the low
 * half, odd k in the high half of each 32-bit word. */
MLP_BF16_AVX512_TARGET
static inline __m512i mlp_bf16_interleave(__m512 even, __m512 odd) {
    /* cvtne2ps(odd, even): words 0-15 are even's, 16-31 odd's. */
    const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10,
                                           25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4,
                                           19, 3, 18, 2, 17, 1, 16, 0);
    __m512i words = (__m512i)_mm512_cvtne2ps_pbh(odd, even);
    return _mm512_permutexvar_epi16(order, words);
}

/* 32 consecutive float32 (lo: the first 16) -> 16 bfloat16 pairs, in order. */
MLP_BF16_AVX512_TARGET
static inline __m512i mlp_bf16_consecutive(__m512 lo, __m512 hi) {
    return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Transpose a 16 x 16 matrix of 32-bit words in place: four stages that each
 * swap the off-diagonal b x b blocks of every 2b x 2b block. */
MLP_BF16_AVX512_TARGET
static inline void mlp_bf16_transpose16(__m512i r[16]) {
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (int b = 8; b >= 1; b >>= 1) {
        __m512i vb = _mm512_set1_epi32(b);
        __mmask16 upper = _mm512_test_epi32_mask(iota, vb);   /* columns j with j & b */
        __m512i sixteen = _mm512_set1_epi32(16);
        /* row i (i & b == 0): its j & b columns come from row i + b, column j - b */
        __m512i take_lo = _mm512_mask_blend_epi32(
            upper, iota, _mm512_sub_epi32(_mm512_add_epi32(iota, sixteen), vb));
        /* row i + b: its other columns come from row i, column j + b */
        __m512i take_hi = _mm512_mask_blend_epi32(
            upper, _mm512_add_epi32(iota, vb), _mm512_add_epi32(iota, sixteen));
        for (int i = 0; i < 16; i++) {
            if (i & b) continue;
            __m512i x = r[i], y = r[i + b];
            r[i] = _mm512_permutex2var_epi32(x, take_lo, y);
            r[i + b] = _mm512_permutex2var_epi32(x, take_hi, y);
        }
    }
}

/* Pack the rows x kc block src (element (r, k) at src[r * rs + k * ks]) into
 * an R-row sliver (R = 12, 16 or 32) of the packed format at dst, which holds
 * ceil(kc / 2) * R words. rows_contiguous says rs == 1 (else ks == 1). Rows
 * from `rows` to R and the odd k past kc are zeros. */
MLP_BF16_AVX512_TARGET
static void mlp_bf16_pack(int R, int rows, int kc, const float *src, size_t rs, size_t ks,
                          int rows_contiguous, uint32_t *dst) {
    int kp = (kc + 1) / 2;
    if (rows_contiguous) {
        for (int r0 = 0; r0 < R; r0 += 16) {
            __mmask16 load = mlp_bf16_mask16(rows - r0), store = mlp_bf16_mask16(R - r0);
            for (int p = 0; p < kp; p++) {
                const float *s = src + r0 + (size_t)(2 * p) * ks;
                __m512 even = _mm512_maskz_loadu_ps(load, s);
                __m512 odd = 2 * p + 1 < kc ? _mm512_maskz_loadu_ps(load, s + ks)
                                            : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(dst + (size_t)p * R + r0, store,
                                         mlp_bf16_interleave(even, odd));
            }
        }
        return;
    }
    for (int k0 = 0; k0 < kc; k0 += 32) {
        int nk = kc - k0 < 32 ? kc - k0 : 32, np = (nk + 1) / 2;
        __mmask16 lo = mlp_bf16_mask16(nk), hi = mlp_bf16_mask16(nk - 16);
        for (int r0 = 0; r0 < R; r0 += 16) {
            __m512i t[16];
            for (int i = 0; i < 16; i++) {
                if (r0 + i < rows) {
                    const float *s = src + (size_t)(r0 + i) * rs + k0;
                    t[i] = mlp_bf16_consecutive(_mm512_maskz_loadu_ps(lo, s),
                                                _mm512_maskz_loadu_ps(hi, s + 16));
                } else {
                    t[i] = _mm512_setzero_si512();
                }
            }
            mlp_bf16_transpose16(t);  /* t[p]: pair p of the 16 rows */
            __mmask16 store = mlp_bf16_mask16(R - r0);
            for (int p = 0; p < np; p++)
                _mm512_mask_storeu_epi32(dst + (size_t)(k0 / 2 + p) * R + r0, store, t[p]);
        }
    }
}

/* Pack the rows x kc block src (element (r, k) at src[r * rs + k], k
 * contiguous) row-major into a sliver of MLP_BF16_NR rows of ceil(kc / 2)
 * bfloat16 pairs each; the rows past `rows` are zeros. */
MLP_BF16_AVX512_TARGET
static void mlp_bf16_pack_rows(int rows, int kc, const float *src, size_t rs, uint32_t *dst) {
    size_t kp = ((size_t)kc + 1) / 2;
    for (int r = 0; r < MLP_BF16_NR; r++) {
        uint32_t *d = dst + r * kp;
        if (r >= rows) {
            memset(d, 0, kp * sizeof(uint32_t));
            continue;
        }
        const float *s = src + (size_t)r * rs;
        for (int k0 = 0; k0 < kc; k0 += 32) {
            int nk = kc - k0 < 32 ? kc - k0 : 32;
            __m512i pairs = mlp_bf16_consecutive(
                _mm512_maskz_loadu_ps(mlp_bf16_mask16(nk), s + k0),
                _mm512_maskz_loadu_ps(mlp_bf16_mask16(nk - 16), s + k0 + 16));
            _mm512_mask_storeu_epi32(d + k0 / 2, mlp_bf16_mask16((nk + 1) / 2), pairs);
        }
    }
}

/* C tile (mr x nr of at most (16 * NV) x NR, column-major, leading dimension
 * ldc) = alpha * sliver(X) @ sliver(Y).T + beta * C tile; beta == 0 does not
 * read C. NV is 2 (an X sliver of 32 rows) or 1 (16 rows). Y_ROWS: the Y
 * sliver is row-major (mlp_bf16_pack_rows), else pairs-major. c_transposed:
 * the tile is stored as C's transpose (element (i, j) at c[j + i * ldc]). */
MLP_BF16_AVX512_TARGET
static inline __attribute__((always_inline)) void mlp_bf16_tile(
        const int NV, const int Y_ROWS, int kp, const uint32_t *x, const uint32_t *y, float *c, size_t ldc,
        float alpha, float beta, int mr, int nr, int c_transposed) {
    __m512 acc[MLP_BF16_NR][2];
    for (int j = 0; j < MLP_BF16_NR; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    /* C's tile is read or written only after the k loop: fetch its lines
     * now, so the misses overlap the arithmetic (C can be far from L2). */
    for (int j = 0; j < MLP_BF16_NR; j++) {
        if (j >= (c_transposed ? mr : nr)) break;
        const char *line = (const char *)(c + (size_t)j * ldc);
        int last = 4 * ((c_transposed ? nr : mr) - 1);  /* its last byte's offset, < 128 */
        _mm_prefetch(line, _MM_HINT_T0);
        if (last >= 64) _mm_prefetch(line + 64, _MM_HINT_T0);
        _mm_prefetch(line + last, _MM_HINT_T0);
    }
    for (int p = 0; p < kp; p++) {
        __m512bh x0 = (__m512bh)_mm512_load_si512(x);
        __m512bh x1 = NV == 2 ? (__m512bh)_mm512_load_si512(x + 16) : x0;
        for (int j = 0; j < MLP_BF16_NR; j++) {
            /* row j of a row-major Y sliver from 4 bases and 0, 1 or 2
             * strides: addressing modes, not 12 pointer registers */
            uint32_t yv = Y_ROWS ? y[(size_t)(j / 3) * 3 * kp + (size_t)(j % 3) * kp] : y[j];
            __m512bh yj = (__m512bh)_mm512_set1_epi32((int)yv);
            acc[j][0] = _mm512_dpbf16_ps(acc[j][0], x0, yj);
            if (NV == 2) acc[j][1] = _mm512_dpbf16_ps(acc[j][1], x1, yj);
        }
        x += 16 * NV;
        y += Y_ROWS ? 1 : MLP_BF16_NR;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (c_transposed) {
        /* The tile is C's transpose (C's row i is the tile's column): turn
         * each 16 x NR half round in registers and store C's rows whole. */
        __mmask16 cols = mlp_bf16_mask16(nr);
        for (int v = 0; v < NV; v++) {
            __m512i t[16];
            for (int j = 0; j < 16; j++)
                t[j] = j < MLP_BF16_NR ? _mm512_castps_si512(acc[j][v]) : _mm512_setzero_si512();
            mlp_bf16_transpose16(t);
            for (int r = 0; r < 16; r++) {
                if (16 * v + r >= mr) break;
                float *cr = c + (size_t)(16 * v + r) * ldc;
                __m512 sum = _mm512_mul_ps(va, _mm512_castsi512_ps(t[r]));
                if (beta != 0.0f)
                    sum = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(cols, cr), sum);
                _mm512_mask_storeu_ps(cr, cols, sum);
            }
        }
        return;
    }
    __mmask16 m0 = mlp_bf16_mask16(mr), m1 = mlp_bf16_mask16(mr - 16);
    for (int j = 0; j < MLP_BF16_NR; j++) {
        if (j >= nr) break;
        float *cj = c + (size_t)j * ldc;
        if (beta == 0.0f) {
            _mm512_mask_storeu_ps(cj, m0, _mm512_mul_ps(va, acc[j][0]));
            if (NV == 2) _mm512_mask_storeu_ps(cj + 16, m1, _mm512_mul_ps(va, acc[j][1]));
        } else {
            __m512 old = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m0, cj));
            _mm512_mask_storeu_ps(cj, m0, _mm512_fmadd_ps(va, acc[j][0], old));
            if (NV == 2) {
                old = _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m1, cj + 16));
                _mm512_mask_storeu_ps(cj + 16, m1, _mm512_fmadd_ps(va, acc[j][1], old));
            }
        }
    }
}

MLP_BF16_AVX512_TARGET __attribute__((noinline))
static void mlp_bf16_tile32(int kp, const uint32_t *x, const uint32_t *y, float *c, size_t ldc,
                            float alpha, float beta, int mr, int nr, int c_transposed,
                            int y_rows) {
    if (y_rows)
        mlp_bf16_tile(2, 1, kp, x, y, c, ldc, alpha, beta, mr, nr, c_transposed);
    else
        mlp_bf16_tile(2, 0, kp, x, y, c, ldc, alpha, beta, mr, nr, c_transposed);
}

MLP_BF16_AVX512_TARGET __attribute__((noinline))
static void mlp_bf16_tile16(int kp, const uint32_t *x, const uint32_t *y, float *c, size_t ldc,
                            float alpha, float beta, int mr, int nr, int c_transposed,
                            int y_rows) {
    if (y_rows)
        mlp_bf16_tile(1, 1, kp, x, y, c, ldc, alpha, beta, mr, nr, c_transposed);
    else
        mlp_bf16_tile(1, 0, kp, x, y, c, ldc, alpha, beta, mr, nr, c_transposed);
}

/* ceil(total / ceil(total / max_block)) rounded up to a multiple of unit:
 * blocks of near-equal size rather than full ones and a sliver. */
static inline int mlp_bf16_block(int total, int max_block, int unit) {
    int count = (total + max_block - 1) / max_block;
    int size = (total + count - 1) / count;
    return (size + unit - 1) / unit * unit;
}

/* The work of an m x n product in tiles, in units of one row of a 32-row
 * tile times one column: the rows past a multiple of 32 take a 16-row tile
 * (which runs about 1.25 times slower per row) or a 32-row one. */
static inline double mlp_bf16_tiles_cost(int m, int n) {
    int rest = m % MLP_BF16_MR;
    double rows = (double)(m - rest) + (rest == 0 ? 0.0 : rest <= 16 ? 20.0 : 32.0);
    return rows * (double)((n + MLP_BF16_NR - 1) / MLP_BF16_NR * MLP_BF16_NR);
}

/* mlp_sbgemm on AVX512_BF16; m, n >= 1, k >= 1, alpha != 0 (mlp_sbgemm has
 * handled the rest). Returns -1 if the packing buffers could not be had. */
MLP_BF16_AVX512_TARGET
static int mlp_sbgemm_avx512(char transa, char transb, int m, int n, int k, float alpha,
                             const float *a, int lda, const float *b, int ldb, float beta,
                             float *c, int ldc) {
    /* X(i, l) = op(A)(i, l); Y(j, l) = op(B)(l, j). */
    int x_rows_contiguous = transa == 'N' || transa == 'n';
    size_t x_rs = x_rows_contiguous ? 1 : (size_t)lda, x_ks = x_rows_contiguous ? (size_t)lda : 1;
    int y_rows_contiguous = !(transb == 'N' || transb == 'n');
    size_t y_rs = y_rows_contiguous ? 1 : (size_t)ldb, y_ks = y_rows_contiguous ? (size_t)ldb : 1;
    /* C.T = Y @ X.T is the same product with the roles swapped: taken when
     * it wastes much less of the tiles (m = 10 against a batch of 256), as
     * storing a tile transposed costs about 160 cycles (measured: at k = 100
     * and m = 300 it lost 20%, at m = 10 it gained 10%). */
    int c_transposed = mlp_bf16_tiles_cost(n, m) * 1.2 < mlp_bf16_tiles_cost(m, n);
    if (c_transposed) {
        const float *t = a; a = b; b = t;
        int ti = m; m = n; n = ti;
        ti = x_rows_contiguous; x_rows_contiguous = y_rows_contiguous; y_rows_contiguous = ti;
        size_t ts = x_rs; x_rs = y_rs; y_rs = ts;
        ts = x_ks; x_ks = y_ks; y_ks = ts;
    }
    size_t c_rs = c_transposed ? (size_t)ldc : 1, c_cs = c_transposed ? 1 : (size_t)ldc;
    /* A Y whose k is contiguous is packed row-major (no transposition, the
     * micro-kernel broadcasting from 12 rows): half the cost of its packing. */
    int y_rows = !y_rows_contiguous;

    int kc_max = mlp_bf16_block(k, MLP_BF16_KC, 32);
    int mc_max = mlp_bf16_block(m, MLP_BF16_MC, MLP_BF16_MR);
    int nc_max = mlp_bf16_block(n, MLP_BF16_NC, MLP_BF16_NR);
    size_t x_words = (size_t)mc_max * (kc_max / 2), y_words = (size_t)nc_max * (kc_max / 2);
    size_t bytes = ((x_words + y_words) * sizeof(uint32_t) + 63) / 64 * 64;
    uint32_t *x_pack = (uint32_t *)aligned_alloc(64, bytes);
    if (x_pack == NULL) return -1;
    uint32_t *y_pack = x_pack + x_words;  /* x_words is a multiple of 16: aligned */

    for (int jc = 0; jc < n; jc += nc_max) {
        int nc = n - jc < nc_max ? n - jc : nc_max;
        for (int pc = 0; pc < k; pc += kc_max) {
            int kc = k - pc < kc_max ? k - pc : kc_max, kp = (kc + 1) / 2;
            float beta_block = pc == 0 ? beta : 1.0f;  /* later k blocks add to C */
            for (int jr = 0; jr < nc; jr += MLP_BF16_NR)
                if (y_rows)
                    mlp_bf16_pack_rows(nc - jr < MLP_BF16_NR ? nc - jr : MLP_BF16_NR, kc,
                                       b + (size_t)(jc + jr) * y_rs + (size_t)pc, y_rs,
                                       y_pack + (size_t)jr * kp);
                else
                    mlp_bf16_pack(MLP_BF16_NR, nc - jr < MLP_BF16_NR ? nc - jr : MLP_BF16_NR,
                                  kc, b + (size_t)(jc + jr) * y_rs + (size_t)pc * y_ks, y_rs,
                                  y_ks, y_rows_contiguous, y_pack + (size_t)jr * kp);
            for (int ic = 0; ic < m; ic += mc_max) {
                int mc = m - ic < mc_max ? m - ic : mc_max;
                for (int ir = 0; ir < mc; ir += MLP_BF16_MR) {
                    int mr = mc - ir < MLP_BF16_MR ? mc - ir : MLP_BF16_MR;
                    mlp_bf16_pack(mr > 16 ? 32 : 16, mr, kc,
                                  a + (size_t)(ic + ir) * x_rs + (size_t)pc * x_ks, x_rs, x_ks,
                                  x_rows_contiguous, x_pack + (size_t)ir * kp);
                }
                for (int jr = 0; jr < nc; jr += MLP_BF16_NR) {
                    int nr = nc - jr < MLP_BF16_NR ? nc - jr : MLP_BF16_NR;
                    const uint32_t *y_sliver = y_pack + (size_t)jr * kp;
                    for (int ir = 0; ir < mc; ir += MLP_BF16_MR) {
                        int mr = mc - ir < MLP_BF16_MR ? mc - ir : MLP_BF16_MR;
                        float *ct = c + (size_t)(ic + ir) * c_rs + (size_t)(jc + jr) * c_cs;
                        if (mr > 16)
                            mlp_bf16_tile32(kp, x_pack + (size_t)ir * kp, y_sliver, ct, ldc,
                                            alpha, beta_block, mr, nr, c_transposed, y_rows);
                        else
                            mlp_bf16_tile16(kp, x_pack + (size_t)ir * kp, y_sliver, ct, ldc,
                                            alpha, beta_block, mr, nr, c_transposed, y_rows);
                    }
                }
            }
        }
    }
    free(x_pack);
    return 0;
}

/* n float32 -> bfloat16-rounded float32 with the instruction this path uses
 * (for the tests: it must agree with mlp_round_bf16). */
MLP_BF16_AVX512_TARGET
static void mlp_bf16_round_avx512(const float *x, float *out, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        __mmask16 mask = mlp_bf16_mask16(n - i < 16 ? (int)(n - i) : 16);
        __m512 v = _mm512_maskz_loadu_ps(mask, x + i);
        __m512i pairs = mlp_bf16_interleave(v, _mm512_setzero_ps());
        _mm512_mask_storeu_ps(out + i, mask, _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16)));
    }
}

#endif
