/* Random distortions of square float32 images: affine maps and Simard et
 * al.'s (2003) elastic deformations, resampled bilinearly in one pass.
 *
 * An output pixel p = (x, y) (x the column, y the row, both in pixels, the
 * image centre c = (side-1)/2) takes its value from the source point
 *
 *     s(p) = A (p - c) + c + o + d(p)
 *
 * where A, o are the inverse of the drawn affine map (content rotated,
 * scaled, sheared and shifted about the centre) and d is the smoothed
 * random displacement field. Composing the two into one source point costs
 * one resampling instead of two, and does not blur the image twice.
 * Bilinear interpolation treats every pixel outside the image as 0
 * (background), as scipy.ndimage.map_coordinates(order=1,
 * mode='grid-constant') does.
 *
 * Randomness is counter-based: every number an image uses is a hash of
 * (seed, sample id, draw index) (SplitMix64's finaliser over a Weyl
 * sequence, keyed twice). An image's distortion therefore depends on its
 * seed and sample id alone, not on the thread that computes it or on the
 * other images of the call.
 *
 * Everything here is plain C without the GIL and without allocation: the
 * caller owns the plan's tables and each thread's workspace
 * (mlp_aug_work_floats). mlp/_augment.pyx wraps it for Python; the
 * training loop can include it to distort rows as it gathers them.
 */
#ifndef MLP_AUGMENT_H
#define MLP_AUGMENT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The loops that vectorise (resampling arithmetic, coordinates, random
 * fields) are built for baseline x86-64 (SSE2) and for AVX2+FMA, and the
 * loader picks the version the CPU runs (GCC function multi-versioning),
 * so one build runs everywhere and fast where it can. The random fields
 * also get an AVX-512 version: SplitMix64 multiplies 64-bit integers,
 * which only AVX-512 does in vector registers (4x faster than scalar
 * here). Results differ between versions by float rounding only (FMA).
 * The smoothing passes dispatch by hand (mlp_aug_smooth_columns): they
 * need different vector widths in their source. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(MLP_AUG_BASELINE_ONLY)
#define MLP_AUG_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define MLP_AUG_CLONES_INT64 \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MLP_AUG_CLONES
#define MLP_AUG_CLONES_INT64
#endif

/* Field rows are padded to a multiple of this many floats (28 -> 32), so
 * that the smoothing passes run on whole vectors. */
#define MLP_AUG_LANES 8

/* Draw indices 0..MLP_AUG_AFFINE_DRAWS-1 feed the affine map; the
 * displacement field of pixel k uses draw MLP_AUG_AFFINE_DRAWS + k. */
#define MLP_AUG_AFFINE_DRAWS 3

#define MLP_AUG_GAMMA 0x9e3779b97f4a7c15ULL

typedef struct {
    int side;            /* S: images are S x S, row-major */
    int stride;          /* P: row stride of the field buffers, S rounded up to MLP_AUG_LANES */
    /* Largest magnitudes of the affine draws; each draw is uniform in
     * [-max, max] (the scale factor in [1 - scale, 1 + scale]). */
    double rotation;     /* radians */
    double scale;
    double shear;        /* radians, horizontal shear */
    double shift;        /* pixels, drawn separately for x and y */
    int affine;          /* draw an affine map at all */
    float alpha;         /* displacement scale, pixels; 0: no elastic field */
    int elastic;
    /* The Gaussian smoothing as an S x S matrix with 'reflect' boundaries
     * folded in: smoothing a column is gauss @ column. Row i's nonzero
     * entries are columns band_lo[i] .. band_hi[i]-1. */
    const float *gauss;
    const int *band_lo;
    const int *band_hi;
} mlp_aug_plan;


/* ---------------------------------------------------------------------------
 * Counter-based random numbers
 * ------------------------------------------------------------------------- */

static inline uint64_t mlp_aug_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The key of one image: a hash of the seed, then of the sample id. */
static inline uint64_t mlp_aug_key(uint64_t seed, uint64_t sample_id)
{
    uint64_t seed_key = mlp_aug_mix64(seed ^ 0x6a09e667f3bcc909ULL);
    return mlp_aug_mix64(seed_key + (sample_id + 1) * MLP_AUG_GAMMA);
}

