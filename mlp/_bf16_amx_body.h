/* The body of the AMX-BF16 path, included twice by _bf16_amx.h: once on the
 * tile instructions (MLP_AMX_EMULATED undefined) and once on their C
 * emulation, so that the packing, tile layouts, edges and alpha/beta of this
 * path run in the tests on any CPU with AVX512_BF16, not only where AMX is.
 *
 * Expects: MLP_AMX_FN (the function's name), MLP_AMX_ATTR (its target
 * attribute), and MLP_TILE_CONFIG/ZERO/LOAD/DP/STORE/RELEASE(state, ...).
 *
 * C (m x n, column-major) = alpha * X @ Y.T + beta * C, one 16 x 16 tile of
 * C at a time over the whole of k (no cache blocking: this path is kept
 * simple). The tile is C's transpose: tile row j holds C[0:16, j], so
 *   tile A = 16 rows of Y, each 32 bfloat16 of k in order (64 bytes);
 *   tile B = 16 k-pairs of an X sliver, each the 16 rows' pairs: the packed
 *            format of _bf16_avx512.h with R = 16, read as it is;
 *   tdpbf16ps: C[j][i] += sum over pairs p of A[j][p] . B[p][i].
 * k is padded with zeros to a multiple of 32, m and n to multiples of 16, so
 * every tile is full and one configuration serves. */

MLP_AMX_ATTR
static int MLP_AMX_FN(char transa, char transb, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta,
                      float *c, int ldc) {
    int x_rows_contiguous = transa == 'N' || transa == 'n';
    size_t x_rs = x_rows_contiguous ? 1 : (size_t)lda, x_ks = x_rows_contiguous ? (size_t)lda : 1;
    int y_rows_contiguous = !(transb == 'N' || transb == 'n');
    size_t y_rs = y_rows_contiguous ? 1 : (size_t)ldb, y_ks = y_rows_contiguous ? (size_t)ldb : 1;
    size_t k32 = ((size_t)k + 31) / 32 * 32, chunks = k32 / 32;
    size_t m16 = ((size_t)m + 15) / 16 * 16, n16 = ((size_t)n + 15) / 16 * 16;
    /* words: X packed (m16 x k32 / 2), Y packed (n16 x k32 / 2), one Y
     * sliver before its transposition, one 16 x 16 float tile */
    size_t x_words = m16 * (k32 / 2), y_words = n16 * (k32 / 2), sliver_words = 16 * (k32 / 2);
    size_t bytes = (x_words + y_words + sliver_words + 256) * sizeof(uint32_t);
    uint32_t *x_pack = (uint32_t *)aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (x_pack == NULL) return -1;
    uint32_t *y_pack = x_pack + x_words, *sliver = y_pack + y_words;
    float *tile = (float *)(sliver + sliver_words);

    /* The pairs past k (to k32) must be zeros: the packer writes ceil(k / 2). */
    size_t kp = ((size_t)k + 1) / 2;
    for (size_t i = 0; i < m16; i += 16) {
        int rows = m - (int)i < 16 ? m - (int)i : 16;
        uint32_t *dst = x_pack + i * (k32 / 2);
        mlp_bf16_pack(16, rows, k, a + i * x_rs, x_rs, x_ks, x_rows_contiguous, dst);
        memset(dst + kp * 16, 0, (k32 / 2 - kp) * 16 * sizeof(uint32_t));
    }
    for (size_t j = 0; j < n16; j += 16) {
        int rows = n - (int)j < 16 ? n - (int)j : 16;
        mlp_bf16_pack(16, rows, k, b + j * y_rs, y_rs, y_ks, y_rows_contiguous, sliver);
        memset(sliver + kp * 16, 0, (k32 / 2 - kp) * 16 * sizeof(uint32_t));
        /* pairs x rows -> rows x pairs, a 16 x 16 block (one tile) at a time */
        uint32_t *dst = y_pack + j * (k32 / 2);
        for (size_t q = 0; q < chunks; q++) {
            __m512i t[16];
            for (int p = 0; p < 16; p++) t[p] = _mm512_load_si512(sliver + (q * 16 + p) * 16);
            mlp_bf16_transpose16(t);
            for (int r = 0; r < 16; r++) _mm512_store_si512(dst + q * 256 + r * 16, t[r]);
        }
    }

    MLP_TILE_STATE;
    MLP_TILE_CONFIG();
    for (size_t j = 0; j < n16; j += 16) {
        int cols = n - (int)j < 16 ? n - (int)j : 16;
        const uint32_t *y_tiles = y_pack + j * (k32 / 2);
        for (size_t i = 0; i < m16; i += 16) {
            const uint32_t *x_tiles = x_pack + i * (k32 / 2);
            MLP_TILE_ZERO(0);
            for (size_t q = 0; q < chunks; q++) {
                MLP_TILE_LOAD(1, y_tiles + q * 256, 64);
                MLP_TILE_LOAD(2, x_tiles + q * 256, 64);
                MLP_TILE_DP(0, 1, 2);
            }
            MLP_TILE_STORE(0, tile, 64);
            __mmask16 rows = mlp_bf16_mask16(m - (int)i);
            __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
            for (int jj = 0; jj < cols; jj++) {
                float *cj = c + i + (j + jj) * (size_t)ldc;
                __m512 sum = _mm512_mul_ps(va, _mm512_load_ps(tile + jj * 16));
                if (beta != 0.0f)
                    sum = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(rows, cj), sum);
                _mm512_mask_storeu_ps(cj, rows, sum);
            }
        }
    }
    MLP_TILE_RELEASE();
    free(x_pack);
    return 0;
}
