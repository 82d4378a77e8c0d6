/* Worker threads for the training kernel: start n, run one function on all
 * of them, join them. Plus the barrier they meet at between layers.
 *
 * Why not OpenBLAS's own threads: at the batch sizes people train with
 * (30-256 rows) the GEMMs of a step are too small for OpenBLAS to split
 * well, and everything between two GEMMs (bias, activation, deltas) runs on
 * one core while OpenBLAS's other workers spin. Splitting each layer's units
 * across our own workers, each calling a single-threaded BLAS on its share,
 * does both the GEMMs and the elementwise work in parallel, keeps each
 * worker's slice of the weights in its own cache, and leaves no thread pool
 * spinning after the call returns (the two-pool hazard of numpy's and
 * scipy's OpenBLAS).
 *
 * The threads live for one kernel call (creating two costs ~50 us, against
 * ~100 ms of training per call). Where pthreads or GCC atomics are missing
 * (MSVC), mlp_parallel_run runs everything on the calling thread and says
 * so in its return value.
 */
#ifndef MLP_PARALLEL_H
#define MLP_PARALLEL_H

#include <stdlib.h>

typedef void (*mlp_task)(void *ctx, int tid, int n_threads);

/* Ask for the cache line holding p ahead of its use. */
#if defined(__GNUC__)
#define mlp_prefetch(p) __builtin_prefetch((p), 0, 3)
#else
#define mlp_prefetch(p) ((void)(p))
#endif

#if defined(_WIN32) || !defined(__GNUC__)

typedef struct { int unused; } mlp_barrier;
static void mlp_barrier_init(mlp_barrier *b, int n) { (void)b; (void)n; }
static void mlp_barrier_wait(mlp_barrier *b, int *sense) { (void)b; (void)sense; }
static int mlp_parallel_run(mlp_task fn, void *ctx, int n_threads,
                            mlp_barrier *barrier)
{
    (void)n_threads;
    (void)barrier;
    fn(ctx, 0, 1);
    return 1;
}

#else

#include <pthread.h>
#include <sched.h>

/* A sense-reversing barrier. Waits between layers are microseconds, so a
 * waiter spins first; after that it yields its core on every check, so that
 * on a machine busier than n_threads cores the thread it waits for can run. */
typedef struct {
    int n;
    int count;
    int sense;
} mlp_barrier;

static void mlp_barrier_init(mlp_barrier *b, int n)
{
    b->n = n;
    b->count = 0;
    b->sense = 0;
}

static inline void mlp_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* *sense is the caller's own flag, 0 before its first wait. */
static void mlp_barrier_wait(mlp_barrier *b, int *sense)
{
    int spins = 0;
    int s = !*sense;
    *sense = s;
    if (b->n <= 1)
        return;
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == b->n) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, s, __ATOMIC_RELEASE);
        return;
    }
    while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) != s) {
        if (spins < 1000) {
            spins++;
            mlp_cpu_relax();
        } else {
            sched_yield();
        }
    }
}

typedef struct {
    mlp_task fn;
    void *ctx;
    int tid;
    int *n_started;   /* final thread count, published before anyone runs */
    int *go;
} mlp_thread_arg;

static void *mlp_thread_main(void *p)
{
    mlp_thread_arg *a = (mlp_thread_arg *)p;
    while (!__atomic_load_n(a->go, __ATOMIC_ACQUIRE))
        sched_yield();
    a->fn(a->ctx, a->tid, __atomic_load_n(a->n_started, __ATOMIC_ACQUIRE));
    return NULL;
}

/* Run fn(ctx, tid, n) on n threads, the caller being tid 0, and return n
 * once all have finished. n is n_threads, or fewer if the system refused to
 * start more; fn must split its work by the n it is given. barrier is set
 * up for those n threads before any of them runs. */
static int mlp_parallel_run(mlp_task fn, void *ctx, int n_threads,
                            mlp_barrier *barrier)
{
    pthread_t *threads;
    mlp_thread_arg *args;
    int started = 1, go = 0, i;
    mlp_barrier_init(barrier, 1);
    if (n_threads <= 1) {
        fn(ctx, 0, 1);
        return 1;
    }
    threads = (pthread_t *)malloc(sizeof(pthread_t) * (size_t)n_threads);
    args = (mlp_thread_arg *)malloc(sizeof(mlp_thread_arg) * (size_t)n_threads);
    if (threads == NULL || args == NULL) {
        free(threads);
        free(args);
        fn(ctx, 0, 1);
        return 1;
    }
    for (i = 1; i < n_threads; i++) {
        args[i].fn = fn;
        args[i].ctx = ctx;
        args[i].tid = i;
        args[i].n_started = &started;
        args[i].go = &go;
        if (pthread_create(&threads[i], NULL, mlp_thread_main, &args[i]) != 0)
            break;
        started++;
    }
    mlp_barrier_init(barrier, started);
    __atomic_store_n(&started, started, __ATOMIC_RELEASE);
    __atomic_store_n(&go, 1, __ATOMIC_RELEASE);
    fn(ctx, 0, started);
    for (i = 1; i < started; i++)
        pthread_join(threads[i], NULL);
    free(threads);
    free(args);
    return started;
}

#endif
#endif
