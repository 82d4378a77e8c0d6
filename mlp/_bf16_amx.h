/* The AMX-BF16 path of mlp_sbgemm (Intel Sapphire Rapids and later), and its
 * emulation for the tests; included by _bf16.h after _bf16_avx512.h, whose
 * packing it shares (every AMX CPU has AVX512_BF16).
 *
 * Using the tiles takes three things: the CPU has AMX-TILE and AMX-BF16
 * (cpuid leaf 7: EDX bits 24 and 22), the kernel lets the process use the
 * tile data state (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA),
 * asked once per process), and every thread loads a tile configuration
 * before its first tile instruction (done on every call: mlp's worker threads
 * call in from anywhere). */
#ifndef MLP_BF16_AMX_H
#define MLP_BF16_AMX_H

#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define MLP_AMX_TARGET                                                                     \
    __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,"        \
                          "avx512bf16")))

/* Whether the CPU has the tiles and the process may use them (asks once). */
static int mlp_bf16_amx_usable(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    if (!((edx >> 24) & 1u) || !((edx >> 22) & 1u)) return 0;
#if defined(__linux__) && defined(SYS_arch_prctl)
    /* ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 (asm/prctl.h,
     * which older kernel headers lack). */
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    return 0;
#endif
}

/* The 64-byte tile configuration: palette 1; tiles 0 (C, float32), 1 (16
 * rows of Y) and 2 (16 pairs of an X sliver), each 16 rows of 64 bytes. */
typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} mlp_amx_config;

static inline void mlp_amx_config_init(mlp_amx_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->palette_id = 1;
    for (int t = 0; t < 3; t++) {
        cfg->colsb[t] = 64;
        cfg->rows[t] = 16;
    }
}

/* ---- the tile instructions ---- */
#define MLP_AMX_FN mlp_sbgemm_amx
#define MLP_AMX_ATTR MLP_AMX_TARGET
#define MLP_TILE_STATE mlp_amx_config mlp_amx_cfg
#define MLP_TILE_CONFIG() (mlp_amx_config_init(&mlp_amx_cfg), _tile_loadconfig(&mlp_amx_cfg))
#define MLP_TILE_ZERO(t) _tile_zero(t)
#define MLP_TILE_LOAD(t, base, stride) _tile_loadd(t, base, stride)
#define MLP_TILE_DP(c, x, y) _tile_dpbf16ps(c, x, y)
#define MLP_TILE_STORE(t, base, stride) _tile_stored(t, base, stride)
#define MLP_TILE_RELEASE() _tile_release()
#include "_bf16_amx_body.h"
#undef MLP_AMX_FN
#undef MLP_AMX_ATTR
#undef MLP_TILE_STATE
#undef MLP_TILE_CONFIG
#undef MLP_TILE_ZERO
#undef MLP_TILE_LOAD
#undef MLP_TILE_DP
#undef MLP_TILE_STORE
#undef MLP_TILE_RELEASE

/* ---- their emulation, from the instructions' definitions in Intel's
 * Software Developer's Manual (TDPBF16PS: for each row m of the
 * destination, each pair k and column n, two products added in turn) ---- */
typedef struct { uint8_t tmm[3][16][64]; } mlp_amx_tiles;

static inline void mlp_amx_emu_load(mlp_amx_tiles *s, int t, const void *base, size_t stride) {
    for (int r = 0; r < 16; r++) memcpy(s->tmm[t][r], (const char *)base + r * stride, 64);
}

static inline void mlp_amx_emu_store(mlp_amx_tiles *s, int t, void *base, size_t stride) {
    for (int r = 0; r < 16; r++) memcpy((char *)base + r * stride, s->tmm[t][r], 64);
}

static void mlp_amx_emu_dpbf16ps(mlp_amx_tiles *s, int dst, int src1, int src2) {
    for (int row = 0; row < 16; row++) {
        float acc[16];
        uint16_t a[32], bk[32];
        memcpy(acc, s->tmm[dst][row], 64);
        memcpy(a, s->tmm[src1][row], 64);
        for (int k = 0; k < 16; k++) {
            memcpy(bk, s->tmm[src2][k], 64);
            for (int col = 0; col < 16; col++) {
                acc[col] += mlp_bf16_to_f32(a[2 * k]) * mlp_bf16_to_f32(bk[2 * col]);
                acc[col] += mlp_bf16_to_f32(a[2 * k + 1]) * mlp_bf16_to_f32(bk[2 * col + 1]);
            }
        }
        memcpy(s->tmm[dst][row], acc, 64);
    }
}

#define MLP_AMX_FN mlp_sbgemm_amx_emulated
#define MLP_AMX_ATTR MLP_BF16_AVX512_TARGET
#define MLP_TILE_STATE mlp_amx_tiles mlp_amx_state
#define MLP_TILE_CONFIG() memset(&mlp_amx_state, 0, sizeof mlp_amx_state)
#define MLP_TILE_ZERO(i) memset(mlp_amx_state.tmm[i], 0, 16 * 64)
#define MLP_TILE_LOAD(t, base, stride) mlp_amx_emu_load(&mlp_amx_state, t, base, stride)
#define MLP_TILE_DP(c, x, y) mlp_amx_emu_dpbf16ps(&mlp_amx_state, c, x, y)
#define MLP_TILE_STORE(t, base, stride) mlp_amx_emu_store(&mlp_amx_state, t, base, stride)
#define MLP_TILE_RELEASE() ((void)0)
#include "_bf16_amx_body.h"
#undef MLP_AMX_FN
#undef MLP_AMX_ATTR
#undef MLP_TILE_STATE
#undef MLP_TILE_CONFIG
#undef MLP_TILE_ZERO
#undef MLP_TILE_LOAD
#undef MLP_TILE_DP
#undef MLP_TILE_STORE
#undef MLP_TILE_RELEASE

#endif
