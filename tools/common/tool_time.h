/* tool_time.h — timing helpers of the tools: a monotonic clock and the median of samples. */
#ifndef BLOOPCL_TOOL_TIME_H
#define BLOOPCL_TOOL_TIME_H

#include <stddef.h>

/* Seconds on the monotonic clock (an arbitrary origin: subtract two readings). */
double tool_seconds(void);

/* The median of `count` > 0 values; sorts them in place. */
double tool_median(double *values, size_t count);

#endif
