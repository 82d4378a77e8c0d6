/* bfloat16 matrix products for compute_dtype="bfloat16".
 *
 * The arithmetic, whatever the path: every element of A and B is rounded to
 * bfloat16 (round to nearest, ties to even; NaN stays NaN), the products are
 * summed in float32. This is PyTorch's CPU autocast and Keras's
 * mixed_bfloat16: parameters, optimizer state and elementwise maths stay
 * float32, only the GEMMs' inputs are bfloat16.
 *
 * mlp_sbgemm has sgemm's column-major calling convention, so the kernels'
 * _gemm wrapper can route any of its products here unchanged.
 *
 * This file holds the portable path: the inputs rounded into scratch buffers,
 * then the float32 sgemm that the kernels already use (products of two
 * bfloat16 values are exact in float32, so only the order of the float32
 * sums differs from a native bfloat16 dot product).
 */
#ifndef MLP_BF16_H
#define MLP_BF16_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*mlp_sgemm_fn)(char *transa, char *transb, int *m, int *n, int *k,
                             float *alpha, float *a, int *lda, float *b, int *ldb,
                             float *beta, float *c, int *ldc);

/* scipy's sgemm, registered once when the module is imported. */
static mlp_sgemm_fn mlp_bf16_sgemm = NULL;

static inline void mlp_bf16_set_sgemm(mlp_sgemm_fn fn) { mlp_bf16_sgemm = fn; }

/* float32 -> bfloat16 bits, round to nearest even; a NaN stays a quiet NaN;
 * a float32 denormal becomes a zero of its sign. The flush is what the
 * native instructions do (vcvtne2ps2bf16, vdpbf16ps and tdpbf16ps treat
 * denormal inputs as zero), so every path rounds alike; values below
 * FLT_MIN (1.2e-38) do not matter to a network's training. */
static inline uint16_t mlp_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float mlp_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* x rounded to the nearest bfloat16, as a float32. */
static inline float mlp_round_bf16(float x) { return mlp_bf16_to_f32(mlp_f32_to_bf16(x)); }

/* Copy the rows x cols column-major block of src (leading dimension ld) into
 * dst (leading dimension rows), each element rounded to bfloat16. */
static void mlp_bf16_round_block(int rows, int cols, const float *src, int ld, float *dst) {
    for (int j = 0; j < cols; j++)
        for (int i = 0; i < rows; i++)
            dst[(size_t)j * rows + i] = mlp_round_bf16(src[(size_t)j * ld + i]);
}

/* C = alpha * op(A) @ op(B) + beta * C, column-major as sgemm, with A and B
 * rounded to bfloat16. Returns 0, or -1 if scratch memory ran out (C is then
 * untouched). */
static int mlp_sbgemm_portable(char transa, char transb, int m, int n, int k, float alpha,
                               const float *a, int lda, const float *b, int ldb, float beta,
                               float *c, int ldc) {
    /* op(A) is m x k: A is stored m x k, or k x m when transposed. */
    int a_rows = (transa == 'N' || transa == 'n') ? m : k;
    int a_cols = (transa == 'N' || transa == 'n') ? k : m;
    int b_rows = (transb == 'N' || transb == 'n') ? k : n;
    int b_cols = (transb == 'N' || transb == 'n') ? n : k;
    if (m <= 0 || n <= 0) return 0;
    size_t a_size = (size_t)a_rows * a_cols, b_size = (size_t)b_rows * b_cols;
    float *scratch = (float *)malloc((a_size + b_size + 2) * sizeof(float));
    if (scratch == NULL) return -1;
    float *ra = scratch, *rb = scratch + a_size + 1;
    mlp_bf16_round_block(a_rows, a_cols, a, lda, ra);
    mlp_bf16_round_block(b_rows, b_cols, b, ldb, rb);
    int new_lda = a_rows > 0 ? a_rows : 1, new_ldb = b_rows > 0 ? b_rows : 1;
    mlp_bf16_sgemm(&transa, &transb, &m, &n, &k, &alpha, ra, &new_lda, rb, &new_ldb,
                   &beta, c, &ldc);
    free(scratch);
    return 0;
}

/* C = beta * C (alpha * op(A) @ op(B) is zero: k == 0 or alpha == 0);
 * beta == 0 sets C to zero without reading it, as sgemm does. */
static void mlp_bf16_scale_c(int m, int n, float beta, float *c, int ldc) {
    for (int j = 0; j < n; j++) {
        float *cj = c + (size_t)j * ldc;
        for (int i = 0; i < m; i++) cj[i] = beta == 0.0f ? 0.0f : beta * cj[i];
    }
}