/* 64 random bits: draw `index` of the image with this key. */
static inline uint64_t mlp_aug_bits(uint64_t key, uint64_t index)
{
    return mlp_aug_mix64(key + (index + 1) * MLP_AUG_GAMMA);
}

/* 32 random bits as a float uniform in [-1, 1]. */
static inline float mlp_aug_signed_unit(uint32_t bits)
{
    return (float)(int32_t)bits * (1.0f / 2147483648.0f);
}


/* ---------------------------------------------------------------------------
 * Plan: the Gaussian matrix
 * ------------------------------------------------------------------------- */

/* scipy.ndimage's 'reflect' (d c b a | a b c d | d c b a) for any index. */
static inline int mlp_aug_reflect(long i, int n)
{
    long period = 2 * (long)n;
    i %= period;
    if (i < 0)
        i += period;
    return (int)(i < n ? i : period - 1 - i);
}

/* The kernel radius scipy.ndimage.gaussian_filter uses (truncate = 4). */
static inline int mlp_aug_radius(double sigma)
{
    return (int)(4.0 * sigma + 0.5);
}

/* Fill gauss (S*S floats), band_lo, band_hi (S ints each) for a Gaussian of
 * width sigma; weights needs 2*mlp_aug_radius(sigma)+1 doubles. sigma == 0
 * gives the identity, like gaussian_filter. (Inline only so that modules
 * which include this file without building plans compile it silently.) */
static inline void mlp_aug_gauss_matrix(int side, double sigma, float *gauss,
                                 int *band_lo, int *band_hi, double *weights)
{
    int radius = mlp_aug_radius(sigma);
    int i, k, m;
    double total = 0.0;
    /* Folding sums the weights in double, then rounds each entry once. */
    double *row = weights + 2 * radius + 1;
    for (m = -radius; m <= radius; m++) {
        weights[m + radius] = sigma > 0 ? exp(-0.5 * (double)m * m / (sigma * sigma)) : 1.0;
        total += weights[m + radius];
    }
    for (m = 0; m <= 2 * radius; m++)
        weights[m] /= total;
    for (i = 0; i < side; i++) {
        for (k = 0; k < side; k++)
            row[k] = 0.0;
        for (m = -radius; m <= radius; m++)
            row[mlp_aug_reflect((long)i + m, side)] += weights[m + radius];
        band_lo[i] = side;
        band_hi[i] = 0;
        for (k = 0; k < side; k++) {
            gauss[(long)i * side + k] = (float)row[k];
            if (row[k] != 0.0) {
                if (k < band_lo[i])
                    band_lo[i] = k;
                band_hi[i] = k + 1;
            }
        }
    }
}

/* Doubles mlp_aug_gauss_matrix needs as its `weights` scratch. */
static inline long mlp_aug_gauss_scratch(int side, double sigma)
{
    return 2L * mlp_aug_radius(sigma) + 1 + side;
}

static inline int mlp_aug_stride(int side)
{
    return (side + MLP_AUG_LANES - 1) / MLP_AUG_LANES * MLP_AUG_LANES;
}

/* Floats of one field buffer: P x P, so that the transposes can work on
 * whole 4x4 blocks (only the first S rows and columns are the field; the
 * rest stays 0). */
static inline long mlp_aug_field_floats(int side)
{
    return (long)mlp_aug_stride(side) * mlp_aug_stride(side);
}

/* Floats of workspace one thread needs for images of this side. */
static inline long mlp_aug_work_floats(int side)
{
    long padded = (long)(side + 3) * (side + 3);
    return 4 * mlp_aug_field_floats(side) + padded;
}


/* ---------------------------------------------------------------------------
 * Gaussian smoothing of a field
 * ------------------------------------------------------------------------- */

