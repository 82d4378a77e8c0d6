/* Branch-free exp for the elementwise passes of mlp/_kernels.pyx.
 *
 * libm's exp/expf are scalar calls, and gcc only vectorises them under
 * -ffast-math, which would also let it assume that NaN never occurs: the
 * kernels rely on NaN propagating so that a diverged run is detected. These
 * versions are plain arithmetic and selects, so gcc -O3 vectorises the loops
 * that call them, and NaN in gives NaN out.
 *
 * Method: exp(x) = 2^k * exp(r), k = round(x / ln 2), |r| <= ln(2)/2, exp(r)
 * by a Taylor polynomial (degree 7 for float: relative error < 1e-8 before
 * rounding; degree 13 for double: < 5e-18), and 2^k built from the exponent
 * bits in two halves, so that results down to the subnormal range come out
 * right and anything below underflows to exactly 0.
 */
#ifndef MLP_FASTEXP_H
#define MLP_FASTEXP_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float mlp_pow2f(int32_t k)
{
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float mlp_expf(float x)
{
    /* Beyond these, exp(x) overflows to inf or underflows to 0 in float. */
    x = x > 88.8f ? 88.8f : x;
    x = x < -104.0f ? -104.0f : x;
    /* Round to nearest by adding 1.5 * 2^23: no rint call, so it vectorises. */
    const float shifter = 12582912.0f;
    float kf = (x * 1.44269504088896341f + shifter) - shifter;
    float r = x - kf * 0.693145751953125f;
    r = r - kf * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t k = (int32_t)kf;
    int32_t k1 = k >> 1;
    return p * mlp_pow2f(k1) * mlp_pow2f(k - k1);
}

static inline double mlp_pow2(int32_t k)
{
    uint64_t bits = (uint64_t)(int64_t)(k + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static inline double mlp_exp(double x)
{
    x = x > 709.8 ? 709.8 : x;
    x = x < -745.2 ? -745.2 : x;
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    double kf = (x * 1.4426950408889634074 + shifter) - shifter;
    double r = x - kf * 6.93147180369123816490e-01;
    r = r - kf * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* k lies in [-1075, 1024]: int32 converts in SIMD registers on SSE2. */
    int32_t k = (int32_t)kf;
    int32_t k1 = k >> 1;
    return p * mlp_pow2(k1) * mlp_pow2(k - k1);
}

/* Logistic function. exp(-|x|) never overflows, and both sides share it;
 * the select compiles to a blend, not a branch. */
static inline float mlp_sigmoidf(float x)
{
    float e = mlp_expf(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

static inline double mlp_sigmoid(double x)
{
    double e = mlp_exp(-fabs(x));
    double r = 1.0 / (1.0 + e);
    return x >= 0.0 ? r : e * r;
}

/* The elementwise passes that dominate after the GEMMs, compiled twice
 * where the compiler can: for AVX2+FMA and for the baseline, picked at load
 * time by the CPU (GCC/clang function multiversioning). A plain build
 * elsewhere. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 \
    && defined(__linux__)
/* One clone for AVX2 with FMA (x86-64-v3: Haswell, Zen and later). Each
 * entry of target_clones is a separate clone, so "avx2,fma" would have made
 * an AVX2 clone without FMA and an FMA clone without AVX2; the polynomial
 * in mlp_expf is mostly multiply-adds. */
#define MLP_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#elif defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define MLP_MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MLP_MULTIVERSION
#endif

/* z[i, j] <- sigmoid(z[i, j] + b[j]) for an (n, k) row-major z. */
MLP_MULTIVERSION
static void mlp_bias_sigmoidf(float *z, const float *b, ptrdiff_t n, ptrdiff_t k)
{
    for (ptrdiff_t i = 0; i < n; i++)
        for (ptrdiff_t j = 0; j < k; j++)
            z[i * k + j] = mlp_sigmoidf(z[i * k + j] + b[j]);
}

MLP_MULTIVERSION
static void mlp_bias_sigmoid(double *z, const double *b, ptrdiff_t n, ptrdiff_t k)
{
    for (ptrdiff_t i = 0; i < n; i++)
        for (ptrdiff_t j = 0; j < k; j++)
            z[i * k + j] = mlp_sigmoid(z[i * k + j] + b[j]);
}

/* The same with one bias per row: z[r, c] <- sigmoid(z[r, c] + b[r]), for
 * activations stored feature-major (a row per unit). */
MLP_MULTIVERSION
static void mlp_row_bias_sigmoidf(float *z, const float *b, ptrdiff_t rows, ptrdiff_t cols)
{
    /* Two passes, so that the sigmoid runs over all rows as one vector loop:
     * rows are a batch long (often 30), and per row the vector remainder
     * took longer than the vectors. */
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols; c++)
            z[r * cols + c] += b[r];
    for (ptrdiff_t i = 0; i < rows * cols; i++)
        z[i] = mlp_sigmoidf(z[i]);
}

MLP_MULTIVERSION
static void mlp_row_bias_sigmoid(double *z, const double *b, ptrdiff_t rows, ptrdiff_t cols)
{
    /* Two passes, so that the sigmoid runs over all rows as one vector loop:
     * rows are a batch long (often 30), and per row the vector remainder
     * took longer than the vectors. */
    for (ptrdiff_t r = 0; r < rows; r++)
        for (ptrdiff_t c = 0; c < cols; c++)
            z[r * cols + c] += b[r];
    for (ptrdiff_t i = 0; i < rows * cols; i++)
        z[i] = mlp_sigmoid(z[i]);
}

MLP_MULTIVERSION
static void mlp_sigmoid_inplacef(float *z, ptrdiff_t count)
{
    for (ptrdiff_t i = 0; i < count; i++)
        z[i] = mlp_sigmoidf(z[i]);
}

MLP_MULTIVERSION
static void mlp_sigmoid_inplace(double *z, ptrdiff_t count)
{
    for (ptrdiff_t i = 0; i < count; i++)
        z[i] = mlp_sigmoid(z[i]);
}

/* 1 when no entry is NaN or inf: the exponent bits are all ones exactly
 * for those. An integer OR-reduction, so it vectorises without reordering
 * any floating-point sum. */
MLP_MULTIVERSION
static int mlp_all_finitef(const float *x, ptrdiff_t n)
{
    uint32_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, x + i, sizeof bits);
        bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    return bad == 0;
}

MLP_MULTIVERSION
static int mlp_all_finite(const double *x, ptrdiff_t n)
{
    uint64_t bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, x + i, sizeof bits);
        bad |= (uint64_t)((bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    }
    return bad == 0;
}

#endif
