/* Inference's dense layers in float32 without BLAS: z = act(x @ W.T + b)
 * for a block of rows, W in the model's own (units, inputs) layout, with
 * AVX-512 where the CPU has it (chosen at run time, mlp_dense_init), and
 * portable loops that tests and MLP_DENSE_PATH can ask for. Used by
 * _kernels.infer (mlp/_kernels.pyx, _infer_layers) for blocks of rows small
 * enough that it beats sgemm; float64, training, and CPUs without AVX-512
 * run on BLAS as before.
 *
 * Why not sgemm: at inference's sizes (one to a few hundred rows through
 * 784-300-100-10) OpenBLAS packs all of W on every call, which costs more
 * than the product for a few rows (8 rows of 784 -> 300: 76 us feature-
 * major, 104 us for the whole network in the row-major layout), and it
 * leaves the bias and the activation to separate passes over the output.
 * Packing W once per model would need to know when the model changed,
 * and the weights are live arrays the user may write into. So the loop
 * reads W as it is: each unit's weights are a contiguous row, as is each
 * input row, and a block of R rows by U units keeps R x U accumulators of
 * 16 products along the inputs, each load of a weight vector used R times
 * and each load of an input vector U times (6 x 4: 10 loads to 24 fused
 * multiply-adds), then adds each accumulator's lanes, the bias and ReLU.
 * The input dimension's tail is a masked load, so no operand is padded.
 *
 * Rows go through in chunks of MLP_DENSE_CHUNK_ROWS and, within a chunk,
 * units outermost: a block of units' weights (4 x 784 floats, 12.5 KB)
 * stays in L1 while the chunk's rows (150 KB) stream from L2.
 *
 * The sums are added in a different order than sgemm's (16 lanes, then
 * across them), so results differ from the BLAS path by rounding only. */
#ifndef MLP_DENSE_H
#define MLP_DENSE_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MLP_DENSE_AVX512 1
#include <immintrin.h>

#define MLP_DENSE_CHUNK_ROWS 48
#define MLP_DENSE_MAX_R 6
#define MLP_DENSE_MAX_U 8

/* R rows (x, ldx apart) by U units (w, fin apart) over fin inputs; z[r * ldz
 * + u] = sum + b[u], then max(0, .) with relu. R, U are constants where
 * this is inlined, so the accumulators live in registers. */
__attribute__((target("avx512f"), always_inline))
static inline void mlp_dense_block(const float *x, ptrdiff_t ldx, const int R, const float *w,
                                   ptrdiff_t fin, const int U, const float *b, float *z,
                                   ptrdiff_t ldz, int relu)
{
    __m512 acc[MLP_DENSE_MAX_R][MLP_DENSE_MAX_U];
    __m512 wv[MLP_DENSE_MAX_U];
    ptrdiff_t k = 0;
    int r, u;
    _Pragma("GCC unroll 8") for (r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (u = 0; u < U; u++)
            acc[r][u] = _mm512_setzero_ps();
    for (; k + 16 <= fin; k += 16) {
        _Pragma("GCC unroll 8") for (u = 0; u < U; u++)
            wv[u] = _mm512_loadu_ps(w + u * fin + k);
        _Pragma("GCC unroll 8") for (r = 0; r < R; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * ldx + k);
            _Pragma("GCC unroll 8") for (u = 0; u < U; u++)
                acc[r][u] = _mm512_fmadd_ps(xv, wv[u], acc[r][u]);
        }
    }
    if (k < fin) {
        __mmask16 mask = (__mmask16)((1u << (fin - k)) - 1);
        _Pragma("GCC unroll 8") for (u = 0; u < U; u++)
            wv[u] = _mm512_maskz_loadu_ps(mask, w + u * fin + k);
        _Pragma("GCC unroll 8") for (r = 0; r < R; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * ldx + k);
            _Pragma("GCC unroll 8") for (u = 0; u < U; u++)
                acc[r][u] = _mm512_fmadd_ps(xv, wv[u], acc[r][u]);
        }
    }
    _Pragma("GCC unroll 8") for (r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (u = 0; u < U; u++) {
            float s = _mm512_reduce_add_ps(acc[r][u]) + b[u];
            /* As _apply_activation's ReLU: NaN stays NaN. */
            z[r * ldz + u] = relu && s < 0 ? 0.0f : s;
        }
}