/* out (S x P) = gauss (S x S, banded) @ in (S x P): every column of `in`
 * smoothed. Written as a sum of whole rows of `in`, so the inner loop is a
 * multiply-add over contiguous floats, with the sums of 32 columns (a whole
 * 28x28 row) held in registers in GCC's vector types. (Left to itself, gcc
 * spills a float[32] accumulator to the stack on every iteration.)
 *
 * There are two versions, picked at run time: 4-float vectors (SSE2, NEON)
 * on one output row, and on x86-64 CPUs with AVX2 and FMA, 8-float vectors
 * on two output rows at a time, which needs eight sums to hide the
 * multiply-add latency and loads each row of `in` once for both. Their
 * results differ by float rounding only. */
#if defined(__GNUC__)
typedef float mlp_aug_v4 __attribute__((vector_size(16), aligned(4), may_alias));

static void mlp_aug_smooth_columns_v4(const mlp_aug_plan *plan, const float *in, float *out)
{
    const int S = plan->side, P = plan->stride;
    int i, k, c0;
    for (i = 0; i < S; i++) {
        const float *g = plan->gauss + (long)i * S;
        const int lo = plan->band_lo[i], hi = plan->band_hi[i];
        mlp_aug_v4 *o = (mlp_aug_v4 *)(out + (long)i * P);
        c0 = 0;
        for (; c0 + 32 <= P; c0 += 32) {
            mlp_aug_v4 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            mlp_aug_v4 a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
            for (k = lo; k < hi; k++) {
                const float w = g[k];
                const mlp_aug_v4 *r = (const mlp_aug_v4 *)(in + (long)k * P + c0);
                a0 += w * r[0];
                a1 += w * r[1];
                a2 += w * r[2];
                a3 += w * r[3];
                a4 += w * r[4];
                a5 += w * r[5];
                a6 += w * r[6];
                a7 += w * r[7];
            }
            o[c0 / 4] = a0;
            o[c0 / 4 + 1] = a1;
            o[c0 / 4 + 2] = a2;
            o[c0 / 4 + 3] = a3;
            o[c0 / 4 + 4] = a4;
            o[c0 / 4 + 5] = a5;
            o[c0 / 4 + 6] = a6;
            o[c0 / 4 + 7] = a7;
        }
        for (; c0 < P; c0 += 4) {
            mlp_aug_v4 a = {0};
            for (k = lo; k < hi; k++)
                a += g[k] * *(const mlp_aug_v4 *)(in + (long)k * P + c0);
            o[c0 / 4] = a;
        }
    }
}
#else
static void mlp_aug_smooth_columns_v4(const mlp_aug_plan *plan, const float *in, float *out)
{
    const int S = plan->side, P = plan->stride;
    int i, k, t;
    for (i = 0; i < S; i++) {
        const float *g = plan->gauss + (long)i * S;
        float *o = out + (long)i * P;
        for (t = 0; t < P; t++)
            o[t] = 0.0f;
        for (k = plan->band_lo[i]; k < plan->band_hi[i]; k++)
            for (t = 0; t < P; t++)
                o[t] += g[k] * in[(long)k * P + t];
    }
}
#endif

#if defined(__GNUC__) && defined(__x86_64__) && !defined(MLP_AUG_BASELINE_ONLY)
#define MLP_AUG_HAVE_V8 1
typedef float mlp_aug_v8 __attribute__((vector_size(32), aligned(4), may_alias));

