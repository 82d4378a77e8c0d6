/* The first layer on inputs that are mostly zeros (images: MNIST's digits
 * are 81% zero pixels), for inference (_forward_sparse_input in
 * mlp/_kernels.pyx) and for training (mlp/_worker.pxi); mlp/_sparse.pxi
 * wraps these loops for Cython.
 *
 * A dense GEMM spends as long on a zero pixel as on any other. Here each
 * input row is first compressed to its non-zero entries (index, value), and
 * a unit's pre-activation is the sum over those entries of value times the
 * weight from that input. For that the weights are read by input, from a
 * panel of (inputs, ld), ld a multiple of the vector width, padded with
 * zeros. One non-zero input then costs one row of the panel: contiguous
 * loads into register accumulators. Measured on one core of an AMD EPYC
 * (Zen 4), on MNIST's test images: 784 inputs to 150 units, 1.6 us a row
 * against 2.6 us for sgemm on all 784 inputs. Training's weight gradient
 * is the same loop turned around: each input's row of the gradient is the
 * sum, over the batch rows in which it is non-zero, of its value times the
 * row's deltas. Inference takes a block of rows through the inputs a chunk
 * at a time (MLP_DEFINE_SPARSE_BLOCK), so that the panel's rows in use stay
 * in cache.
 *
 * Compiled for AVX2+FMA and for the baseline (MLP_MULTIVERSION, _fastexp.h);
 * the accumulators are GCC/clang vector types, which the baseline clone
 * splits into SSE halves. */
#ifndef MLP_SPARSE_H
#define MLP_SPARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_fastexp.h"

/* 32 bytes: 8 floats or 4 doubles. aligned(sizeof(T)): the panel's rows and
 * the output need only the element's alignment. */
typedef float mlp_vec8f __attribute__((vector_size(32), aligned(4)));
typedef double mlp_vec4d __attribute__((vector_size(32), aligned(8)));

/* Vectors of units accumulated at once: 8 accumulators leave registers for
 * the loads on AVX2's 16; 12 and 16 measured no faster on Zen 4. With
 * AVX-512, 10 vectors of 16 floats (MLP_SPARSE_WIDE_BLOCK): 160 units a
 * pass, so a row of 150 to 160 units takes one pass over its non-zero
 * inputs instead of three. */
#define MLP_SPARSE_BLOCK 8
#define MLP_SPARSE_WIDE_BLOCK 10

/* Entries ahead whose panel rows MLP_DEFINE_SPARSE_ROW_AHEAD prefetches. */
#define MLP_SPARSE_AHEAD 8

/* x (d,) -> the indices and values of its entries whose bits are not all
 * zero; returns their number, and sets *nonfinite to 1 if one of them is
 * NaN or infinite (all exponent bits set): inference checks its input here,
 * in the one pass it makes anyway, not in a separate scan. Keeping -0.0 (or
 * NaN) is harmless, it only adds a product the dense sum would have had too.
 * Groups of 8 zero entries are skipped whole: most of an image's border is.
 * The portable loop; float rows take mlp_nonzeros_avx2_f where the CPU has
 * AVX2. */
#define MLP_DEFINE_COMPRESS(NAME, T, BITS, EXPONENT)                            \
MLP_MULTIVERSION                                                                \
static ptrdiff_t NAME(const T *x, ptrdiff_t d, int32_t *inputs, T *values,      \
                      int *nonfinite)                                           \
{                                                                               \
    ptrdiff_t n = 0, j = 0;                                                     \
    int bad = 0;                                                                \
    for (; j + 8 <= d; j += 8) {                                                \
        BITS group[8], any = 0;                                                 \
        memcpy(group, x + j, sizeof group);                                     \
        for (int i = 0; i < 8; i++)                                             \
            any |= group[i];                                                    \
        if (!any)                                                               \
            continue;                                                           \
        for (int i = 0; i < 8; i++) {                                           \
            inputs[n] = (int32_t)(j + i);                                       \
            values[n] = x[j + i];                                               \
            n += group[i] != 0;                                                 \
            bad |= (group[i] & EXPONENT) == EXPONENT;                           \
        }                                                                       \
    }                                                                           \
    for (; j < d; j++) {                                                        \
        BITS bits;                                                              \
        memcpy(&bits, x + j, sizeof bits);                                      \
        inputs[n] = (int32_t)j;                                                 \
        values[n] = x[j];                                                       \
        n += bits != 0;                                                         \
        bad |= (bits & EXPONENT) == EXPONENT;                                   \
    }                                                                           \
    *nonfinite |= bad;                                                          \
    return n;                                                                   \
}

/* NV accumulators of one vector each, over every non-zero input, starting
 * from dst (add) or from zero; with ahead > 0 (a constant), the lines of the
 * panel's row of the input `ahead` entries on are asked for meanwhile. */
