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
 * The threads stay between calls in a small pool (below), spinning for
 * 0.1 ms after a call and then sleeping, so that a short call (inference
 * on a few rows) does not pay ~40 us to start one, and nothing spins once
 * the caller's loop is over. Where pthreads or GCC atomics are missing
 * (MSVC), mlp_parallel_run runs everything on the calling thread and says
 * so in its return value.
 */
#ifndef MLP_PARALLEL_H
#define MLP_PARALLEL_H

#include <stddef.h>
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
static int mlp_parallel_run_optional(mlp_task fn, void *ctx, int n_threads)
{
    (void)n_threads;
    fn(ctx, 0, 1);
    return 1;
}
static ptrdiff_t mlp_claim(ptrdiff_t *counter, ptrdiff_t count)
{
    ptrdiff_t first = *counter;
    *counter += count;
    return first;
}
static void mlp_count_done(ptrdiff_t *counter, ptrdiff_t count) { *counter += count; }
static void mlp_wait_count(ptrdiff_t *counter, ptrdiff_t target) { (void)counter; (void)target; }

#else

#include <pthread.h>
#include <sched.h>
#include <time.h>

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

/* Start threads for one call, run fn on them, join them: the fallback
 * when the pool below is in use by another caller or cannot grow. */
static int mlp_run_on_new_threads(mlp_task fn, void *ctx, int n_threads,
                                  mlp_barrier *barrier)
{
    pthread_t *threads;
    mlp_thread_arg *args;
    int started = 1, go = 0, i;
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

/* The pool: worker threads kept between calls, so that a call of a few
 * tens of microseconds (inference on a small block) does not pay for
 * starting threads (~40 us for one on these VMs, more when its vCPU was
 * idle). Between calls a worker spins for MLP_POOL_SPIN_NS, so calls in a
 * loop find it awake, then sleeps on a condition variable: unlike a BLAS
 * pool it does not keep a core busy once the caller's loop is over (the
 * two-pool hazard in bench/README.md).
 *
 * Each worker has its own slot: the caller writes the task into the slots
 * of the workers it needs, then bumps each slot's generation; the worker
 * runs the task and publishes that generation as done. One caller at a
 * time owns the pool (`busy`); another caller meanwhile starts threads of
 * its own. A forked child starts with an empty pool. */
#define MLP_POOL_MAX 64
#define MLP_POOL_SPIN_NS 100000L
#define MLP_POOL_PAUSES 256

typedef struct {
    mlp_task fn;
    void *ctx;
    int n_threads;
    unsigned generation;   /* bumped by the caller: a new task */
    unsigned done;         /* the generation the worker finished */
    unsigned offer;        /* the generation still to take, 0 once taken or
                            * withdrawn (mlp_parallel_run_optional) */
    char pad[64];          /* slots on their own cache lines */
} mlp_pool_slot;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int n_workers;         /* started so far (tids 1..n_workers) */
    int busy;
    int atfork_set;
    mlp_pool_slot slot[MLP_POOL_MAX + 1];
} mlp_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, {{0}}};