__attribute__((target("avx2,fma")))
static void mlp_aug_smooth_columns_v8(const mlp_aug_plan *plan, const float *in, float *out)
{
    const int S = plan->side, P = plan->stride;
    const float *gauss = plan->gauss;
    int i, k, c0;
    for (i = 0; i < S; i += 2) {
        /* With S odd, the last pair is the last row twice. */
        const int i1 = i + 1 < S ? i + 1 : i;
        const float *g0 = gauss + (long)i * S, *g1 = gauss + (long)i1 * S;
        /* The union of the two bands: outside its own band a row's weights are 0. */
        const int lo = plan->band_lo[i] < plan->band_lo[i1] ? plan->band_lo[i] : plan->band_lo[i1];
        const int hi = plan->band_hi[i] > plan->band_hi[i1] ? plan->band_hi[i] : plan->band_hi[i1];
        mlp_aug_v8 *o0 = (mlp_aug_v8 *)(out + (long)i * P);
        mlp_aug_v8 *o1 = (mlp_aug_v8 *)(out + (long)i1 * P);
        c0 = 0;
        for (; c0 + 32 <= P; c0 += 32) {
            mlp_aug_v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            mlp_aug_v8 b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
            for (k = lo; k < hi; k++) {
                const float w0 = g0[k], w1 = g1[k];
                const mlp_aug_v8 *r = (const mlp_aug_v8 *)(in + (long)k * P + c0);
                const mlp_aug_v8 r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
                a0 += w0 * r0;
                a1 += w0 * r1;
                a2 += w0 * r2;
                a3 += w0 * r3;
                b0 += w1 * r0;
                b1 += w1 * r1;
                b2 += w1 * r2;
                b3 += w1 * r3;
            }
            /* Row i1 first: when it is row i again, row i's store wins (same sums). */
            o1[c0 / 8] = b0;
            o1[c0 / 8 + 1] = b1;
            o1[c0 / 8 + 2] = b2;
            o1[c0 / 8 + 3] = b3;
            o0[c0 / 8] = a0;
            o0[c0 / 8 + 1] = a1;
            o0[c0 / 8 + 2] = a2;
            o0[c0 / 8 + 3] = a3;
        }
        for (; c0 < P; c0 += 8) {
            mlp_aug_v8 a = {0}, b = {0};
            for (k = lo; k < hi; k++) {
                const mlp_aug_v8 r = *(const mlp_aug_v8 *)(in + (long)k * P + c0);
                a += g0[k] * r;
                b += g1[k] * r;
            }
            o1[c0 / 8] = b;
            o0[c0 / 8] = a;
        }
    }
}
#endif

/* 0 makes every CPU take the 4-float version (the tests use it to check
 * both versions on one machine). */
static int mlp_aug_allow_v8 = 1;

static void mlp_aug_smooth_columns(const mlp_aug_plan *plan, const float *in, float *out)
{
#ifdef MLP_AUG_HAVE_V8
    if (mlp_aug_allow_v8 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        mlp_aug_smooth_columns_v8(plan, in, out);
        return;
    }
#endif
    mlp_aug_smooth_columns_v4(plan, in, out);
}

/* out[j][i] = scale * in[i][j] for i, j < S (row stride P in both), in
 * 4x4 blocks of registers: the rows and columns up to S rounded up to 4
 * are copied too, so they must be 0 in `in` (they are: see
 * mlp_aug_work_init) and both buffers need that many rows. */
#if defined(__GNUC__)
#if defined(__clang__)
#define MLP_AUG_SHUFFLE(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
typedef int mlp_aug_v4i __attribute__((vector_size(16)));
#define MLP_AUG_SHUFFLE(a, b, i, j, k, l) __builtin_shuffle(a, b, (mlp_aug_v4i){i, j, k, l})
#endif
static void mlp_aug_transpose(int S, int P, const float *in, float *out, float scale)
{
    const int n = (S + 3) & ~3;
    int i, j;
    for (i = 0; i < n; i += 4)
        for (j = 0; j < n; j += 4) {
            const float *a = in + (long)i * P + j;
            float *b = out + (long)j * P + i;
            const mlp_aug_v4 r0 = *(const mlp_aug_v4 *)a, r1 = *(const mlp_aug_v4 *)(a + P);
            const mlp_aug_v4 r2 = *(const mlp_aug_v4 *)(a + 2 * P);
            const mlp_aug_v4 r3 = *(const mlp_aug_v4 *)(a + 3 * P);
            const mlp_aug_v4 t0 = MLP_AUG_SHUFFLE(r0, r1, 0, 4, 1, 5);
            const mlp_aug_v4 t1 = MLP_AUG_SHUFFLE(r2, r3, 0, 4, 1, 5);
            const mlp_aug_v4 t2 = MLP_AUG_SHUFFLE(r0, r1, 2, 6, 3, 7);
            const mlp_aug_v4 t3 = MLP_AUG_SHUFFLE(r2, r3, 2, 6, 3, 7);
            *(mlp_aug_v4 *)b = scale * MLP_AUG_SHUFFLE(t0, t1, 0, 1, 4, 5);
            *(mlp_aug_v4 *)(b + P) = scale * MLP_AUG_SHUFFLE(t0, t1, 2, 3, 6, 7);
            *(mlp_aug_v4 *)(b + 2 * P) = scale * MLP_AUG_SHUFFLE(t2, t3, 0, 1, 4, 5);
            *(mlp_aug_v4 *)(b + 3 * P) = scale * MLP_AUG_SHUFFLE(t2, t3, 2, 3, 6, 7);
        }
}
#else
static void mlp_aug_transpose(int S, int P, const float *in, float *out, float scale)
{
    int i, j;
    for (i = 0; i < S; i++)
        for (j = 0; j < S; j++)
            out[(long)j * P + i] = scale * in[(long)i * P + j];
}
#endif

