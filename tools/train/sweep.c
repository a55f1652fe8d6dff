/* sweep.c — see sweep.h. */
#include "sweep.h"

#include <stdlib.h>

static bool has_ema_sweep(const options *opt)
{
    return opt->ema_sweep_lambda >= 0.0;
}

size_t sweep_configs(const options *opt)
{
    size_t n = 0;
    for (int c = 0; c < opt->num_curves; ++c)
        n += (size_t)opt->grid[opt->curves[c]].count;
    return n + (has_ema_sweep(opt) ? (size_t)opt->ema_weights.count : 0);
}

size_t sweep_size(const options *opt)
{
    return sweep_configs(opt) * (size_t)opt->seeds;
}

static double smallest(const lambda_grid *grid)
{
    double low = grid->values[0];
    for (int i = 1; i < grid->count; ++i)
        low = grid->values[i] < low ? grid->values[i] : low;
    return low;
}

/* The configurations in order, each run's settings but its seed. */
static void list_configs(const options *opt, run_result *configs)
{
    size_t k = 0;
    for (int c = 0; c < opt->num_curves; ++c) {
        curve_id curve = opt->curves[c];
        const lambda_grid *grid = &opt->grid[curve];
        for (int i = 0; i < grid->count; ++i)
            configs[k++] = (run_result){
                .label = curve_name(curve), .method = curve_method(curve),
                .lambda = grid->values[i], .ema_weight = curve_ema_weight(opt, curve),
                .accuracy_floor = grid->values[i] == smallest(grid)};
    }
    for (int i = 0; has_ema_sweep(opt) && i < opt->ema_weights.count; ++i)
        configs[k++] = (run_result){.label = EMA_SWEEP_LABEL, .method = BLOOPCL_METHOD_BLOOP,
                                    .lambda = opt->ema_sweep_lambda,
                                    .ema_weight = opt->ema_weights.values[i]};
}

int sweep_run(trainer *tr, const options *opt, FILE *csv, run_result *res)
{
    size_t configs = sweep_configs(opt), k = 0;
    int *perm = malloc(tr->train_count * sizeof(int));
    run_result *list = malloc(configs * sizeof *list);
    int rc = perm && list ? 0 : -1;
    if (rc == 0)
        list_configs(opt, list);
    for (size_t c = 0; c < configs && rc == 0; ++c)
        for (int s = 0; s < opt->seeds && rc == 0; ++s, ++k) {
            res[k] = list[c];
            res[k].seed = opt->seed + (uint64_t)s;
            rc = run_config(tr, opt, csv, perm, &res[k]);
        }
    free(list);
    free(perm);
    return rc;
}