#define MLP_DENSE_CASE(R, U)                                                    \
    case (R) * 16 + (U):                                                        \
        mlp_dense_block(x, ldx, R, w, fin, U, b, z, ldz, relu);                 \
        break;

__attribute__((target("avx512f")))
static void mlp_dense_dispatch(int R, int U, const float *x, ptrdiff_t ldx, const float *w,
                               ptrdiff_t fin, const float *b, float *z, ptrdiff_t ldz, int relu)
{
    switch (R * 16 + U) {
    MLP_DENSE_CASE(1, 1) MLP_DENSE_CASE(1, 2) MLP_DENSE_CASE(1, 3) MLP_DENSE_CASE(1, 4)
    MLP_DENSE_CASE(1, 8)
    MLP_DENSE_CASE(2, 1) MLP_DENSE_CASE(2, 2) MLP_DENSE_CASE(2, 3) MLP_DENSE_CASE(2, 4)
    MLP_DENSE_CASE(2, 8)
    MLP_DENSE_CASE(3, 1) MLP_DENSE_CASE(3, 2) MLP_DENSE_CASE(3, 3) MLP_DENSE_CASE(3, 4)
    MLP_DENSE_CASE(4, 1) MLP_DENSE_CASE(4, 2) MLP_DENSE_CASE(4, 3) MLP_DENSE_CASE(4, 4)
    MLP_DENSE_CASE(5, 1) MLP_DENSE_CASE(5, 2) MLP_DENSE_CASE(5, 3) MLP_DENSE_CASE(5, 4)
    MLP_DENSE_CASE(6, 1) MLP_DENSE_CASE(6, 2) MLP_DENSE_CASE(6, 3) MLP_DENSE_CASE(6, 4)
    default:
        break;
    }
}

/* z[:, u0:u1] = act(x @ W[u0:u1].T + b[u0:u1]) for rows rows: x (rows, ldx)
 * of which the first fin columns are read, W (units, fin), z (rows, ldz),
 * act ReLU with relu, else none. */
__attribute__((target("avx512f")))
static void mlp_dense_layer_avx512(const float *x, ptrdiff_t ldx, ptrdiff_t rows, ptrdiff_t fin,
                                   const float *w, const float *b, ptrdiff_t u0, ptrdiff_t u1,
                                   float *z, ptrdiff_t ldz, int relu)
{
    ptrdiff_t r0, r1, r, u;
    /* A block of one or two rows is bound by reading W, and gains from
     * more independent sums (8 units) to hide the multiply-adds' latency. */
    int wide = rows <= 2;
    for (r0 = 0; r0 < rows; r0 = r1) {
        r1 = r0 + MLP_DENSE_CHUNK_ROWS < rows ? r0 + MLP_DENSE_CHUNK_ROWS : rows;
        /* Rows fresh from memory: ask for all of the chunk's lines first,
         * one sequential stream, rather than let the first block of units
         * read them as six streams at once (1.27x slower at 32 rows). */
        for (r = r0; r < r1; r++) {
            const char *row = (const char *)(x + r * ldx);
            ptrdiff_t byte;
            for (byte = 0; byte < fin * (ptrdiff_t)sizeof(float); byte += 64)
                _mm_prefetch(row + byte, _MM_HINT_T1);
        }
        for (u = u0; u < u1;) {
            int U = u1 - u >= 8 && wide ? 8 : (u1 - u >= 4 ? 4 : (int)(u1 - u));
            for (r = r0; r < r1;) {
                /* Blocks of equal rows (8 rows: 4 + 4, not 6 + 2, whose
                 * 2-row block loads 6 vectors for 8 multiply-adds). */
                ptrdiff_t blocks = (r1 - r + MLP_DENSE_MAX_R - 1) / MLP_DENSE_MAX_R;
                int R = (int)((r1 - r + blocks - 1) / blocks);
                mlp_dense_dispatch(R, U, x + r * ldx, ldx, w + u * fin, fin, b + u,
                                   z + r * ldz + u, ldz, relu);
                r += R;
            }
            u += U;
        }
    }
}
#endif

/* The portable path: the same sums (16 lanes along the inputs, then across
 * them) in plain C, which the compiler vectorises for the baseline ISA.
 * A block of up to 4 units per row reads the row once for all of them. */