/* field <- scale * Gaussian-smoothed field, along both axes; field and
 * tmp are P x P buffers (mlp_aug_field_floats). Smoothing rows is smoothing the columns of the transpose,
 * so both passes are the vectorised column pass. */
static void mlp_aug_smooth(const mlp_aug_plan *plan, float *field, float *tmp, float scale)
{
    mlp_aug_smooth_columns(plan, field, tmp);
    mlp_aug_transpose(plan->side, plan->stride, tmp, field, 1.0f);
    mlp_aug_smooth_columns(plan, field, tmp);
    mlp_aug_transpose(plan->side, plan->stride, tmp, field, scale);
}


/* ---------------------------------------------------------------------------
 * Source coordinates and bilinear resampling
 * ------------------------------------------------------------------------- */

/* sx, sy (S x P) <- A (p - c) + c + o (+ dx, dy when given, S x P). */
MLP_AUG_CLONES
static void mlp_aug_coordinates(int S, int P, const float a[4], const float o[2],
                                const float *dx, const float *dy, float *sx, float *sy)
{
    const float c = 0.5f * (float)(S - 1);
    int i, j;
    for (i = 0; i < S; i++) {
        const float yc = (float)i - c;
        const float row_x = a[1] * yc + (c + o[0]);
        const float row_y = a[3] * yc + (c + o[1]);
        float *x = sx + (long)i * P, *y = sy + (long)i * P;
        for (j = 0; j < S; j++) {
            const float xc = (float)j - c;
            x[j] = a[0] * xc + row_x;
            y[j] = a[2] * xc + row_y;
        }
        if (dx != NULL) {
            const float *ddx = dx + (long)i * P, *ddy = dy + (long)i * P;
            for (j = 0; j < S; j++) {
                x[j] += ddx[j];
                y[j] += ddy[j];
            }
        }
    }
}

/* Copy an S x S image into the middle of padded ((S+3) x (S+3), one row and
 * column of zeros before it, two after), whose border the caller keeps 0. */
static inline void mlp_aug_pad(int S, const float *image, float *padded)
{
    const int Q = S + 3;
    int i;
    for (i = 0; i < S; i++)
        memcpy(padded + (long)(i + 1) * Q + 1, image + (long)i * S, sizeof(float) * (size_t)S);
}

/* out (S x S) <- the padded image sampled bilinearly at (sx, sy) (S x P),
 * clipped to [0, 1]. A coordinate is clamped to [-1, S] first: beyond that
 * all four neighbours are background either way, and the clamped index
 * stays inside the padding. NaN clamps to -1, so it reads background.
 *
 * Each row runs in two loops: the arithmetic that finds the four
 * neighbours and the weights (vectorised), then the loads and the blend
 * (scalar: the neighbours are anywhere in the image). */
