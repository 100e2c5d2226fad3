// Persistent worker pool for ck_matmul (and ck_parallel).
//
// Workers wait for a new "generation" of the job word: they spin for a short while (so that the
// ~100 matmuls of one decoded token are dispatched within a microsecond or two) and then block on a
// condition variable, so an idle process burns no CPU. Calls are serialised by a mutex; a call made
// from inside a pool task runs its parts serially on the calling thread (no deadlock).
#define _GNU_SOURCE
#include "ck_internal.h"

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if CK_X86
#include <immintrin.h>
#define CK_PAUSE() _mm_pause()
#else
#define CK_PAUSE() ((void)0)
#endif

#define CK_MAX_THREADS 256

static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER; // one dispatch / reconfiguration at a time
static pthread_mutex_t g_sleep_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_sleep_cv = PTHREAD_COND_INITIALIZER;

static _Atomic uint64_t g_gen;        // bumped once per dispatch
static _Atomic int g_sleepers;        // workers blocked (or about to block) on g_sleep_cv
static _Atomic int g_done;            // workers finished with the current generation
static _Atomic int g_exit_from = INT_MAX; // workers with id >= this leave at the next generation
static _Atomic int g_threads;         // configured thread count (0 = not yet decided)
static _Atomic long g_spin_ns = -1;

// Job of the current generation (written under g_call_mu before the generation is published).
static ck_task_fn g_fn;
static void *g_ctx;
static int g_nth;

static int g_nworkers; // workers alive, ids 1..g_nworkers (guarded by g_call_mu)
static pthread_t g_tids[CK_MAX_THREADS];
static uint64_t g_start_gen[CK_MAX_THREADS];

static _Thread_local int t_in_task;

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static long spin_ns(void) {
    long v = atomic_load_explicit(&g_spin_ns, memory_order_relaxed);
    if (v < 0) {
        v = 200000; // 200 us
        const char *e = getenv("CK_SPIN_US");
        if (e && *e) { long us = atol(e); if (us >= 0 && us < 10000000) v = us * 1000; }
        atomic_store_explicit(&g_spin_ns, v, memory_order_relaxed);
    }
    return v;
}

static int default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int a = CPU_COUNT(&set);
        if (a >= 1 && a < n) n = a; // a container / taskset may give us fewer CPUs than are online
    }
#endif
    if (n > CK_MAX_THREADS) n = CK_MAX_THREADS;
    return (int)n;
}

int ck_pool_threads(void) {
    int t = atomic_load_explicit(&g_threads, memory_order_relaxed);
    if (t <= 0) {
        int d = default_threads(), expect = 0;
        atomic_compare_exchange_strong(&g_threads, &expect, d);
        t = atomic_load(&g_threads);
    }
    return t;
}

static uint64_t wait_generation(uint64_t seen) {
    long limit = spin_ns(), t0 = 0;
    for (unsigned i = 0;; i++) {
        uint64_t g = atomic_load_explicit(&g_gen, memory_order_acquire);
        if (g != seen) return g;
        CK_PAUSE();
        if ((i & 63) == 63) {
            long t = now_ns();
            if (t0 == 0) t0 = t;
            else if (t - t0 >= limit) break;
        }
    }
    pthread_mutex_lock(&g_sleep_mu);
    atomic_fetch_add(&g_sleepers, 1);
    uint64_t g;
    while ((g = atomic_load(&g_gen)) == seen) pthread_cond_wait(&g_sleep_cv, &g_sleep_mu);
    atomic_fetch_sub(&g_sleepers, 1);
    pthread_mutex_unlock(&g_sleep_mu);
    return g;
}

static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seen = g_start_gen[id];
    for (;;) {
        seen = wait_generation(seen);
        int leaving = id >= atomic_load(&g_exit_from);
        if (!leaving && g_fn && id < g_nth) {
            t_in_task = 1;
            g_fn(g_ctx, id, g_nth);
            t_in_task = 0;
        }
        atomic_fetch_add_explicit(&g_done, 1, memory_order_release);
        if (leaving) return NULL;
    }
}