#define MLP_SPARSE_ACCUMULATE(VEC, NV)                                          \
    {                                                                           \
        VEC acc[NV];                                                            \
        for (int v = 0; v < NV; v++)                                            \
            acc[v] = add ? dst[v] : (VEC){0};                                   \
        for (ptrdiff_t e = 0; e < count; e++) {                                 \
            const VEC *w = (const VEC *)(panel + (ptrdiff_t)inputs[e] * ld + u0);  \
            if (ahead > 0 && e + ahead < count) {                               \
                const char *next = (const char *)(panel + (ptrdiff_t)inputs[e + ahead] * ld \
                                                  + u0);                        \
                for (int b = 0; b < NV * (int)sizeof(VEC); b += 64)             \
                    __builtin_prefetch(next + b);                               \
            }                                                                   \
            for (int v = 0; v < NV; v++)                                        \
                acc[v] += values[e] * w[v];                                     \
        }                                                                       \
        for (int v = 0; v < NV; v++)                                            \
            dst[v] = acc[v];                                                    \
    }

/* z[u] = sum_e values[e] * panel[inputs[e] * ld + u] for u < units, or z[u]
 * plus that sum (add); ld is a multiple of LANES and the panel's columns
 * from units to ld are zeros. BLOCK (at most 10) accumulators of LANES
 * units; each unit's sum is added up in the same order whatever the vector
 * width, so the results are the same too. */
#define MLP_DEFINE_SPARSE_ROW(NAME, ATTRIBUTES, T, VEC, LANES, BLOCK)          \
    MLP_DEFINE_SPARSE_ROW_AHEAD(NAME, ATTRIBUTES, T, VEC, LANES, BLOCK, 0)

/* The same, prefetching the panel's rows AHEAD entries on: where the panel
 * is far bigger than the L2 (the full-batch path's 20,000-input panels),
 * each row is a wait on the L3 otherwise. */
#define MLP_DEFINE_SPARSE_ROW_AHEAD(NAME, ATTRIBUTES, T, VEC, LANES, BLOCK, AHEAD) \
ATTRIBUTES                                                                      \
static void NAME(const int32_t *inputs, const T *values, ptrdiff_t count,       \
                 const T *panel, ptrdiff_t ld, ptrdiff_t units, T *z, int add)  \
{                                                                               \
    const ptrdiff_t ahead = AHEAD;                                              \
    const ptrdiff_t step = BLOCK * LANES;                                       \
    VEC tail[10];   /* 10, not BLOCK: no case of the switch below reads past it */ \
    for (ptrdiff_t u0 = 0; u0 < units; u0 += step) {                            \
        ptrdiff_t left = units - u0;                                            \
        VEC *dst = left >= step ? (VEC *)(z + u0) : tail;                       \
        if (left < step && add)                                                 \
            memcpy(tail, z + u0, left * sizeof(T));                             \
        switch (left >= step ? BLOCK : (int)((left + LANES - 1) / LANES)) {     \
        case 10: MLP_SPARSE_ACCUMULATE(VEC, 10) break;                          \
        case 9: MLP_SPARSE_ACCUMULATE(VEC, 9) break;                            \
        case 8: MLP_SPARSE_ACCUMULATE(VEC, 8) break;                            \
        case 7: MLP_SPARSE_ACCUMULATE(VEC, 7) break;                            \
        case 6: MLP_SPARSE_ACCUMULATE(VEC, 6) break;                            \
        case 5: MLP_SPARSE_ACCUMULATE(VEC, 5) break;                            \
        case 4: MLP_SPARSE_ACCUMULATE(VEC, 4) break;                            \
        case 3: MLP_SPARSE_ACCUMULATE(VEC, 3) break;                            \
        case 2: MLP_SPARSE_ACCUMULATE(VEC, 2) break;                            \
        default: MLP_SPARSE_ACCUMULATE(VEC, 1) break;                           \
        }                                                                       \
        if (left < step)                                                        \
            memcpy(z + u0, tail, left * sizeof(T));                             \
    }                                                                           \
}

/* The gradient's rows of a row's non-zero inputs each plus the row's
 * deltas times the input's value, with NV vectors of the deltas held in
 * registers from src. */
#define MLP_SPARSE_SCATTER(T, VEC, NV)                                          \
    {                                                                           \
        VEC held[NV];                                                           \
        for (int v = 0; v < NV; v++)                                            \
            held[v] = src[v];                                                   \
        for (ptrdiff_t e = 0; e < count; e++) {                                 \
            VEC *g = (VEC *)(panel + (ptrdiff_t)inputs[e] * ld + u0);           \
            const T value = values[e];                                          \
            for (int v = 0; v < NV; v++)                                        \
                g[v] += value * held[v];                                        \
        }                                                                       \
    }

