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

/* float32 -> bfloat16 bits, round to nearest even; a NaN stays a quiet NaN. */
static inline uint16_t mlp_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
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

/* Which path mlp_sbgemm takes on this CPU: 0 portable. */
static inline int mlp_bf16_path(void) { return 0; }

static inline int mlp_sbgemm(char transa, char transb, int m, int n, int k, float alpha,
                             const float *a, int lda, const float *b, int ldb, float beta,
                             float *c, int ldc) {
    return mlp_sbgemm_portable(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

#endif