#define MLP_AUG_CHUNK 64
MLP_AUG_CLONES
static void mlp_aug_resample(int S, int P, const float *padded, const float *sx,
                             const float *sy, float *out)
{
    const int Q = S + 3;
    const float hi = (float)S;
    int index[MLP_AUG_CHUNK];
    float wx[MLP_AUG_CHUNK], wy[MLP_AUG_CHUNK];
    int i, j0, j, n;
    for (i = 0; i < S; i++) {
        for (j0 = 0; j0 < S; j0 += MLP_AUG_CHUNK) {
            const float *x = sx + (long)i * P + j0, *y = sy + (long)i * P + j0;
            float *o = out + (long)i * S + j0;
            n = S - j0 < MLP_AUG_CHUNK ? S - j0 : MLP_AUG_CHUNK;
            for (j = 0; j < n; j++) {
                float u = x[j], v = y[j];
                int xi, yi;
                u = u >= -1.0f ? u : -1.0f;
                u = u <= hi ? u : hi;
                v = v >= -1.0f ? v : -1.0f;
                v = v <= hi ? v : hi;
                /* u + 1 >= 0, so truncation is floor(u) + 1: the padded image's
                 * column of pixel floor(u). u - floor(u) is exact for u >= 0. */
                xi = (int)(u + 1.0f);
                yi = (int)(v + 1.0f);
                wx[j] = u - (float)(xi - 1);
                wy[j] = v - (float)(yi - 1);
                index[j] = yi * Q + xi;
            }
            for (j = 0; j < n; j++) {
                const float *p = padded + index[j];
                const float fx = wx[j];
                const float top = p[0] + fx * (p[1] - p[0]);
                const float bottom = p[Q] + fx * (p[Q + 1] - p[Q]);
                float value = top + wy[j] * (bottom - top);
                value = value >= 0.0f ? value : 0.0f;
                o[j] = value <= 1.0f ? value : 1.0f;
            }
        }
    }
}


/* ---------------------------------------------------------------------------
 * Drawing one image's distortion
 * ------------------------------------------------------------------------- */

/* The drawn affine map, forward: params = rotation (radians, positive turns
 * the content counter-clockwise on screen), scale factor, shear (radians),
 * shift x, shift y (pixels). */
static void mlp_aug_draw_affine(const mlp_aug_plan *plan, uint64_t key, double params[5])
{
    float u[2 * MLP_AUG_AFFINE_DRAWS];
    int d;
    for (d = 0; d < MLP_AUG_AFFINE_DRAWS; d++) {
        uint64_t bits = mlp_aug_bits(key, (uint64_t)d);
        u[2 * d] = mlp_aug_signed_unit((uint32_t)bits);
        u[2 * d + 1] = mlp_aug_signed_unit((uint32_t)(bits >> 32));
    }
    params[0] = plan->rotation * u[0];
    params[1] = 1.0 + plan->scale * u[1];
    params[2] = plan->shear * u[2];
    params[3] = plan->shift * u[3];
    params[4] = plan->shift * u[4];
}

/* The inverse map (a, o) of `mlp_aug_coordinates` for forward parameters
 * as drawn by mlp_aug_draw_affine. Forward, about the centre, with y
 * pointing down: p' = s R(theta) H(phi) p + t, R = [[cos, sin], [-sin, cos]],
 * H = [[1, tan phi], [0, 1]]. Inverse: p = (1/s) H^-1 R^T (p' - t). */
static void mlp_aug_inverse_affine(const double params[5], float a[4], float o[2])
{
    const double cs = cos(params[0]), sn = sin(params[0]);
    const double sh = tan(params[2]), inv = 1.0 / params[1];
    /* R^T = [[cs, -sn], [sn, cs]]; H^-1 R^T = [[cs - sh sn, -sn - sh cs], [sn, cs]] */
    const double a00 = inv * (cs - sh * sn), a01 = inv * (-sn - sh * cs);
    const double a10 = inv * sn, a11 = inv * cs;
    a[0] = (float)a00;
    a[1] = (float)a01;
    a[2] = (float)a10;
    a[3] = (float)a11;
    o[0] = (float)(-(a00 * params[3] + a01 * params[4]));
    o[1] = (float)(-(a10 * params[3] + a11 * params[4]));
}