/* Products rounded before they are added, as in a portable scalar loop,
 * rather than fused into one rounding (FMA) where the CPU has it: the
 * sparse gradient then has the same bits on every CPU and with every
 * vector width, and the same as the dense one's in the (common) case where
 * that is not fused either. Memory, not arithmetic, bounds the loop. */
#if defined(__clang__)
#define MLP_NO_CONTRACT
#define MLP_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define MLP_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define MLP_NO_CONTRACT_BODY
#else
#define MLP_NO_CONTRACT
#define MLP_NO_CONTRACT_BODY
#endif

/* panel[inputs[e] * ld + u] += values[e] * delta[u] for every e < count and
 * u < units: one row's share of a weight gradient kept by input, its deltas
 * (units,) loaded into registers once for all its non-zero inputs (a scalar
 * loop reloads them for each). ld is a multiple of LANES: a partial vector
 * of units writes the panel's padding columns with zero deltas, which
 * leaves them as they were. Each entry's sum runs over the rows in the
 * order of the calls, whatever the vector width. */
#define MLP_DEFINE_SPARSE_SCATTER(NAME, ATTRIBUTES, T, VEC, LANES, BLOCK)      \
ATTRIBUTES MLP_NO_CONTRACT                                                      \
static void NAME(const int32_t *inputs, const T *values, ptrdiff_t count,       \
                 const T *delta, ptrdiff_t units, T *panel, ptrdiff_t ld)       \
{                                                                               \
    MLP_NO_CONTRACT_BODY                                                        \
    const ptrdiff_t step = BLOCK * LANES;                                       \
    VEC tail[10];   /* 10, not BLOCK: no case of the switch below reads past it */ \
    for (ptrdiff_t u0 = 0; u0 < units; u0 += step) {                            \
        ptrdiff_t left = units - u0;                                            \
        const VEC *src = (const VEC *)(delta + u0);                             \
        if (left < step) {                                                      \
            memset(tail, 0, sizeof tail);                                       \
            memcpy(tail, delta + u0, left * sizeof(T));                         \
            src = tail;                                                         \
        }                                                                       \
        switch (left >= step ? BLOCK : (int)((left + LANES - 1) / LANES)) {     \
        case 10: MLP_SPARSE_SCATTER(T, VEC, 10) break;                          \
        case 9: MLP_SPARSE_SCATTER(T, VEC, 9) break;                            \
        case 8: MLP_SPARSE_SCATTER(T, VEC, 8) break;                            \
        case 7: MLP_SPARSE_SCATTER(T, VEC, 7) break;                            \
        case 6: MLP_SPARSE_SCATTER(T, VEC, 6) break;                            \
        case 5: MLP_SPARSE_SCATTER(T, VEC, 5) break;                            \
        case 4: MLP_SPARSE_SCATTER(T, VEC, 4) break;                            \
        case 3: MLP_SPARSE_SCATTER(T, VEC, 3) break;                            \
        case 2: MLP_SPARSE_SCATTER(T, VEC, 2) break;                            \
        default: MLP_SPARSE_SCATTER(T, VEC, 1) break;                           \
        }                                                                       \
    }                                                                           \
}

/* Inputs per pass of MLP_DEFINE_SPARSE_BLOCK: 48 (58 KB of the panel at
 * 300 units) measured fastest, against 16, 32, 64 and 112. */
#define MLP_SPARSE_CHUNK 48

/* The rows of a block at once: z[r * zld + u] for u < units = the
 * pre-activations of row r from its non-zero entries, count[r] of them at
 * inputs + r * stride (and values + r * stride), in increasing input order.
 * One row at a time, each row's sums read rows spread over the whole panel
 * (950 KB for 784 x 300, about the size of an L2); here every row takes its
 * inputs among the first MLP_SPARSE_CHUNK, then every row those among the
 * next, and so on, so that the part of the panel being read stays in
 * cache, while each row's sums go back to z between chunks. Same sums, in
 * the same order, as SPARSE_ROW; MNIST's test images at 300 units on one
 * core of an AMD EPYC (Zen 4), 128 rows a block: 2.10 us a row against
 * 2.46 us. cursor: rows entries of scratch. */
