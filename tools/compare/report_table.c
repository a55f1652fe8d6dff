/* report_table.c — bloopcl-compare's table: a header per device, a line per case with its
 * first failures, the notes on expected divergences, and the closing "N passed, N failed". */
#include "report.h"

#include <stdio.h>

static void print_table_header(void)
{
    printf("%-15s %-24s %-7s %-17s %8s %-12s %5s %9s %9s %9s %9s %6s %6s %-4s %s\n",
           "method", "options", "dots", "dtype", "n", "input", "steps", "max_abs", "max_rel",
           "max_ulp", "r_rel", "d/tol", "r/tol", "nan", "verdict");
}

void table_case(const report *rp, const case_def *c, const case_result *res)
{
    char verdict[64];
    verdict_text(res, verdict, sizeof verdict);
    printf("%-15s %-24s %-7s %-17s %8zu %-12s %5d %9.2e %9.2e %9.0f %9.2e %6.3f %6.3f %-4s "
           "%s\n", bloopcl_method_name(c->config->method), c->config->label,
           backend_name(c->backend), c->dtypes->label, c->n, c->input->label, c->steps, res->max_abs, res->max_rel, res->max_ulp, res->r_rel,
           res->worst_d, res->worst_r, res->parity_ok ? "ok" : "BAD", verdict);
    size_t shown = res->num_details;
    if (!rp->opt->common.verbose && shown > DETAILS_SHOWN)
        shown = DETAILS_SHOWN;
    for (size_t i = 0; i < shown; ++i)
        printf("    %s\n", res->details[i]);
    size_t hidden = res->num_details - shown + res->more_details;
    if (hidden > 0)
        printf("    ... and %zu more failures in this case%s\n", hidden,
               rp->opt->common.verbose ? "" : " (--verbose shows them)");
    if (res->diverged)
        printf("    note: %s\n", res->divergence);
}

/* The dtype combinations (g:a:d), and what clblast skips. */
static void print_dtypes(const options *opt)
{
    printf("# dtypes (g:a:d, state f32):");
    for (size_t t = 0; t < opt->num_dtypes; ++t)
        printf("%s %s", t > 0 ? "," : "", opt->dtypes[t].label);
    printf("; /scaled: inverse loss scales %.9g (g), %.9g (a)", opt->inv_scale,
           2.0 * opt->inv_scale);
    if (run_has_narrow(opt))
        printf("; 2-byte types run on fused only: clblast skipped (it refuses them, "
               "BLOOPCL_ERR_UNSUPPORTED), not failed");
    printf("\n");
}

void table_device(const report *rp, const device_facts *facts)
{
    char text[TEXT_SIZE * 2];
    describe_device(facts, text, sizeof text);
    printf("# %s\n", text);
    if (rp->opt->shards > 0)
        printf("# steps as %zu shards through split steps (bloopcl_step_begin/_end)\n",
               rp->opt->shards);
    if (rp->opt->segments > 0)
        printf("# steps through bloopcl_step over %zu segments per tensor, layout %s\n",
               rp->opt->segments, segment_layout_name(rp->opt->layout));
    print_dtypes(rp->opt);
    print_table_header();
}

static void print_notes(const tally *t)
{
    if (t->diverged > 0)
        printf("\nKnown limitation (%zu cases marked PASS*): the device accumulates dot products "
               "in fp32, the\nreference in double. Where the reference's own sum |x_i y_i| of "
               "a dot (or |r|, or a term\nof d) reaches FLT_MAX, fp32 overflows to Inf and r "
               "becomes 0 or NaN on the device while\nthe reference stays finite; where eps = 0 "
               "and <m,m> underflows, fp32 divides by zero.\nThose mismatches are expected "
               "divergences, not failures; the state and everything else matched.\n",
               t->diverged);
    if (t->ftz_notes)
        printf("\nThis device flushes subnormals to zero (no CL_FP_DENORM): EMA state "
               "differences on subnormal\nvalues were accepted.\n");
}

void table_end(const report *rp, double seconds)
{
    const tally *t = &rp->counts;
    print_notes(t);
    fprintf(stderr, "%.1f s\n", seconds);
    printf("%zu passed, %zu failed\n", t->passed, t->failed);
    /* Flush now: a leak checker or a driver's exit handler may end the process without
     * flushing stdio, and the verdict line is the one thing that must not be lost. */
    fflush(stdout);
}
