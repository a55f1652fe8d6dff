/* stats.h — what the report says about a few seeds: mean, sample standard deviation, and the
 * 95% confidence interval of a mean from Student's t (the seeds are a small sample: 3 seeds
 * have 2 degrees of freedom, t = 4.30, not 1.96). */
#ifndef BLOOPCL_TRAIN_STATS_H
#define BLOOPCL_TRAIN_STATS_H

typedef struct stats_summary {
    int n;
    double mean;
    double sd;        /* sample standard deviation (n - 1); 0 for n = 1 */
    double half;      /* half-width of the 95% t-interval of the mean; NAN for n < 2 */
} stats_summary;

/* The summary of x[0 .. n) (n >= 1). */
stats_summary stats_summarise(const double *x, int n);

/* The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom. */
double stats_t975(int df);

#endif
