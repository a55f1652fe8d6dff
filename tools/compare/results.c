/* results.c — see results.h. */
#include "results.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>

static void add_detail(case_result *res, const char *format, ...)
{
    if (res->num_details == MAX_DETAILS) {
        res->more_details++;
        return;
    }
    va_list args;
    va_start(args, format);
    vsnprintf(res->details[res->num_details++], TEXT_SIZE, format, args);
    va_end(args);
}

void fail(case_result *res, unsigned what, int step, const char *format, ...)
{
    char text[TEXT_SIZE];
    va_list args;
    va_start(args, format);
    vsnprintf(text, sizeof text, format, args);
    va_end(args);
    res->failed |= what;
    add_detail(res, "step %d: %s", step, text);
}

void diverge(case_result *res, int step, const char *format, ...)
{
    if (res->diverged)
        return;   /* the first reason is the one reported */
    res->diverged = true;
    int used = snprintf(res->divergence, TEXT_SIZE, "step %d: ", step);
    va_list args;
    va_start(args, format);
    vsnprintf(res->divergence + used, TEXT_SIZE - (size_t)used, format, args);
    va_end(args);
}

void note_ratio(double *worst, double error, double tolerance)
{
    double ratio = error == 0.0 ? 0.0 : (tolerance > 0.0 ? error / tolerance : INFINITY);
    if (ratio > *worst || isnan(ratio))
        *worst = ratio;
}

void verdict_text(const case_result *res, char *text, size_t size)
{
    static const char *const names[NUM_FAIL_KINDS] = {"status", "state", "dots", "r", "d",
                                                      "nan", "skip", "call", "bounds"};
    if (res->failed == 0) {
        snprintf(text, size, "%s", res->diverged ? "PASS*" : "PASS");
        return;
    }
    size_t used = (size_t)snprintf(text, size, "FAIL(");
    for (unsigned bit = 0; bit < NUM_FAIL_KINDS; ++bit)
        if ((res->failed & (1u << bit)) && used < size)
            used += (size_t)snprintf(text + used, size - used, "%s%s",
                                     text[used - 1] == '(' ? "" : ",", names[bit]);
    if (used < size)
        snprintf(text + used, size - used, ")");
}