#define MLP_DEFINE_SPARSE_BLOCK(NAME, T, ROW)                                   \
static void NAME(const int32_t *inputs, const T *values, ptrdiff_t stride,      \
                 const ptrdiff_t *count, ptrdiff_t rows, ptrdiff_t d,           \
                 const T *panel, ptrdiff_t ld, ptrdiff_t units, T *z,           \
                 ptrdiff_t zld, ptrdiff_t *cursor)                              \
{                                                                               \
    for (ptrdiff_t r = 0; r < rows; r++) {                                      \
        memset(z + r * zld, 0, units * sizeof(T));                              \
        cursor[r] = 0;                                                          \
    }                                                                           \
    for (ptrdiff_t j0 = 0; j0 < d; j0 += MLP_SPARSE_CHUNK) {                    \
        for (ptrdiff_t r = 0; r < rows; r++) {                                  \
            const int32_t *row_inputs = inputs + r * stride;                    \
            ptrdiff_t first = cursor[r], last = first;                          \
            while (last < count[r] && row_inputs[last] < j0 + MLP_SPARSE_CHUNK)  \
                last++;                                                         \
            cursor[r] = last;                                                   \
            if (last > first)                                                   \
                ROW(row_inputs + first, values + r * stride + first, last - first,  \
                    panel, ld, units, z + r * zld, 1);                          \
        }                                                                       \
    }                                                                           \
}

/* panel[j * ld + (u - u0)] = w[u * d + j] for u in [u0, u1), j < d, and
 * zeros in the pad columns after those. */
#define MLP_DEFINE_TRANSPOSE(NAME, T, TILE_BODY)                                \
MLP_MULTIVERSION                                                                \
static void NAME(const T *w, ptrdiff_t d, ptrdiff_t u0, ptrdiff_t u1,           \
                 T *panel, ptrdiff_t ld, ptrdiff_t pad)                         \
{                                                                               \
    const ptrdiff_t width = u1 - u0, full = width / 16 * 16;                    \
    ptrdiff_t j0 = 0;                                                           \
    w += u0 * d;                                                                \
    /* 16 units at a time: 16 rows of w read front to back, and each line       \
     * of the panel written whole. */                                           \
    for (ptrdiff_t c0 = 0; c0 + 16 <= width; c0 += 16)                          \
        for (j0 = 0; j0 + 8 <= d; j0 += 8) {                                    \
            TILE_BODY(w + c0 * d + j0, d, panel + j0 * ld + c0, ld);            \
            TILE_BODY(w + (c0 + 8) * d + j0, d, panel + j0 * ld + c0 + 8, ld);  \
        }                                                                       \
    j0 = d / 8 * 8;                                                             \
    for (ptrdiff_t j = 0; j < d; j++) {                                         \
        for (ptrdiff_t c = j < j0 ? full : 0; c < width; c++)                   \
            panel[j * ld + c] = w[c * d + j];                                   \
        for (ptrdiff_t c = width; c < width + pad; c++)                         \
            panel[j * ld + c] = 0;                                              \
    }                                                                           \
}

typedef int32_t mlp_vec8i __attribute__((vector_size(32)));

/* The 8 x 8 block at src (row stride src_ld) into dst (row stride dst_ld),
 * transposed in registers: three rounds of shuffles, as with AVX's unpack,
 * shuffle and permute2f128. 2.7x faster than a tiled scalar loop. */
