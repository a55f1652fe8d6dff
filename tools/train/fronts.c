/* fronts.c — see fronts.h. */
#include "fronts.h"
#include "options.h"
#include "stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool is_bloop(const run_result *r, uint64_t seed)
{
    return strcmp(r->label, curve_name(CURVE_BLOOP)) == 0 && r->seed == seed;
}

/* Bloop's front of `seed`: its points sorted by aux loss. Returns the count. */
static size_t bloop_front(const run_result *res, size_t n, uint64_t seed,
                          const run_result **front)
{
    size_t k = 0;
    for (size_t i = 0; i < n; ++i) {
        if (!is_bloop(&res[i], seed))
            continue;
        size_t j = k++;
        for (; j > 0 && front[j - 1]->aux_loss > res[i].aux_loss; --j)
            front[j] = front[j - 1];
        front[j] = &res[i];
    }
    return k;
}

/* Linear interpolation of the front's losses at aux loss x; 0 when x is outside its range. */
static int front_at(const run_result *const *front, size_t k, double x, double *train,
                    double *test)
{
    for (size_t j = 0; j + 1 < k; ++j) {
        double x0 = front[j]->aux_loss, x1 = front[j + 1]->aux_loss;
        if (x < x0 || x > x1)
            continue;
        double t = x1 > x0 ? (x - x0) / (x1 - x0) : 0.0;
        *train = front[j]->train_loss + t * (front[j + 1]->train_loss - front[j]->train_loss);
        *test = front[j]->test_loss + t * (front[j + 1]->test_loss - front[j]->test_loss);
        return 1;
    }
    return 0;
}

/* The gaps of `run` to Bloop's front of its seed; 0 if unmatched. */
static int gap_of(const run_result *res, size_t n, const run_result *run, double *train_gap,
                  double *test_gap)
{
    const run_result **front = malloc(n * sizeof *front);
    size_t k = front ? bloop_front(res, n, run->seed, front) : 0;
    double tr, te;
    int matched = front_at(front, k, run->aux_loss, &tr, &te);
    if (matched)
        *train_gap = run->train_loss - tr, *test_gap = run->test_loss - te;
    free(front);
    return matched;
}

void fronts_print_gap(const run_result *res, size_t n, const char *other)
{
    int matched = 0, train_wins = 0, test_wins = 0;
    double train_gap = 0.0, test_gap = 0.0, gtr, gte;
    for (size_t i = 0; i < n; ++i)
        if (strcmp(res[i].label, other) == 0 && gap_of(res, n, &res[i], &gtr, &gte)) {
            ++matched;
            train_gap += gtr, test_gap += gte;
            train_wins += gtr > 0.0, test_wins += gte > 0.0;
        }
    if (matched)
        printf("%-16s vs bloop at matched aux loss (%d points): bloop lower train loss %d, "
               "lower test loss %d; mean gap train %+.5f, test %+.5f\n", other, matched,
               train_wins, test_wins, train_gap / matched, test_gap / matched);
}

/* "+0.00431 [+0.00110, +0.00752]", or the mean alone for one seed. */
static void print_interval(const char *name, stats_summary s)
{
    if (s.n > 1)
        printf(" %s %+.5f [%+.5f, %+.5f]", name, s.mean, s.mean - s.half, s.mean + s.half);
    else
        printf(" %s %+.5f", name, s.mean);
}

/* One configuration's seeds: its gaps where matched; the matched count. */
static int config_gaps(const run_result *res, size_t n, const run_result *runs, int seeds,
                       double *train, double *test, double *aux)
{
    int m = 0;
    for (int s = 0; s < seeds; ++s)
        if (gap_of(res, n, &runs[s], &train[m], &test[m]))
            aux[m++] = runs[s].aux_loss;
    return m;
}

void fronts_print_paired(const run_result *res, size_t n, int seeds, const char *other)
{
    double train[MAX_SEEDS] = {0}, test[MAX_SEEDS] = {0}, aux[MAX_SEEDS] = {0};
    int lambdas = 0, better = 0, worse = 0;
    for (size_t k = 0; k + (size_t)seeds <= n; k += (size_t)seeds) {
        if (strcmp(res[k].label, other) != 0)
            continue;
        int m = config_gaps(res, n, &res[k], seeds, train, test, aux);
        if (m == 0)
            continue;
        stats_summary g = stats_summarise(train, m);
        ++lambdas;
        better += m > 1 && g.mean - g.half > 0.0;
        worse += m > 1 && g.mean + g.half < 0.0;
        printf("%-16s lambda %-8.3g aux %8.4f, %d/%d seeds matched: gap to bloop", other,
               res[k].lambda, stats_summarise(aux, m).mean, m, seeds);
        print_interval("train", g);
        print_interval("test", stats_summarise(test, m));
        printf("\n");
    }
    if (lambdas)
        printf("%-16s vs bloop at matched aux loss: %d lambdas matched; the 95%% interval of "
               "the train gap is above 0 (bloop better) at %d, below 0 at %d\n", other,
               lambdas, better, worse);
}
