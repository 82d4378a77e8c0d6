/* The optimizers' elementwise update loops (see mlp/_updates.pxi for the
 * rules and where they run), compiled for AVX2+FMA and for the baseline and
 * picked at load time, as the sigmoid is (MLP_MULTIVERSION, _fastexp.h):
 * Adam's square root and division run 8 floats at a time instead of 4.
 * restrict: the four arrays are distinct, which spares the compiler a
 * run-time alias check per call. The gradient is grads times grad_scale:
 * 1 for a mean gradient, 1 / n for a sum over n samples (one rounding
 * either way, and no pass of its own over the sums).
 *
 * The rules with state (momentum, Adam, RMSprop, Adagrad) run with subnormal
 * numbers flushed to zero
 * (x86's FTZ and DAZ bits, set for the loop and restored after it). A
 * velocity or first moment whose gradient stays zero, as the weights of a
 * pixel that is blank in most images, decays by mu or beta1 every step until
 * it is subnormal, and then stays there: x86 CPUs compute with subnormal
 * operands tens of times slower. After 2,000-8,000 steps of batch 64 on
 * MNIST, 6-7% of Adam's first moments are subnormal; with a tenth of them
 * subnormal its loop ran 2.2x slower. Below float's 1.2e-38 (double's 2.2e-308) such a
 * value moves no weight: p - lr * v rounds to p unless p itself is that small.
 * So the state reads zero where torch.optim's would hold a subnormal, and the
 * weights come out as they would without the flush. */
#ifndef MLP_UPDATES_H
#define MLP_UPDATES_H

#include <math.h>
#include <stddef.h>

#include "_fastexp.h"

#if defined(__SSE2__)
#include <xmmintrin.h>
/* MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6). */
#define MLP_FLUSH_SUBNORMALS_BITS 0x8040u
static inline unsigned int mlp_flush_subnormals_begin(void)
{
    unsigned int saved = _mm_getcsr();
    _mm_setcsr(saved | MLP_FLUSH_SUBNORMALS_BITS);
    return saved;
}
static inline void mlp_flush_subnormals_end(unsigned int saved) { _mm_setcsr(saved); }
#else
/* Elsewhere the rules keep IEEE subnormals (and their speed there). */
static inline unsigned int mlp_flush_subnormals_begin(void) { return 0; }
static inline void mlp_flush_subnormals_end(unsigned int saved) { (void)saved; }
#endif

#define MLP_DEFINE_MOMENTUM(NAME, T)                                                   \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict grads, T *restrict velocity,    \
                 ptrdiff_t count, T grad_scale, T lr, T wd, T mu, int nesterov)         \
{                                                                                       \
    ptrdiff_t i;                                                                        \
    unsigned int saved_fp_mode = mlp_flush_subnormals_begin();                          \
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
    mlp_flush_subnormals_end(saved_fp_mode);                                            \
}

#define MLP_DEFINE_ADAM(NAME, T, SQRT)                                                  \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict grads, T *restrict m1,          \
                 T *restrict m2, ptrdiff_t count, T grad_scale, T shrink,               \
                 T coupled_decay, T b1, T one_minus_b1, T b2, T one_minus_b2,           \
                 T step_size, T inv_root_correction, T eps)                             \
{                                                                                       \
    ptrdiff_t i;                                                                        \
    unsigned int saved_fp_mode = mlp_flush_subnormals_begin();                          \
    for (i = 0; i < count; i++) {                                                       \
        T p = params[i] * shrink;                                                       \
        T g = grads[i] * grad_scale + coupled_decay * p;                                \
        T m = b1 * m1[i] + one_minus_b1 * g;                                            \
        T v = b2 * m2[i] + one_minus_b2 * g * g;                                        \
        m1[i] = m;                                                                      \
        m2[i] = v;                                                                      \
        params[i] = p - step_size * m / (SQRT(v) * inv_root_correction + eps);          \
    }                                                                                   \
    mlp_flush_subnormals_end(saved_fp_mode);                                            \
}

/* torch.optim.RMSprop: g = grad + wd p; sq = alpha sq + (1 - alpha) g^2;
 * centered: ga = ga + (1 - alpha)(g - ga) (torch's lerp), avg = sqrt(sq - ga^2) + eps,
 * otherwise avg = sqrt(sq) + eps; momentum: buf = mu buf + g / avg, p -= lr buf;
 * otherwise p -= lr g / avg. buf and ga are NULL when the rule keeps no such
 * state (the branch is the same for every element, hoisted by the compiler). */
#define MLP_DEFINE_RMSPROP(NAME, T, SQRT)                                               \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict grads, T *restrict square_avg,  \
                 T *restrict momentum_buffer, T *restrict grad_avg, ptrdiff_t count,    \
                 T grad_scale, T lr, T wd, T alpha, T one_minus_alpha, T eps, T mu)     \
{                                                                                       \
    ptrdiff_t i;                                                                        \
    unsigned int saved_fp_mode = mlp_flush_subnormals_begin();                          \
    for (i = 0; i < count; i++) {                                                       \
        T p = params[i];                                                                \
        T g = grads[i] * grad_scale + wd * p;                                           \
        T sq = alpha * square_avg[i] + one_minus_alpha * g * g;                         \
        T avg;                                                                          \
        square_avg[i] = sq;                                                             \
        if (grad_avg) {                                                                 \
            T ga = grad_avg[i] + one_minus_alpha * (g - grad_avg[i]);                   \
            grad_avg[i] = ga;                                                           \
            avg = SQRT(sq - ga * ga) + eps;                                             \
        } else {                                                                        \
            avg = SQRT(sq) + eps;                                                       \
        }                                                                               \
        if (momentum_buffer) {                                                          \
            T b = mu * momentum_buffer[i] + g / avg;                                    \
            momentum_buffer[i] = b;                                                     \
            params[i] = p - lr * b;                                                     \
        } else {                                                                        \
            params[i] = p - lr * (g / avg);                                             \
        }                                                                               \
    }                                                                                   \
    mlp_flush_subnormals_end(saved_fp_mode);                                            \
}

/* torch.optim.Adagrad at the step's clr = lr / (1 + (t - 1) lr_decay):
 * g = grad + wd p; sum += g^2; p -= clr g / (sqrt(sum) + eps). */
#define MLP_DEFINE_ADAGRAD(NAME, T, SQRT)                                               \
MLP_MULTIVERSION                                                                        \
static void NAME(T *restrict params, const T *restrict grads, T *restrict sums,        \
                 ptrdiff_t count, T grad_scale, T clr, T wd, T eps)                     \
{                                                                                       \
    ptrdiff_t i;                                                                        \
    unsigned int saved_fp_mode = mlp_flush_subnormals_begin();                          \
    for (i = 0; i < count; i++) {                                                       \
        T p = params[i];                                                                \
        T g = grads[i] * grad_scale + wd * p;                                           \
        T s = sums[i] + g * g;                                                          \
        sums[i] = s;                                                                    \
        params[i] = p - clr * (g / (SQRT(s) + eps));                                    \
    }                                                                                   \
    mlp_flush_subnormals_end(saved_fp_mode);                                            \
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
MLP_DEFINE_RMSPROP(mlp_rmspropf, float, sqrtf)
MLP_DEFINE_RMSPROP(mlp_rmsprop, double, sqrt)
MLP_DEFINE_ADAGRAD(mlp_adagradf, float, sqrtf)
MLP_DEFINE_ADAGRAD(mlp_adagrad, double, sqrt)

#endif