static void mlp_dense_layer_portable(const float *x, ptrdiff_t ldx, ptrdiff_t rows,
                                     ptrdiff_t fin, const float *w, const float *b,
                                     ptrdiff_t u0, ptrdiff_t u1, float *z, ptrdiff_t ldz,
                                     int relu)
{
    ptrdiff_t r, u, k, j;
    int U, v;
    for (r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        for (u = u0; u < u1; u += U) {
            float acc[4][16];
            U = u1 - u >= 4 ? 4 : (int)(u1 - u);
            for (v = 0; v < U; v++)
                for (j = 0; j < 16; j++)
                    acc[v][j] = 0.0f;
            for (k = 0; k + 16 <= fin; k += 16)
                for (v = 0; v < U; v++) {
                    const float *wu = w + (u + v) * fin + k;
                    for (j = 0; j < 16; j++)
                        acc[v][j] += xr[k + j] * wu[j];
                }
            for (v = 0; v < U; v++) {
                const float *wu = w + (u + v) * fin;
                float s = 0.0f;
                for (j = 0; k + j < fin; j++)
                    acc[v][j] += xr[k + j] * wu[k + j];
                for (j = 0; j < 16; j++)
                    s += acc[v][j];
                s += b[u + v];
                /* As _apply_activation's ReLU: NaN stays NaN. */
                z[r * ldz + u + v] = relu && s < 0 ? 0.0f : s;
            }
        }
    }
}

/* The paths: BLAS (sgemm, then the bias and the activation as separate
 * passes) is always there; mlp_dense_init picks AVX-512 where the CPU has
 * it, else BLAS (the portable loops are slower than sgemm even for one
 * row), or the one the environment variable MLP_DENSE_PATH names ("blas",
 * "portable", "avx512"; for tests and benchmarks), when the CPU runs it. */
enum { MLP_DENSE_BLAS = 0, MLP_DENSE_PORTABLE = 1, MLP_DENSE_AVX512F = 2, MLP_DENSE_N_PATHS = 3 };
static const char *const mlp_dense_path_names[MLP_DENSE_N_PATHS] = {"blas", "portable",
                                                                     "avx512"};
static int mlp_dense_path_code;

static int mlp_dense_path_supported(int path)
{
    if (path == MLP_DENSE_BLAS || path == MLP_DENSE_PORTABLE)
        return 1;
#ifdef MLP_DENSE_AVX512
    if (path == MLP_DENSE_AVX512F) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f");
    }
#endif
    return 0;
}

/* Set once, when the module loads (then only by tests, between calls). */
static void mlp_dense_init(void)
{
    const char *name = getenv("MLP_DENSE_PATH");
    int p;
    mlp_dense_path_code = mlp_dense_path_supported(MLP_DENSE_AVX512F) ? MLP_DENSE_AVX512F
                                                                      : MLP_DENSE_BLAS;
    if (name != NULL)
        for (p = 0; p < MLP_DENSE_N_PATHS; p++)
            if (strcmp(name, mlp_dense_path_names[p]) == 0 && mlp_dense_path_supported(p))
                mlp_dense_path_code = p;
}

static int mlp_dense_path(void)
{
    return mlp_dense_path_code;
}

static void mlp_dense_set_path(int path)
{
    mlp_dense_path_code = path;
}

/* z[:, u0:u1] = act(x @ W[u0:u1].T + b[u0:u1]) on the path chosen, which
 * is not MLP_DENSE_BLAS: see mlp_dense_layer_avx512. */
static void mlp_dense_layer(const float *x, ptrdiff_t ldx, ptrdiff_t rows, ptrdiff_t fin,
                            const float *w, const float *b, ptrdiff_t u0, ptrdiff_t u1, float *z,
                            ptrdiff_t ldz, int relu)
{
#ifdef MLP_DENSE_AVX512
    if (mlp_dense_path_code == MLP_DENSE_AVX512F) {
        mlp_dense_layer_avx512(x, ldx, rows, fin, w, b, u0, u1, z, ldz, relu);
        return;
    }
#endif
    mlp_dense_layer_portable(x, ldx, rows, fin, w, b, u0, u1, z, ldz, relu);
}

#endif