static inline __attribute__((always_inline)) void
mlp_transpose8x8_f(const float *src, ptrdiff_t src_ld, float *dst, ptrdiff_t dst_ld)
{
    const mlp_vec8i unpack_lo = {0, 8, 1, 9, 4, 12, 5, 13};
    const mlp_vec8i unpack_hi = {2, 10, 3, 11, 6, 14, 7, 15};
    const mlp_vec8i pairs_lo = {0, 1, 8, 9, 4, 5, 12, 13};
    const mlp_vec8i pairs_hi = {2, 3, 10, 11, 6, 7, 14, 15};
    const mlp_vec8i halves_lo = {0, 1, 2, 3, 8, 9, 10, 11};
    const mlp_vec8i halves_hi = {4, 5, 6, 7, 12, 13, 14, 15};
    /* Named values, not arrays: GCC kept arrays on the stack. */
    mlp_vec8f r0 = *(const mlp_vec8f *)(src), r1 = *(const mlp_vec8f *)(src + src_ld);
    mlp_vec8f r2 = *(const mlp_vec8f *)(src + 2 * src_ld);
    mlp_vec8f r3 = *(const mlp_vec8f *)(src + 3 * src_ld);
    mlp_vec8f r4 = *(const mlp_vec8f *)(src + 4 * src_ld);
    mlp_vec8f r5 = *(const mlp_vec8f *)(src + 5 * src_ld);
    mlp_vec8f r6 = *(const mlp_vec8f *)(src + 6 * src_ld);
    mlp_vec8f r7 = *(const mlp_vec8f *)(src + 7 * src_ld);
    mlp_vec8f t0 = __builtin_shuffle(r0, r1, unpack_lo), t1 = __builtin_shuffle(r0, r1, unpack_hi);
    mlp_vec8f t2 = __builtin_shuffle(r2, r3, unpack_lo), t3 = __builtin_shuffle(r2, r3, unpack_hi);
    mlp_vec8f t4 = __builtin_shuffle(r4, r5, unpack_lo), t5 = __builtin_shuffle(r4, r5, unpack_hi);
    mlp_vec8f t6 = __builtin_shuffle(r6, r7, unpack_lo), t7 = __builtin_shuffle(r6, r7, unpack_hi);
    mlp_vec8f s0 = __builtin_shuffle(t0, t2, pairs_lo), s1 = __builtin_shuffle(t0, t2, pairs_hi);
    mlp_vec8f s2 = __builtin_shuffle(t1, t3, pairs_lo), s3 = __builtin_shuffle(t1, t3, pairs_hi);
    mlp_vec8f s4 = __builtin_shuffle(t4, t6, pairs_lo), s5 = __builtin_shuffle(t4, t6, pairs_hi);
    mlp_vec8f s6 = __builtin_shuffle(t5, t7, pairs_lo), s7 = __builtin_shuffle(t5, t7, pairs_hi);
    *(mlp_vec8f *)(dst) = __builtin_shuffle(s0, s4, halves_lo);
    *(mlp_vec8f *)(dst + dst_ld) = __builtin_shuffle(s1, s5, halves_lo);
    *(mlp_vec8f *)(dst + 2 * dst_ld) = __builtin_shuffle(s2, s6, halves_lo);
    *(mlp_vec8f *)(dst + 3 * dst_ld) = __builtin_shuffle(s3, s7, halves_lo);
    *(mlp_vec8f *)(dst + 4 * dst_ld) = __builtin_shuffle(s0, s4, halves_hi);
    *(mlp_vec8f *)(dst + 5 * dst_ld) = __builtin_shuffle(s1, s5, halves_hi);
    *(mlp_vec8f *)(dst + 6 * dst_ld) = __builtin_shuffle(s2, s6, halves_hi);
    *(mlp_vec8f *)(dst + 7 * dst_ld) = __builtin_shuffle(s3, s7, halves_hi);
}

/* The same for doubles, element by element. */
static inline void
mlp_transpose8x8_d(const double *src, ptrdiff_t src_ld, double *dst, ptrdiff_t dst_ld)
{
    for (int i = 0; i < 8; i++)
        for (int c = 0; c < 8; c++)
            dst[i * dst_ld + c] = src[c * src_ld + i];
}

/* The non-zero entries of n rows listed by row (row i's at i * d, count[i]
 * of them: _nonzeros) listed by input instead: input j's are
 * start[j] .. start[j + 1] of rows (which rows) and row_values. A counting
 * sort: the weight gradient then sums, for each input, over the rows in
 * which it is non-zero, in registers. */
#define MLP_DEFINE_BY_INPUT(NAME, T)                                            \
static void NAME(const int32_t *inputs, const T *values, const ptrdiff_t *count,  \
                 ptrdiff_t n, ptrdiff_t d, ptrdiff_t *start, int32_t *rows,     \
                 T *row_values)                                                 \
{                                                                               \
    memset(start, 0, (d + 1) * sizeof *start);                                  \
    for (ptrdiff_t i = 0; i < n; i++)                                           \
        for (ptrdiff_t e = 0; e < count[i]; e++)                                \
            start[inputs[i * d + e] + 1]++;                                     \
    for (ptrdiff_t j = 0; j < d; j++)                                           \
        start[j + 1] += start[j];                                               \
    /* start[j] walks to the end of input j's entries, which is where           \
     * input j + 1's begin: shifted back afterwards. */                         \
    for (ptrdiff_t i = 0; i < n; i++)                                           \
        for (ptrdiff_t e = 0; e < count[i]; e++) {                              \
            ptrdiff_t at = start[inputs[i * d + e]]++;                          \
            rows[at] = (int32_t)i;                                              \
            row_values[at] = values[i * d + e];                                 \
        }                                                                       \
    for (ptrdiff_t j = d; j > 0; j--)                                           \
        start[j] = start[j - 1];                                                \
    start[0] = 0;                                                               \
}

/* The panel's (inputs d, units) gradient back into the parameters' layout:
 * out[u * d + j] = beta * out[u * d + j] + alpha * panel[j * ld + u] for
 * u < units, j < d; beta == 0 writes out without reading it. Blocks of 8 x 8
 * go through TILE (a transpose) into a small buffer first. */
