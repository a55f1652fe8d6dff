/* sweep.c — see sweep.h. */
#include "sweep.h"

#include <stdlib.h>

size_t sweep_size(const options *opt)
{
    return (size_t)opt->num_methods * (size_t)opt->num_lambdas;
}

int sweep_run(trainer *tr, const options *opt, FILE *csv, run_result *res)
{
    int *perm = malloc(tr->train_count * sizeof(int));
    if (perm == NULL)
        return -1;
    size_t k = 0;
    int rc = 0;
    for (int m = 0; m < opt->num_methods && rc == 0; ++m)
        for (int i = 0; i < opt->num_lambdas && rc == 0; ++i, ++k) {
            res[k] = (run_result){.method = opt->methods[m], .lambda = opt->lambdas[i]};
            res[k].ema_weight = res[k].method == BLOOPCL_METHOD_BLOOP ? opt->bloop_ema
                                                                      : opt->base_ema;
            rc = run_config(tr, opt, csv, perm, &res[k]);
        }
    free(perm);
    return rc;
}
