/* stats.c — see stats.h. */
#include "stats.h"

#include <math.h>

/* t_{0.975, df} for df = 1..30 (any table of Student's t). */
static const double t975[30] = {
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};

/* Beyond the table, the Cornish-Fisher expansion around z = 1.95996 (error < 1e-4 there). */
double stats_t975(int df)
{
    if (df <= 30)
        return t975[df - 1];
    double z = 1.959964, d = (double)df;
    return z + (z * z * z + z) / (4.0 * d) +
           (5.0 * pow(z, 5) + 16.0 * z * z * z + 3.0 * z) / (96.0 * d * d);
}

stats_summary stats_summarise(const double *x, int n)
{
    stats_summary s = {.n = n, .half = NAN};
    double sum = 0.0, squares = 0.0;
    for (int i = 0; i < n; ++i)
        sum += x[i];
    s.mean = sum / n;
    for (int i = 0; i < n; ++i)
        squares += (x[i] - s.mean) * (x[i] - s.mean);
    s.sd = n > 1 ? sqrt(squares / (n - 1)) : 0.0;
    if (n > 1)
        s.half = stats_t975(n - 1) * s.sd / sqrt((double)n);
    return s;
}