#define MLP_DEFINE_TRANSPOSED_UPDATE(NAME, T, TILE)                             \
MLP_MULTIVERSION                                                                \
static void NAME(const T *panel, ptrdiff_t ld, ptrdiff_t d, ptrdiff_t units,    \
                 T alpha, T beta, T *out)                                       \
{                                                                               \
    T tile[64];                                                                 \
    ptrdiff_t u0 = 0, j0, j;                                                    \
    for (; u0 + 8 <= units; u0 += 8) {                                          \
        for (j0 = 0; j0 + 8 <= d; j0 += 8) {                                    \
            TILE(panel + j0 * ld + u0, ld, tile, 8);                            \
            for (int u = 0; u < 8; u++) {                                       \
                T *o = out + (u0 + u) * d + j0;                                 \
                if (beta == 0)                                                  \
                    for (int c = 0; c < 8; c++)                                 \
                        o[c] = alpha * tile[u * 8 + c];                         \
                else                                                            \
                    for (int c = 0; c < 8; c++)                                 \
                        o[c] = beta * o[c] + alpha * tile[u * 8 + c];           \
            }                                                                   \
        }                                                                       \
        for (j = j0; j < d; j++)                                                \
            for (ptrdiff_t u = u0; u < u0 + 8; u++)                             \
                out[u * d + j] = (beta == 0 ? 0 : beta * out[u * d + j])        \
                                 + alpha * panel[j * ld + u];                   \
    }                                                                           \
    for (; u0 < units; u0++)                                                    \
        for (j = 0; j < d; j++)                                                 \
            out[u0 * d + j] = (beta == 0 ? 0 : beta * out[u0 * d + j])          \
                              + alpha * panel[j * ld + u0];                     \
}

MLP_DEFINE_COMPRESS(mlp_nonzeros_scalar_f, float, uint32_t, UINT32_C(0x7f800000))
MLP_DEFINE_COMPRESS(mlp_nonzeros_d, double, uint64_t, UINT64_C(0x7ff0000000000000))

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLP_SPARSE_AVX2 1
#include <immintrin.h>

/* Row m: the lanes whose bit is set in m, in order, then zeros (filled by
 * mlp_sparse_init). */
static uint8_t mlp_kept_lanes[256][8];
static int mlp_has_avx2;

/* The float rows compressed 8 entries at a time, without a branch: the
 * group's non-zero mask picks a row of mlp_kept_lanes, which moves the
 * kept values and their indices to the front of two vectors that are
 * stored whole; the count moves by the mask's popcount. The stores write
 * 8 entries at n <= j, so never past entry d - 1. 130 ns a row of MNIST
 * against 475 ns for mlp_nonzeros_scalar_f (one core of an AMD EPYC, Zen 4),
 * whose groups of 8 branch on being all zero and whose entries each wait
 * on the count. */
__attribute__((target("avx2,popcnt")))
static ptrdiff_t mlp_nonzeros_avx2_f(const float *x, ptrdiff_t d, int32_t *inputs, float *values,
                                    int *nonfinite)
{
    __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8), zero = _mm256_setzero_si256();
    const __m256i exponent = _mm256_set1_epi32(0x7f800000);
    __m256i bad = zero;
    ptrdiff_t n = 0, j = 0;
    for (; j + 8 <= d; j += 8) {
        __m256i bits = _mm256_loadu_si256((const __m256i *)(x + j));
        unsigned zeros = (unsigned)_mm256_movemask_ps(
            _mm256_castsi256_ps(_mm256_cmpeq_epi32(bits, zero)));
        unsigned kept = ~zeros & 0xffu;
        __m256i lanes = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64((const __m128i *)mlp_kept_lanes[kept]));
        _mm256_storeu_si256((__m256i *)(inputs + n), _mm256_permutevar8x32_epi32(index, lanes));
        _mm256_storeu_si256((__m256i *)(values + n), _mm256_permutevar8x32_epi32(bits, lanes));
        n += __builtin_popcount(kept);
        index = _mm256_add_epi32(index, eight);
        bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(bits, exponent), exponent));
    }
    if (!_mm256_testz_si256(bad, bad))
        *nonfinite = 1;
    /* The last d % 8 entries through the portable loop, their indices then
     * moved past the j entries before them. */
    ptrdiff_t tail = mlp_nonzeros_scalar_f(x + j, d - j, inputs + n, values + n, nonfinite);
    for (ptrdiff_t e = n; e < n + tail; e++)
        inputs[e] += (int32_t)j;
    return n + tail;
}
#endif

/* x (d,) float -> its non-zero entries (MLP_DEFINE_COMPRESS). */
static ptrdiff_t mlp_nonzeros_f(const float *x, ptrdiff_t d, int32_t *inputs, float *values,
                                int *nonfinite)
{
#ifdef MLP_SPARSE_AVX2
    if (mlp_has_avx2)
        return mlp_nonzeros_avx2_f(x, d, inputs, values, nonfinite);
#endif
    return mlp_nonzeros_scalar_f(x, d, inputs, values, nonfinite);
}

MLP_DEFINE_SPARSE_ROW(mlp_sparse_row_narrow_f, MLP_MULTIVERSION, float, mlp_vec8f, 8,
                      MLP_SPARSE_BLOCK)
