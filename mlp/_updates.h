/* The optimizers' elementwise update loops (see mlp/_updates.pxi for the
 * rules and where they run), compiled for AVX2+FMA and for the baseline and
 * picked at load time, as the sigmoid is (MLP_MULTIVERSION, _fastexp.h):
 * Adam's square root and division run 8 floats at a time instead of 4.
 * restrict: the four arrays are distinct, which spares the compiler a
 * run-time alias check per call. The gradient is grads times grad_scale:
 * 1 for a mean gradient, 1 / n for a sum over n samples (one rounding
 * either way, and no pass of its own over the sums). */
#ifndef MLP_UPDATES_H
#define MLP_UPDATES_H

#include <math.h>
#include <stddef.h>

#include "_fastexp.h"

#define MLP_DEFINE_MOMENTUM(NAME, T)                                                   \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict grads, T *restrict velocity,    \
                 ptrdiff_t count, T grad_scale, T lr, T wd, T mu, int nesterov)         \
{                                                                                       \
    ptrdiff_t i;                                                                        \
    if (nesterov) {                                                                     \
        for (i = 0; i < count; i++) {                                                   \
            T g = grads[i] * grad_scale + wd * params[i];                               \
            T v = mu * velocity[i] + g;                                                 \
            velocity[i] = v;                                                            \
            params[i] = params[i] - lr * (g + mu * v);                                  \
        }                                                                               \
    } else {                                                                            \
        for (i = 0; i < count; i++) {                                                   \
            T g = grads[i] * grad_scale + wd * params[i];                               \
            T v = mu * velocity[i] + g;                                                 \
            velocity[i] = v;                                                            \
            params[i] = params[i] - lr * v;                                             \
        }                                                                               \
    }                                                                                   \
}

#define MLP_DEFINE_ADAM(NAME, T, SQRT)                                                  \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict grads, T *restrict m1,          \
                 T *restrict m2, ptrdiff_t count, T grad_scale, T shrink,               \
                 T coupled_decay, T b1, T one_minus_b1, T b2, T one_minus_b2,           \
                 T step_size, T inv_root_correction, T eps)                             \
{                                                                                       \
    ptrdiff_t i;                                                                        \
    for (i = 0; i < count; i++) {                                                       \
        T p = params[i] * shrink;                                                       \
        T g = grads[i] * grad_scale + coupled_decay * p;                                \
        T m = b1 * m1[i] + one_minus_b1 * g;                                            \
        T v = b2 * m2[i] + one_minus_b2 * g * g;                                        \
        m1[i] = m;                                                                      \
        m2[i] = v;                                                                      \
        params[i] = p - step_size * m / (SQRT(v) * inv_root_correction + eps);          \
    }                                                                                   \
}

/* Plain SGD from a gradient sum: params = decay * params + scale * sums,
 * with scale = -lr / n and decay = 1 - lr wd, as the weight GEMM applies it
 * (alpha and beta) where the gradient is not a GEMM's. */
#define MLP_DEFINE_SGD(NAME, T)                                                        \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict sums, ptrdiff_t count, T scale,  \
                 T decay)                                                               \
{                                                                                       \
    for (ptrdiff_t i = 0; i < count; i++)                                               \
        params[i] = decay * params[i] + scale * sums[i];                                \
}

MLP_DEFINE_SGD(mlp_sgdf, float)
MLP_DEFINE_SGD(mlp_sgd, double)
MLP_DEFINE_MOMENTUM(mlp_sgd_momentumf, float)
MLP_DEFINE_MOMENTUM(mlp_sgd_momentum, double)
MLP_DEFINE_ADAM(mlp_adamf, float, sqrtf)
MLP_DEFINE_ADAM(mlp_adam, double, sqrt)

#endif
