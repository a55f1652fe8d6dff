/* thread_race.c — one run of the "first CLBlast steps in several threads" race, as a program
 * of its own: CLBlast's first call in a process initialises its process-wide database and
 * caches, so the race exists once per process and test_threads runs this program many times.
 *
 * Usage: thread_race THREADS. The contexts are created one after the other (device enumeration
 * is not what this checks), then THREADS threads each take their context's first step on the
 * CLBlast backend at the same moment and compare d with the CPU reference. Exit status: 0 all
 * correct, 1 a step failed or was wrong (a line on stderr says which), 2 bad usage or setup; a
 * crash is a signal. */
#include "bloopcl.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define MAX_THREADS 16
#define N 4097

typedef struct racer {
    bloopcl_context *ctx;
    bloopcl_combiner *comb;
    bloopcl_config config;
    float g[N], a[N], d[N], d_reference[N];
    bloopcl_status status;
    double worst;  /* largest |d - d_reference| / (1 + |d_reference|) */
} racer;

static pthread_barrier_t start_line;

static void *first_step(void *argument)
{
    racer *r = argument;
    pthread_barrier_wait(&start_line);
    r->status = bloopcl_step_host(r->comb, r->g, r->a, r->d);
    for (size_t i = 0; i < N; ++i) {
        double error = fabs((double)r->d[i] - r->d_reference[i]) / (1.0 + fabs(r->d_reference[i]));
        if (!(error <= r->worst))  /* NaN counts as the worst */
            r->worst = isnan(error) ? INFINITY : error;
    }
    return NULL;
}

static int prepare(racer *r, uint64_t seed)
{
    bloopcl_config_default(&r->config, BLOOPCL_METHOD_BLOOP);
    r->config.dots = BLOOPCL_DOTS_CLBLAST;
    r->config.init = BLOOPCL_INIT_RANDOM;  /* r far from 0 on the first step */
    r->config.seed = seed;
    if (bloopcl_context_create(NULL, &r->ctx) != BLOOPCL_OK ||
        bloopcl_combiner_create(r->ctx, &r->config, N, &r->comb) != BLOOPCL_OK) {
        fprintf(stderr, "setup: %s\n", bloopcl_context_last_error(r->ctx));
        return 2;
    }
    bloopcl_reference_normal(seed + 1, 0, N, r->g);
    bloopcl_reference_normal(seed + 2, 0, N, r->a);
    bloopcl_reference_state ref;
    if (bloopcl_reference_init(&r->config, N, &ref) != BLOOPCL_OK)
        return 2;
    bloopcl_reference_step(&r->config, &ref, r->g, r->a, r->d_reference, NULL);
    bloopcl_reference_free(&ref);
    return 0;
}

int main(int argc, char **argv)
{
    int threads = argc == 2 ? atoi(argv[1]) : 0;
    if (threads < 1 || threads > MAX_THREADS) {
        fprintf(stderr, "usage: thread_race THREADS (1..%d)\n", MAX_THREADS);
        return 2;
    }
    static racer racers[MAX_THREADS];
    for (int t = 0; t < threads; ++t)
        if (prepare(&racers[t], 100u * (uint64_t)t + 1u) != 0)
            return 2;
    pthread_t ids[MAX_THREADS];
    pthread_barrier_init(&start_line, NULL, (unsigned)threads);
    for (int t = 0; t < threads; ++t)
        pthread_create(&ids[t], NULL, first_step, &racers[t]);
    int verdict = 0;
    for (int t = 0; t < threads; ++t) {
        pthread_join(ids[t], NULL);
        racer *r = &racers[t];
        if (r->status != BLOOPCL_OK || !(r->worst <= 1e-4)) {
            fprintf(stderr, "thread %d: status %d (%s), worst relative error of d %.3g\n", t,
                    (int)r->status, bloopcl_context_last_error(r->ctx), r->worst);
            verdict = 1;
        }
    }
    for (int t = 0; t < threads; ++t) {
        bloopcl_combiner_destroy(racers[t].comb);
        bloopcl_context_destroy(racers[t].ctx);
    }
    pthread_barrier_destroy(&start_line);
    return verdict;
}