MLP_DEFINE_SPARSE_ROW(mlp_sparse_row_d, MLP_MULTIVERSION, double, mlp_vec4d, 4, MLP_SPARSE_BLOCK)

#ifdef MLP_SPARSE_AVX2
typedef float mlp_vec16f __attribute__((vector_size(64), aligned(4)));
/* 16 floats to a vector (ld, a whole number of cache lines, is a multiple
 * of 16). One core of an AMD EPYC (Zen 4), MNIST's test images, compressing
 * included: 150 units 1.29-1.36 us a row against 1.41-1.45 us with 8 vectors
 * of 8, 300 units 2.30 against 2.46-2.67 us. */
MLP_DEFINE_SPARSE_ROW(mlp_sparse_row_wide_f, __attribute__((target("avx512f"))), float,
                      mlp_vec16f, 16, MLP_SPARSE_WIDE_BLOCK)
#endif

/* The float row sums (MLP_DEFINE_SPARSE_ROW), 16 floats to a vector where
 * the CPU has AVX-512 and mlp_sparse_wide is set (by mlp_sparse_init). */
static int mlp_sparse_wide;

static void mlp_sparse_row_f(const int32_t *inputs, const float *values, ptrdiff_t count,
                             const float *panel, ptrdiff_t ld, ptrdiff_t units, float *z,
                             int add)
{
#ifdef MLP_SPARSE_AVX2
    if (mlp_sparse_wide) {
        mlp_sparse_row_wide_f(inputs, values, count, panel, ld, units, z, add);
        return;
    }
#endif
    mlp_sparse_row_narrow_f(inputs, values, count, panel, ld, units, z, add);
}

MLP_DEFINE_SPARSE_SCATTER(mlp_sparse_scatter_narrow_f, MLP_MULTIVERSION, float, mlp_vec8f, 8,
                          MLP_SPARSE_BLOCK)
MLP_DEFINE_SPARSE_SCATTER(mlp_sparse_scatter_narrow_d, MLP_MULTIVERSION, double, mlp_vec4d, 4,
                          MLP_SPARSE_BLOCK)
#ifdef MLP_SPARSE_AVX2
typedef double mlp_vec8d __attribute__((vector_size(64), aligned(8)));
MLP_DEFINE_SPARSE_SCATTER(mlp_sparse_scatter_wide_f, __attribute__((target("avx512f"))), float,
                          mlp_vec16f, 16, MLP_SPARSE_WIDE_BLOCK)
MLP_DEFINE_SPARSE_SCATTER(mlp_sparse_scatter_wide_d, __attribute__((target("avx512f"))), double,
                          mlp_vec8d, 8, MLP_SPARSE_WIDE_BLOCK)
#endif

/* MLP_DEFINE_SPARSE_SCATTER, 16 floats (8 doubles) to a vector where
 * mlp_sparse_wide is set; ld a multiple of 16 floats (8 doubles). */
static void mlp_sparse_scatter_f(const int32_t *inputs, const float *values, ptrdiff_t count,
                                 const float *delta, ptrdiff_t units, float *panel, ptrdiff_t ld)
{
#ifdef MLP_SPARSE_AVX2
    if (mlp_sparse_wide) {
        mlp_sparse_scatter_wide_f(inputs, values, count, delta, units, panel, ld);
        return;
    }
#endif
    mlp_sparse_scatter_narrow_f(inputs, values, count, delta, units, panel, ld);
}

static void mlp_sparse_scatter_d(const int32_t *inputs, const double *values, ptrdiff_t count,
                                 const double *delta, ptrdiff_t units, double *panel,
                                 ptrdiff_t ld)
{
#ifdef MLP_SPARSE_AVX2
    if (mlp_sparse_wide) {
        mlp_sparse_scatter_wide_d(inputs, values, count, delta, units, panel, ld);
        return;
    }
#endif
    mlp_sparse_scatter_narrow_d(inputs, values, count, delta, units, panel, ld);
}

/* The row sums of MLP_DEFINE_SPARSE_ROW with each product rounded before
 * it is added (MLP_NO_CONTRACT), for the first layer's weight gradient by
 * input: panel row j of the gradient is the sum, over the rows in which
 * input j is non-zero (inputs: those rows, in order), of the value times
 * the row's deltas (panel: the deltas, one row of ld per row). The same
 * sums, in the same order and rounding, as MLP_DEFINE_SPARSE_SCATTER's; a
 * gradient row is written once, where the scatter reads and writes a row
 * for every non-zero. */
MLP_DEFINE_SPARSE_ROW_AHEAD(mlp_sparse_gather_narrow_f, MLP_MULTIVERSION MLP_NO_CONTRACT, float,
                            mlp_vec8f, 8, MLP_SPARSE_BLOCK, MLP_SPARSE_AHEAD)
