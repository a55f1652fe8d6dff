/* summary.c — see summary.h. */
#include "summary.h"

#include <stddef.h>
#include <stdio.h>

/* The statistics of one field of `seeds` consecutive runs (a field's offset in run_result). */
static stats_summary field(const run_result *runs, int seeds, size_t offset)
{
    double x[MAX_SEEDS] = {0};
    for (int s = 0; s < seeds; ++s)
        x[s] = run_field(&runs[s], offset);
    return stats_summarise(x, seeds);
}

size_t summary_build(const run_result *res, size_t n, int seeds, summary_row *rows)
{
    size_t count = n / (size_t)seeds;
    for (size_t k = 0; k < count; ++k) {
        const run_result *runs = res + k * (size_t)seeds;
        rows[k] = (summary_row){
            .first = runs,
            .train = field(runs, seeds, offsetof(run_result, train_loss)),
            .test = field(runs, seeds, offsetof(run_result, test_loss)),
            .accuracy = field(runs, seeds, offsetof(run_result, test_accuracy)),
            .aux = field(runs, seeds, offsetof(run_result, aux_loss)),
            .seconds = field(runs, seeds, offsetof(run_result, seconds))};
    }
    return count;
}

void summary_print(const summary_row *rows, size_t count)
{
    printf("%-16s %10s %6s %5s %19s %19s %17s %19s %8s\n", "method", "lambda", "w", "seeds",
           "train_loss +- sd", "test_loss +- sd", "test_acc +- sd", "aux_loss +- sd",
           "seconds");
    for (size_t k = 0; k < count; ++k) {
        const summary_row *r = &rows[k];
        printf("%-16s %10.4g %6g %5d %9.5f +- %-6.5f %9.5f +- %-6.5f %7.4f +- %-6.4f "
               "%9.5f +- %-6.5f %8.1f\n", r->first->label, r->first->lambda,
               r->first->ema_weight, r->train.n, r->train.mean, r->train.sd, r->test.mean,
               r->test.sd, r->accuracy.mean, r->accuracy.sd, r->aux.mean, r->aux.sd,
               r->seconds.mean);
    }
}

int summary_write_csv(const char *path, const summary_row *rows, size_t count)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "method,lambda,ema_weight,seeds,train_loss_mean,train_loss_sd,test_loss_mean,"
               "test_loss_sd,test_accuracy_mean,test_accuracy_sd,aux_loss_mean,aux_loss_sd,"
               "wall_seconds_mean\n");
    for (size_t k = 0; k < count; ++k) {
        const summary_row *r = &rows[k];
        fprintf(f, "%s,%.9g,%.9g,%d,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g,%.3f\n",
                r->first->label, r->first->lambda, r->first->ema_weight, r->train.n,
                r->train.mean, r->train.sd, r->test.mean, r->test.sd, r->accuracy.mean,
                r->accuracy.sd, r->aux.mean, r->aux.sd, r->seconds.mean);
    }
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}
