/* ablation.c — see ablation.h. */
#include "ablation.h"
#include "options.h"
#include "stats.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* The sweep's configuration at w = 1, else its first; NULL without a sweep. */
static const run_result *reference(const run_result *res, size_t n, int seeds)
{
    const run_result *first = NULL;
    for (size_t k = 0; k < n; k += (size_t)seeds)
        if (strcmp(res[k].label, EMA_SWEEP_LABEL) == 0) {
            if (res[k].ema_weight == 1.0)
                return &res[k];
            first = first ? first : &res[k];
        }
    return first;
}

/* x - x_ref over the seeds of one configuration, as "+0.00431 [+0.00110, +0.00752]". */
static void print_paired(const char *name, const run_result *runs, const run_result *ref,
                         int seeds, size_t offset)
{
    double d[MAX_SEEDS] = {0};
    for (int s = 0; s < seeds; ++s)
        d[s] = run_field(&runs[s], offset) - run_field(&ref[s], offset);
    stats_summary g = stats_summarise(d, seeds);
    if (seeds > 1)
        printf("  %s %+.5f [%+.5f, %+.5f]", name, g.mean, g.mean - g.half, g.mean + g.half);
    else
        printf("  %s %+.5f", name, g.mean);
}

void ablation_print(const run_result *res, size_t n, int seeds)
{
    const run_result *ref = reference(res, n, seeds);
    if (ref == NULL)
        return;
    printf("Bloop's EMA weight at lambda %g, each w minus w = %g, paired by seed (%d seed%s; "
           "95%% t-interval):\n", ref->lambda, ref->ema_weight, seeds, seeds == 1 ? "" : "s");
    for (size_t k = 0; k < n; k += (size_t)seeds) {
        if (strcmp(res[k].label, EMA_SWEEP_LABEL) != 0)
            continue;
        printf("  w %-7g", res[k].ema_weight);
        print_paired("train", &res[k], ref, seeds, offsetof(run_result, train_loss));
        print_paired("test", &res[k], ref, seeds, offsetof(run_result, test_loss));
        print_paired("aux", &res[k], ref, seeds, offsetof(run_result, aux_loss));
        printf("\n");
    }
}
