/* Dropout masks from a counter-based generator.
 *
 * Whether unit j of sample i is kept at layer l in step t is a pure function
 * of (seed, t, l, i, j): a keyed hash of the counter i * width + j. Workers
 * that split a layer's units or a batch's rows differently compute the same
 * masks, so a run gives the same result on any number of threads (up to
 * rounding), and the backward pass recomputes the forward pass's mask
 * instead of storing it. The hash is integer multiply-xorshift, so the loops
 * below vectorise; they are compiled for AVX2 too (MLP_MULTIVERSION), whose
 * 8-lane 32-bit multiply the baseline's SSE2 lacks.
 */
#ifndef MLP_DROPOUT_H
#define MLP_DROPOUT_H

#include <stddef.h>
#include <stdint.h>

#include "_fastexp.h"

typedef struct {
    uint32_t first;
    uint32_t second;
} mlp_mask_key;

/* Chris Wellons' lowbias32: a bijection on 32 bits with good avalanche. */
static inline uint32_t mlp_hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline uint64_t mlp_splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static inline mlp_mask_key mlp_mask_key_for(uint64_t seed, uint64_t step, uint32_t layer)
{
    uint64_t h = mlp_splitmix64(mlp_splitmix64(mlp_splitmix64(seed) ^ step) ^ layer);
    mlp_mask_key key = {(uint32_t)h, (uint32_t)(h >> 32)};
    return key;
}

/* 1 when the counter's unit is kept; drop_threshold = round(p * 2^24). */
static inline uint32_t mlp_kept(mlp_mask_key key, uint32_t counter, uint32_t drop_threshold)
{
    uint32_t h = mlp_hash32(mlp_hash32(counter ^ key.first) + key.second);
    return (h >> 8) >= drop_threshold;
}

/* values[i * sample_stride + j * unit_stride] *= kept(i, j) ? scale : 0 for
 * samples i in [i0, i1) and units j in [u0, u1) of a layer `width` units
 * wide, values pointing at sample 0, unit 0. One of the strides is 1; the
 * loop runs along it so that it vectorises. */
#define MLP_DEFINE_DROPOUT(NAME, T)                                                   \
MLP_MULTIVERSION                                                                      \
static void NAME(T *values, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t u0, ptrdiff_t u1,  \
                 ptrdiff_t sample_stride, ptrdiff_t unit_stride, ptrdiff_t width,     \
                 mlp_mask_key key, uint32_t drop_threshold, T scale)                  \
{                                                                                     \
    ptrdiff_t i, j;                                                                   \
    if (unit_stride == 1) {                                                           \
        for (i = i0; i < i1; i++) {                                                   \
            T *row = values + i * sample_stride;                                      \
            uint32_t base = (uint32_t)(i * width);                                    \
            for (j = u0; j < u1; j++)                                                 \
                row[j] = mlp_kept(key, base + (uint32_t)j, drop_threshold)            \
                             ? row[j] * scale : (T)0;                                 \
        }                                                                             \
    } else {                                                                          \
        for (j = u0; j < u1; j++) {                                                   \
            T *column = values + j * unit_stride;                                     \
            for (i = i0; i < i1; i++)                                                 \
                column[i] = mlp_kept(key, (uint32_t)(i * width + j), drop_threshold)  \
                                ? column[i] * scale : (T)0;                           \
        }                                                                             \
    }                                                                                 \
}

MLP_DEFINE_DROPOUT(mlp_dropoutf, float)
MLP_DEFINE_DROPOUT(mlp_dropout, double)

/* Input dropout on a list of sample i's non-zero inputs (inputs, values,
 * count of them, the first layer's counters starting at base = i * width):
 * the dropped ones removed, the kept ones' values times scale, in place;
 * returns the new count. The same list as mlp_dropout on the whole row and
 * a new list of its non-zero entries (scale >= 1 keeps a non-zero value
 * non-zero), with a mask for the listed inputs only: about a fifth of an
 * image's. Masks 64 entries at a time into kept, a loop that vectorises,
 * then the kept entries moved forward. */
#define MLP_DEFINE_DROP_LISTED(NAME, T)                                               \
MLP_MULTIVERSION                                                                      \
static ptrdiff_t NAME(int32_t *inputs, T *values, ptrdiff_t count, uint32_t base,    \
                      mlp_mask_key key, uint32_t drop_threshold, T scale)             \
{                                                                                     \
    ptrdiff_t n = 0;                                                                  \
    for (ptrdiff_t e0 = 0; e0 < count; e0 += 64) {                                    \
        ptrdiff_t block = count - e0 < 64 ? count - e0 : 64;                          \
        uint32_t kept[64];                                                            \
        for (ptrdiff_t e = 0; e < block; e++)                                         \
            kept[e] = mlp_kept(key, base + (uint32_t)inputs[e0 + e], drop_threshold); \
        for (ptrdiff_t e = 0; e < block; e++) {                                       \
            inputs[n] = inputs[e0 + e];                                               \
            values[n] = values[e0 + e] * scale;                                       \
            n += kept[e];                                                             \
        }                                                                             \
    }                                                                                 \
    return n;                                                                         \
}

MLP_DEFINE_DROP_LISTED(mlp_drop_listedf, float)
MLP_DEFINE_DROP_LISTED(mlp_drop_listed, double)

#endif