// Publishes the job (caller holds g_call_mu) and wakes the workers.
static void publish(ck_task_fn fn, void *ctx, int nth) {
    g_fn = fn;
    g_ctx = ctx;
    g_nth = nth;
    atomic_store_explicit(&g_done, 0, memory_order_relaxed);
    atomic_fetch_add(&g_gen, 1); // seq_cst: pairs with the sleepers' increment
    if (atomic_load(&g_sleepers) > 0) {
        pthread_mutex_lock(&g_sleep_mu);
        pthread_cond_broadcast(&g_sleep_cv);
        pthread_mutex_unlock(&g_sleep_mu);
    }
}

static void wait_workers(int count) {
    for (unsigned i = 0; atomic_load_explicit(&g_done, memory_order_acquire) < count; i++) {
        CK_PAUSE();
        if (i > (1u << 16)) sched_yield(); // a worker was descheduled: do not hog its core
    }
}

// After fork() the child has none of the workers: forget them (they are re-created on demand) and
// reset the locks, which may have been held by other threads of the parent.
static void atfork_child(void) {
    pthread_mutex_init(&g_call_mu, NULL);
    pthread_mutex_init(&g_sleep_mu, NULL);
    pthread_cond_init(&g_sleep_cv, NULL);
    atomic_store(&g_sleepers, 0);
    atomic_store(&g_exit_from, INT_MAX);
    g_nworkers = 0;
    t_in_task = 0;
}
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;
static void atfork_register(void) { pthread_atfork(NULL, NULL, atfork_child); }

// Grows (or shrinks) the set of workers to `want` (caller holds g_call_mu). Returns workers alive.
static int resize_workers(int want) {
    pthread_once(&g_atfork_once, atfork_register);
    if (want < 0) want = 0;
    if (want > CK_MAX_THREADS - 1) want = CK_MAX_THREADS - 1;
    if (want < g_nworkers) {
        int old = g_nworkers;
        atomic_store(&g_exit_from, want + 1);
        publish(NULL, NULL, 0);
        wait_workers(old);
        for (int id = want + 1; id <= old; id++) pthread_join(g_tids[id], NULL);
        atomic_store(&g_exit_from, INT_MAX);
        g_nworkers = want;
    }
    while (g_nworkers < want) {
        int id = g_nworkers + 1;
        g_start_gen[id] = atomic_load(&g_gen);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 1 << 20);
        int rc = pthread_create(&g_tids[id], &attr, worker_main, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (rc != 0) break; // run with the workers we have
        g_nworkers = id;
    }
    return g_nworkers;
}

void ck_pool_run(ck_task_fn fn, void *ctx, int nth) {
    if (nth <= 1 || t_in_task) {
        for (int i = 0; i < nth; i++) fn(ctx, i, nth);
        return;
    }
    pthread_mutex_lock(&g_call_mu);
    int workers = g_nworkers;
    if (workers < nth - 1) workers = resize_workers(nth - 1);
    if (workers < nth - 1) nth = workers + 1; // thread creation failed: tasks are re-split below
    publish(fn, ctx, nth);
    t_in_task = 1;
    fn(ctx, 0, nth);
    t_in_task = 0;
    wait_workers(workers);
    pthread_mutex_unlock(&g_call_mu);
}

void ck_set_threads(int n) {
    if (n < 1) n = default_threads();
    if (n > CK_MAX_THREADS) n = CK_MAX_THREADS;
    if (t_in_task) { atomic_store(&g_threads, n); return; }
    pthread_mutex_lock(&g_call_mu);
    atomic_store(&g_threads, n);
    if (g_nworkers > n - 1) resize_workers(n - 1); // extra workers leave; new ones start lazily
    pthread_mutex_unlock(&g_call_mu);
}

int ck_get_threads(void) { return ck_pool_threads(); }
int ck_pool_in_task(void) { return t_in_task; }

typedef struct { void (*fn)(void *, int, int); void *ctx; } par_ctx;
static void par_task(void *c, int tid, int nth) { par_ctx *p = c; p->fn(p->ctx, tid, nth); }

void ck_parallel(void (*fn)(void *ctx, int tid, int nthreads), void *ctx) {
    int nth = ck_pool_threads();
    if (nth <= 1 || t_in_task) { fn(ctx, 0, 1); return; }
    par_ctx p = {fn, ctx};
    ck_pool_run(par_task, &p, nth);
}
