/* fronts.c — see fronts.h. */
#include "fronts.h"

#include <stdlib.h>

/* Bloop's front: its (aux, train, test) points sorted by aux loss. Returns the count. */
static size_t bloop_front(const run_result *res, size_t n, const run_result **front)
{
    size_t k = 0;
    for (size_t i = 0; i < n; ++i) {
        if (res[i].method != BLOOPCL_METHOD_BLOOP)
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

void fronts_print_gap(const run_result *res, size_t n, bloopcl_method other)
{
    const run_result **front = malloc(n * sizeof *front);
    size_t k = front ? bloop_front(res, n, front) : 0;
    int matched = 0, train_wins = 0, test_wins = 0;
    double train_gap = 0.0, test_gap = 0.0, tr, te;
    for (size_t i = 0; i < n; ++i)
        if (res[i].method == other && front_at(front, k, res[i].aux_loss, &tr, &te)) {
            ++matched;
            train_gap += res[i].train_loss - tr, test_gap += res[i].test_loss - te;
            train_wins += tr < res[i].train_loss, test_wins += te < res[i].test_loss;
        }
    if (matched)
        printf("%-16s vs bloop at matched aux loss (%d points): bloop lower train loss %d, "
               "lower test loss %d; mean gap train %+.5f, test %+.5f\n",
               bloopcl_method_name(other), matched, train_wins, test_wins,
               train_gap / matched, test_gap / matched);
    free(front);
}
