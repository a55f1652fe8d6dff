/* report.c — see report.h: the counts, the progress line, and the choice of output. */
#include "report.h"
#include "tool_device.h"

#include <stdio.h>
#include <unistd.h>

void report_begin(report *rp, const options *opt, size_t total_cases)
{
    *rp = (report){.opt = opt, .counts = {.total = total_cases}};
    if (opt->common.json)
        json_begin(rp);
}

void describe_device(const device_facts *f, char *text, size_t size)
{
    size_t big = 16777217;
    snprintf(text, size,
             "device %u: %s / %s (%s), driver %s, denormals %s, tree depth <= %.0f; "
             "dot bounds at n = %zu: fused %.2e, clblast %.2e (x sum|x y|)",
             f->info.flat_index, f->info.platform_name, f->info.device_name,
             tool_device_type_name(f->info.type), f->info.driver_version,
             f->fp.denormals ? "yes" : "no (flush-to-zero differences on subnormals accepted)",
             f->fp.tree_depth, big, fused_dot_bound(big, &f->fp), clblast_dot_bound(big, &f->fp));
}

void report_device(report *rp, const device_facts *facts)
{
    if (rp->opt->common.json)
        json_device(rp, facts);
    else
        table_device(rp, facts);
}

void report_device_error(report *rp, const char *spec, bloopcl_status status)
{
    rp->counts.failed++;
    if (rp->opt->common.json)
        json_device_error(rp, spec, status);
}

static bool progress_is_tty(void)
{
    static int tty = -1;
    if (tty < 0)
        tty = isatty(fileno(stderr));
    return tty != 0;
}

void report_case_start(report *rp, const case_def *c)
{
    char text[TEXT_SIZE];
    describe_case(c, text, sizeof text);
    const tally *t = &rp->counts;
    if (progress_is_tty())
        fprintf(stderr, "\r\033[K[%zu/%zu] %s", t->done + 1, t->total, text);
    else if (c->n >= LARGE_LIMIT / 2 || t->done % 500 == 0)
        fprintf(stderr, "[%zu/%zu] %s\n", t->done + 1, t->total, text);
    fflush(stderr);
}

void report_case(report *rp, const case_def *c, const case_result *res)
{
    tally *t = &rp->counts;
    t->done++;
    if (res->failed)
        t->failed++;
    else
        t->passed++;
    t->diverged += res->diverged && !res->failed;
    t->ftz_notes |= res->ftz_state;
    if (rp->opt->common.json)
        json_case(rp, c, res);
    else
        table_case(rp, c, res);
    fflush(stdout);
}

void report_device_end(report *rp)
{
    if (rp->opt->common.json)
        json_device_end(rp);
    if (progress_is_tty())
        fprintf(stderr, "\r\033[K");
}

void report_end(report *rp, double seconds)
{
    if (rp->opt->common.json)
        json_end(rp, seconds);
    else
        table_end(rp, seconds);
}