/* dx, dy (S x P) <- the image's raw displacement fields, uniform in [-1, 1];
 * padding columns are left alone. */
MLP_AUG_CLONES_INT64
static void mlp_aug_draw_fields(int S, int P, uint64_t key, float *dx, float *dy)
{
    uint64_t state = key + (uint64_t)(MLP_AUG_AFFINE_DRAWS + 1) * MLP_AUG_GAMMA;
    int i, j;
    for (i = 0; i < S; i++) {
        float *x = dx + (long)i * P, *y = dy + (long)i * P;
        for (j = 0; j < S; j++) {
            uint64_t bits = mlp_aug_mix64(state);
            state += MLP_AUG_GAMMA;
            x[j] = mlp_aug_signed_unit((uint32_t)bits);
            y[j] = mlp_aug_signed_unit((uint32_t)(bits >> 32));
        }
    }
}

/* Zero a thread's workspace once, before its first image: the padding of
 * the field buffers and the border of the padded image must stay 0. */
static inline void mlp_aug_work_init(int side, float *work)
{
    memset(work, 0, sizeof(float) * (size_t)mlp_aug_work_floats(side));
}

/* Work layout: fields dx, dy, source points sx, sy (P x P buffers, row
 * stride P), then the padded image. */
static inline float *mlp_aug_work_sx(int side, float *work)
{
    return work + 2 * mlp_aug_field_floats(side);
}

static inline float *mlp_aug_work_sy(int side, float *work)
{
    return work + 3 * mlp_aug_field_floats(side);
}

static inline float *mlp_aug_work_padded(int side, float *work)
{
    return work + 4 * mlp_aug_field_floats(side);
}

/* The source point of every output pixel of image `sample_id`, into
 * mlp_aug_work_sx(work), mlp_aug_work_sy(work) (S x P). */
static void mlp_aug_source_points(const mlp_aug_plan *plan, uint64_t seed, uint64_t sample_id,
                                  float *work)
{
    static const float identity[4] = {1.0f, 0.0f, 0.0f, 1.0f};
    static const float no_offset[2] = {0.0f, 0.0f};
    const int S = plan->side, P = plan->stride;
    const long field = mlp_aug_field_floats(S);
    float *dx = work, *dy = work + field, *sx = work + 2 * field, *sy = work + 3 * field;
    const uint64_t key = mlp_aug_key(seed, sample_id);
    float a[4], o[2];
    if (plan->affine) {
        double params[5];
        mlp_aug_draw_affine(plan, key, params);
        mlp_aug_inverse_affine(params, a, o);
    } else {
        memcpy(a, identity, sizeof a);
        memcpy(o, no_offset, sizeof o);
    }
    if (plan->elastic) {
        mlp_aug_draw_fields(S, P, key, dx, dy);
        /* sx serves as the smoothing's scratch before it holds coordinates. */
        mlp_aug_smooth(plan, dx, sx, plan->alpha);
        mlp_aug_smooth(plan, dy, sx, plan->alpha);
        mlp_aug_coordinates(S, P, a, o, dx, dy, sx, sy);
    } else {
        mlp_aug_coordinates(S, P, a, o, NULL, NULL, sx, sy);
    }
}

/* Distort one image (S*S floats, values in [0, 1]) into out, with this
 * thread's workspace (mlp_aug_work_floats, zeroed by mlp_aug_work_init). */
static void mlp_aug_distort_image(const mlp_aug_plan *plan, const float *image, float *out,
                                  uint64_t seed, uint64_t sample_id, float *work)
{
    const int S = plan->side;
    float *padded = mlp_aug_work_padded(S, work);
    mlp_aug_source_points(plan, seed, sample_id, work);
    mlp_aug_pad(S, image, padded);
    mlp_aug_resample(S, plan->stride, padded, mlp_aug_work_sx(S, work),
                     mlp_aug_work_sy(S, work), out);
}

#endif