static long mlp_elapsed_ns(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

static void *mlp_pool_worker(void *p)
{
    int tid = (int)(size_t)p;
    mlp_pool_slot *slot = &mlp_pool.slot[tid];
    /* Set before this thread started, and bumped only for a new task. */
    unsigned seen = slot->done, expected;
    struct timespec idle_since;
    int spins;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &idle_since);
        spins = 0;
        while (__atomic_load_n(&slot->generation, __ATOMIC_ACQUIRE) == seen) {
            /* Spin for a moment, then yield on every check: on a host with
             * more runnable threads than cores, this worker may share its
             * core with the caller it waits for. */
            if (spins < MLP_POOL_PAUSES)
                mlp_cpu_relax();
            else
                sched_yield();
            if (++spins % 64 == 0 && mlp_elapsed_ns(&idle_since) > MLP_POOL_SPIN_NS) {
                pthread_mutex_lock(&mlp_pool.lock);
                while (__atomic_load_n(&slot->generation, __ATOMIC_ACQUIRE) == seen)
                    pthread_cond_wait(&mlp_pool.wake, &mlp_pool.lock);
                pthread_mutex_unlock(&mlp_pool.lock);
            }
        }
        seen = __atomic_load_n(&slot->generation, __ATOMIC_ACQUIRE);
        /* Take the task unless its caller withdrew it meanwhile (then fn
         * and ctx may already be gone, or belong to a later task). */
        expected = seen;
        if (__atomic_compare_exchange_n(&slot->offer, &expected, 0, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            slot->fn(slot->ctx, tid, slot->n_threads);
        __atomic_store_n(&slot->done, seen, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void mlp_pool_after_fork_in_child(void)
{
    /* Only the forking thread exists in the child. */
    pthread_mutex_init(&mlp_pool.lock, NULL);
    pthread_cond_init(&mlp_pool.wake, NULL);
    mlp_pool.n_workers = 0;
    mlp_pool.busy = 0;
}

/* Workers 1..n_threads - 1 started (the caller owns the pool); returns how
 * many threads, the caller included, can take part. */
static int mlp_pool_grow(int n_threads)
{
    pthread_t thread;
    pthread_attr_t attr;
    if (!mlp_pool.atfork_set) {
        pthread_atfork(NULL, NULL, mlp_pool_after_fork_in_child);
        mlp_pool.atfork_set = 1;
    }
    if (mlp_pool.n_workers >= n_threads - 1)
        return n_threads;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (mlp_pool.n_workers < n_threads - 1) {
        int tid = mlp_pool.n_workers + 1;
        mlp_pool.slot[tid].done = mlp_pool.slot[tid].generation;
        if (pthread_create(&thread, &attr, mlp_pool_worker, (void *)(size_t)tid) != 0)
            break;
        mlp_pool.n_workers = tid;
    }
    pthread_attr_destroy(&attr);
    return mlp_pool.n_workers + 1 < n_threads ? mlp_pool.n_workers + 1 : n_threads;
}

/* The pool's workers 1..n - 1 given fn(ctx, tid, n) and woken. */
static void mlp_pool_post(mlp_task fn, void *ctx, int n)
{
    int i;
    unsigned generation;
    for (i = 1; i < n; i++) {
        mlp_pool.slot[i].fn = fn;
        mlp_pool.slot[i].ctx = ctx;
        mlp_pool.slot[i].n_threads = n;
        generation = mlp_pool.slot[i].generation + 1;
        if (generation == 0)  /* after 2^32 tasks: 0 is the offer taken */
            generation = 1;
        __atomic_store_n(&mlp_pool.slot[i].offer, generation, __ATOMIC_RELAXED);
        __atomic_store_n(&mlp_pool.slot[i].generation, generation, __ATOMIC_RELEASE);
    }
    /* Wake the sleepers; the lock orders this after a worker's last check. */
    pthread_mutex_lock(&mlp_pool.lock);
    pthread_cond_broadcast(&mlp_pool.wake);
    pthread_mutex_unlock(&mlp_pool.lock);
}

/* Wait until pool worker i has finished with the task last posted to it. */
static void mlp_pool_wait(int i)
{
    int spins = 0;
    while (__atomic_load_n(&mlp_pool.slot[i].done, __ATOMIC_ACQUIRE)
           != __atomic_load_n(&mlp_pool.slot[i].generation, __ATOMIC_RELAXED)) {
        if (spins < 1000) {
            spins++;
            mlp_cpu_relax();
        } else {
            sched_yield();
        }
    }
}

/* As mlp_parallel_run, for work that the threads claim piece by piece (a
 * counter in ctx, mlp_claim), so that the caller can finish it alone: once
 * fn returns on the caller, a worker that has not started yet is told not
 * to, instead of being waited for. fn must not use a barrier. Inference
 * runs on it: on a host busier than its cores a worker may wait
 * milliseconds for one, and a call of tens of microseconds must not wait
 * with it (bench/README.md). Returns how many threads took part, the
 * caller included. */
static int mlp_parallel_run_optional(mlp_task fn, void *ctx, int n_threads)
{
    int n, i, took = 1;
    unsigned offer;
    if (n_threads <= 1 || n_threads > MLP_POOL_MAX + 1
        || __atomic_exchange_n(&mlp_pool.busy, 1, __ATOMIC_ACQUIRE)) {
        fn(ctx, 0, 1);
        return 1;
    }
    n = mlp_pool_grow(n_threads);
    mlp_pool_post(fn, ctx, n);
    fn(ctx, 0, n);
    for (i = 1; i < n; i++) {
        offer = __atomic_load_n(&mlp_pool.slot[i].generation, __ATOMIC_RELAXED);
        if (!__atomic_compare_exchange_n(&mlp_pool.slot[i].offer, &offer, 0, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            /* Taken: the worker may still be inside fn, reading ctx. */
            mlp_pool_wait(i);
            took++;
        }
    }
    __atomic_store_n(&mlp_pool.busy, 0, __ATOMIC_RELEASE);
    return took;
}

/* The first of the next `count` items of a sequence that the threads of a
 * task share (mlp_parallel_run_optional); *counter starts at 0. */
static inline ptrdiff_t mlp_claim(ptrdiff_t *counter, ptrdiff_t count)
{
    return __atomic_fetch_add(counter, count, __ATOMIC_RELAXED);
}

/* Add count to a tally of finished work that another thread of the task
 * waits on (mlp_wait_count): what was written before is visible to it. */
static inline void mlp_count_done(ptrdiff_t *counter, ptrdiff_t count)
{
    __atomic_add_fetch(counter, count, __ATOMIC_RELEASE);
}

/* Wait until the tally reaches target: spin for a moment, then yield. */
static void mlp_wait_count(ptrdiff_t *counter, ptrdiff_t target)
{
    int spins = 0;
    while (__atomic_load_n(counter, __ATOMIC_ACQUIRE) < target) {
        if (spins < 1000) {
            spins++;
            mlp_cpu_relax();
        } else {
            sched_yield();
        }
    }
}

/* Run fn(ctx, tid, n) on n threads, the caller being tid 0, and return n
 * once all have finished. n is n_threads, or fewer if the system refused to
 * start more; fn must split its work by the n it is given. barrier is set
 * up for those n threads before any of them runs. */
static int mlp_parallel_run(mlp_task fn, void *ctx, int n_threads,
                            mlp_barrier *barrier)
{
    int n, i;
    mlp_barrier_init(barrier, 1);
    if (n_threads <= 1) {
        fn(ctx, 0, 1);
        return 1;
    }
    if (n_threads > MLP_POOL_MAX + 1 || __atomic_exchange_n(&mlp_pool.busy, 1, __ATOMIC_ACQUIRE))
        return mlp_run_on_new_threads(fn, ctx, n_threads, barrier);
    n = mlp_pool_grow(n_threads);
    mlp_barrier_init(barrier, n);
    mlp_pool_post(fn, ctx, n);
    fn(ctx, 0, n);
    for (i = 1; i < n; i++)
        mlp_pool_wait(i);
    __atomic_store_n(&mlp_pool.busy, 0, __ATOMIC_RELEASE);
    return n;
}
#endif
#endif