MLP_DEFINE_SPARSE_ROW_AHEAD(mlp_sparse_gather_d, MLP_MULTIVERSION MLP_NO_CONTRACT, double,
                            mlp_vec4d, 4, MLP_SPARSE_BLOCK, MLP_SPARSE_AHEAD)
/* The first layer's sums of the full-batch path (CSR rows, a big panel). */
MLP_DEFINE_SPARSE_ROW_AHEAD(mlp_sparse_row_ahead_narrow_f, MLP_MULTIVERSION, float, mlp_vec8f, 8,
                            MLP_SPARSE_BLOCK, MLP_SPARSE_AHEAD)
MLP_DEFINE_SPARSE_ROW_AHEAD(mlp_sparse_row_ahead_d, MLP_MULTIVERSION, double, mlp_vec4d, 4,
                            MLP_SPARSE_BLOCK, MLP_SPARSE_AHEAD)
#ifdef MLP_SPARSE_AVX2
MLP_DEFINE_SPARSE_ROW_AHEAD(mlp_sparse_gather_wide_f,
                            __attribute__((target("avx512f"))) MLP_NO_CONTRACT, float,
                            mlp_vec16f, 16, MLP_SPARSE_WIDE_BLOCK, MLP_SPARSE_AHEAD)
MLP_DEFINE_SPARSE_ROW_AHEAD(mlp_sparse_row_ahead_wide_f, __attribute__((target("avx512f"))),
                            float, mlp_vec16f, 16, MLP_SPARSE_WIDE_BLOCK, MLP_SPARSE_AHEAD)
#endif

static void mlp_sparse_row_ahead_f(const int32_t *inputs, const float *values, ptrdiff_t count,
                                   const float *panel, ptrdiff_t ld, ptrdiff_t units, float *z)
{
#ifdef MLP_SPARSE_AVX2
    if (mlp_sparse_wide) {
        mlp_sparse_row_ahead_wide_f(inputs, values, count, panel, ld, units, z, 0);
        return;
    }
#endif
    mlp_sparse_row_ahead_narrow_f(inputs, values, count, panel, ld, units, z, 0);
}

static void mlp_sparse_gather_f(const int32_t *inputs, const float *values, ptrdiff_t count,
                                const float *panel, ptrdiff_t ld, ptrdiff_t units, float *z)
{
#ifdef MLP_SPARSE_AVX2
    if (mlp_sparse_wide) {
        mlp_sparse_gather_wide_f(inputs, values, count, panel, ld, units, z, 0);
        return;
    }
#endif
    mlp_sparse_gather_narrow_f(inputs, values, count, panel, ld, units, z, 0);
}

/* Whether the float sums take 16-float vectors: wide = 1 asks for them
 * (granted only where the CPU has AVX-512F), 0 for 8-float vectors; returns
 * the setting now in force. For the tests and benchmarks, which compare the
 * two. */
static int mlp_sparse_set_wide(int wide)
{
#ifdef MLP_SPARSE_AVX2
    mlp_sparse_wide = wide && __builtin_cpu_supports("avx512f");
#else
    (void)wide;
#endif
    return mlp_sparse_wide;
}

MLP_DEFINE_SPARSE_BLOCK(mlp_sparse_block_f, float, mlp_sparse_row_f)
MLP_DEFINE_SPARSE_BLOCK(mlp_sparse_block_d, double, mlp_sparse_row_d)
MLP_DEFINE_TRANSPOSE(mlp_transpose_units_f, float, mlp_transpose8x8_f)
MLP_DEFINE_TRANSPOSE(mlp_transpose_units_d, double, mlp_transpose8x8_d)
MLP_DEFINE_BY_INPUT(mlp_by_input_f, float)
MLP_DEFINE_BY_INPUT(mlp_by_input_d, double)
MLP_DEFINE_TRANSPOSED_UPDATE(mlp_transposed_update_f, float, mlp_transpose8x8_f)
MLP_DEFINE_TRANSPOSED_UPDATE(mlp_transposed_update_d, double, mlp_transpose8x8_d)

/* Called once, when the module loads: fills the tables the compressions
 * use and notes which the CPU runs. */
static void mlp_sparse_init(void)
{
#ifdef MLP_SPARSE_AVX2
    for (int mask = 0; mask < 256; mask++) {
        int kept = 0;
        for (int lane = 0; lane < 8; lane++)
            if (mask >> lane & 1)
                mlp_kept_lanes[mask][kept++] = (uint8_t)lane;
        for (; kept < 8; kept++)
            mlp_kept_lanes[mask][kept] = 0;
    }
    __builtin_cpu_init();
    mlp_has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#endif
    mlp_sparse_set_wide(1);
}

#endif