/* The native paths need x86-64 and a compiler with the AMX intrinsics
 * (gcc 11, clang 12); elsewhere (or compiled with -DMLP_BF16_PORTABLE_ONLY,
 * to check that build) only the portable path exists. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MLP_BF16_PORTABLE_ONLY) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define MLP_BF16_NATIVE 1
#include "_bf16_avx512.h"
#include "_bf16_amx.h"
#else
#define MLP_BF16_NATIVE 0
#endif

/* The paths. MLP_BF16_AMX_EMULATED is the AMX path's code on an emulation
 * of the tile instructions: never chosen, it lets the tests run that code
 * on CPUs without AMX. */
enum {
    MLP_BF16_PORTABLE = 0,
    MLP_BF16_AVX512 = 1,
    MLP_BF16_AMX = 2,
    MLP_BF16_AMX_EMULATED = 3,
    MLP_BF16_N_PATHS = 4
};

static const char *const mlp_bf16_path_names[MLP_BF16_N_PATHS] = {
    "portable", "avx512bf16", "amx", "amx_emulated"};

/* The path choice is cached in statics that worker threads may read while
 * another thread fills them: both write the same value. */
#if defined(__GNUC__)
#define MLP_BF16_LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define MLP_BF16_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#else
#define MLP_BF16_LOAD(x) (x)
#define MLP_BF16_STORE(x, v) ((x) = (v))
#endif

/* Whether this CPU (and, for AMX, the OS) runs the path; asked once. */
static int mlp_bf16_path_supported(int path) {
    if (path == MLP_BF16_PORTABLE) return 1;
#if MLP_BF16_NATIVE
    static int amx = -1;  /* the AMX answer costs a system call */
    __builtin_cpu_init();
    int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512bf16");
    if (path == MLP_BF16_AVX512 || path == MLP_BF16_AMX_EMULATED) return avx512;
    if (path == MLP_BF16_AMX) {
        int known = MLP_BF16_LOAD(amx);
        if (known < 0) {
            known = avx512 && mlp_bf16_amx_usable();
            MLP_BF16_STORE(amx, known);
        }
        return known;
    }
#endif
    return 0;
}

/* The path mlp_sbgemm takes: the environment's MLP_BF16_PATH (a name of
 * mlp_bf16_path_names but the emulation) if this CPU runs it, else the
 * fastest this CPU runs. Decided on the first call and kept. */
static int mlp_bf16_path(void) {
    static int chosen = -1;
    int path = MLP_BF16_LOAD(chosen);
    if (path >= 0) return path;
    path = -1;
    const char *wanted = getenv("MLP_BF16_PATH");
    if (wanted != NULL)
        for (int p = 0; p < MLP_BF16_AMX_EMULATED; p++)
            if (strcmp(wanted, mlp_bf16_path_names[p]) == 0 && mlp_bf16_path_supported(p))
                path = p;
    if (path < 0)
        path = mlp_bf16_path_supported(MLP_BF16_AMX)      ? MLP_BF16_AMX
               : mlp_bf16_path_supported(MLP_BF16_AVX512) ? MLP_BF16_AVX512
                                                          : MLP_BF16_PORTABLE;
    MLP_BF16_STORE(chosen, path);
    return path;
}

/* mlp_sbgemm on a given path, which the caller knows this CPU runs. */
static int mlp_sbgemm_on(int path, char transa, char transb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta,
                         float *c, int ldc) {
    if (m <= 0 || n <= 0) return 0;
    if (k <= 0 || alpha == 0.0f) {
        mlp_bf16_scale_c(m, n, beta, c, ldc);
        return 0;
    }
#if MLP_BF16_NATIVE
    if (path == MLP_BF16_AVX512)
        return mlp_sbgemm_avx512(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (path == MLP_BF16_AMX)
        return mlp_sbgemm_amx(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (path == MLP_BF16_AMX_EMULATED)
        return mlp_sbgemm_amx_emulated(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta,
                                       c, ldc);
#endif
    return mlp_sbgemm_portable(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* C = alpha * op(A) @ op(B) + beta * C, column-major with sgemm's arguments
 * (by value), A's and B's elements rounded to bfloat16, sums in float32.
 * Returns 0, or -1 if scratch memory ran out (C is then untouched). */
static inline int mlp_sbgemm(char transa, char transb, int m, int n, int k, float alpha,
                             const float *a, int lda, const float *b, int ldb, float beta,
                             float *c, int ldc) {
    return mlp_sbgemm_on(mlp_bf16_path(), transa, transb, m, n, k, alpha, a, lda, b, ldb,
                         beta, c, ldc);
}

/* out[i] = x[i] rounded to bfloat16, by the path's own conversion (the
 * tests check that every path rounds as mlp_round_bf16). */
static void mlp_bf16_round_on(int path, const float *x, float *out, size_t n) {
#if MLP_BF16_NATIVE
    if (path != MLP_BF16_PORTABLE) {
        mlp_bf16_round_avx512(x, out, n);
        return;
    }
#endif
    for (size_t i = 0; i < n; i++) out[i] = mlp_round_bf16(x[i]);
}

#endif
