/* options.c — see options.h. */
#include "options.h"
#include "tolerance.h"

#include <stdio.h>
#include <string.h>

#ifndef BLOOPCL_DOCDIR
#define BLOOPCL_DOCDIR "share/doc/bloopcl"
#endif

enum { OPT_ALL, OPT_QUICK, OPT_SEED, OPT_STEPS, OPT_SIZES, OPT_FILTER, OPT_SEGMENTS, OPT_LAYOUT };

static const tool_option COMPARE_OPTIONS[] = {
    {"all", false, OPT_ALL},         {"quick", false, OPT_QUICK},
    {"seed", true, OPT_SEED},        {"steps", true, OPT_STEPS},
    {"sizes", true, OPT_SIZES},      {"filter", true, OPT_FILTER},
    {"segments", true, OPT_SEGMENTS}, {"layout", true, OPT_LAYOUT},
};

static void print_help(FILE *out)
{
    fputs("bloopcl-compare: checks bloopcl on an OpenCL device against its CPU reference.\n"
          "\n"
          "Every method (bloop, dynamic_barrier, pcgrad, mixed) with its options (rescale,\n"
          "ratio-only, w = 1, each EMA initialisation, eps = 0, the non-finite policies) runs\n"
          "with both dot backends (clblast, fused) on the device and on the CPU reference\n"
          "(double accumulation) from identical inputs. After every step the tool compares the\n"
          "direction d (every element), the EMA state (bit for bit), r and the dot products.\n"
          "\n"
          "Sizes: 1, 2, 3, 63, 64, 65, 255, 256, 257, 1023, 1025, 4097, 65535, 65537, 1000003\n"
          "and 16777217 (2^24+1); the largest run fewer inputs and steps. Inputs: normal, zeros,\n"
          "denormal (~2^-140), large (sum of squares near FLT_MAX/64), huge (|x| in\n"
          "[FLT_MAX/4, FLT_MAX/2]: squares overflow fp32), mixed (|x| from 1e-20 to 1e15),\n"
          "parallel and antiparallel (a = +-3 g + noise), orthogonal (a = u - proj_g u), and\n"
          "a NaN in g, +Inf in a, -Inf in g at the middle step, each under the policies\n"
          "PROPAGATE (/prop: the device must put NaN and Inf where the reference does) and\n"
          "SKIP (/skip: d = 0, state unchanged, accepted = 0).\n"
          "\n"
          "Options:\n"
          "  --all            check every device in turn (not with --device)\n"
          "  --quick          a subset (sizes up to 1000003, fewer cases): ~10 s on PoCL\n"
          "  --sizes LIST     comma-separated sizes instead of the mode's (1..33554432)\n"
          "  --steps N        steps per case (1..64) instead of the plan's (3; 2 at 16M)\n"
          "  --filter TEXT    keep cases whose description (\"method options backend input\n"
          "                   n=N\") contains TEXT; repeat to require several\n"
          "  --seed N         seed of the inputs (default 1)\n"
          "  --segments P     step through bloopcl_step over P segments per tensor (1..4096)\n"
          "                   instead of bloopcl_step_host: mixed sizes, fixed by n and P\n"
          "                   (bulk, 1 element, bulk, empty, repeating; the bulk ones spread\n"
          "                   over a factor 32); the reference takes the flat vectors. d is\n"
          "                   filled with a sentinel NaN first; a write outside d's segments\n"
          "                   or any change to g or a fails the case (FAIL(bounds))\n"
          "  --layout L       with --segments: separate (default: one cl_mem per segment),\n"
          "                   packed (one cl_mem per tensor, segments end to end), gapped\n"
          "                   (one cl_mem per tensor, a guard element before each segment)\n"
          "  --verbose        also: up to 32 failure details per case (default: 4)\n"
          "  --json           stdout is one JSON document: devices[] (each with its device\n"
          "                   and cases[]) and summary {passed, failed, expected_divergences}\n"
          "\n"
          "Output: one line per case: method, options, backend, n, input, steps, the largest\n"
          "absolute, relative and ULP error of d, the largest relative error of r, the largest\n"
          "error/tolerance ratio of d (d/tol) and of r and the dots (r/tol), NaN/Inf parity,\n"
          "and the verdict: PASS, PASS* (expected divergence, explained below it) or\n"
          "FAIL(what), then the first failures. Progress goes to stderr. The last line of\n"
          "stdout is \"N passed, N failed\" (with --json that line goes to stderr).\n"
          "\n"
          "Tolerances: derived once, in COMPARE.md, section \"Tolerances\" (installed in\n"
          BLOOPCL_DOCDIR "; tools/COMPARE.md in the source). The state must match\n"
          "bit for bit; each dot within beta S + alpha (S = sum |x_i y_i|, beta from the\n"
          "backend's summation structure); r within the bound that follows from its dots; d\n"
          "per element within the effect of r's observed error plus its own roundings; NaN and\n"
          "Inf of the same class. Where fp32 overflows or underflows and double does not, a\n"
          "mismatch is an expected divergence (PASS*), not a failure.\n",
          out);
}

static bool parse_size(const char *text, size_t index, void *user)
{
    options *opt = user;
    unsigned long long n = 0;
    if (!tool_parse_unsigned(text, 1, TOLERANCE_MAX_N, &n))
        return false;
    opt->sizes[index] = (size_t)n;
    return true;
}

static bool apply_valued(int id, const char *value, options *opt)
{
    unsigned long long number = 0;
    switch (id) {
    case OPT_SEED:
        if (!tool_parse_unsigned(value, 0, UINT64_MAX, &number))
            return tool_usage_error(&COMPARE_TOOL, "--seed takes an unsigned integer, not \"%s\"",
                                    value);
        opt->seed = number;
        return true;
    case OPT_STEPS:
        if (!tool_parse_unsigned(value, 1, MAX_STEPS, &number))
            return tool_usage_error(&COMPARE_TOOL, "--steps takes 1..%d, not \"%s\"", MAX_STEPS,
                                    value);
        opt->steps = (int)number;
        return true;
    case OPT_SIZES:
        if (!tool_split_list(value, MAX_SIZES, &opt->num_sizes, parse_size, opt))
            return tool_usage_error(&COMPARE_TOOL, "--sizes takes up to %d sizes 1..%zu, "
                                    "comma-separated, not \"%s\"", MAX_SIZES, TOLERANCE_MAX_N,
                                    value);
        return true;
    case OPT_FILTER:
        if (opt->num_filters == MAX_FILTERS)
            return tool_usage_error(&COMPARE_TOOL, "at most %d --filter options", MAX_FILTERS);
        opt->filters[opt->num_filters++] = value;
        return true;
    case OPT_SEGMENTS:
        if (!tool_parse_unsigned(value, 1, SEGMENTS_MAX, &number))
            return tool_usage_error(&COMPARE_TOOL, "--segments takes 1..%d, not \"%s\"",
                                    SEGMENTS_MAX, value);
        opt->segments = (size_t)number;
        return true;
    default:   /* OPT_LAYOUT */
        if (!segment_layout_parse(value, &opt->layout))
            return tool_usage_error(&COMPARE_TOOL, "--layout takes separate, packed or gapped, "
                                    "not \"%s\"", value);
        opt->layout_given = true;
        return true;
    }
}

static bool apply_option(int id, const char *value, void *user)
{
    options *opt = user;
    if (id == OPT_ALL)
        opt->all = true;
    else if (id == OPT_QUICK)
        opt->quick = true;
    else
        return apply_valued(id, value, opt);
    return true;
}

/* The options that exclude or need each other. */
static bool check_options(void *user)
{
    const options *opt = user;
    if (opt->all && opt->common.device != NULL)
        return tool_usage_error(&COMPARE_TOOL, "--all and --device exclude each other");
    if (opt->layout_given && opt->segments == 0)
        return tool_usage_error(&COMPARE_TOOL, "--layout needs --segments");
    return true;
}

const tool_spec COMPARE_TOOL = {
    .name = "bloopcl-compare",
    .usage = "usage: bloopcl-compare [--quick] [--device SPEC | --all] [--json] [--seed N]\n"
             "                       [--steps N] [--sizes N,N,...] [--filter TEXT]... [--verbose]\n"
             "                       [--segments P [--layout separate|packed|gapped]]\n",
    .failure = "some case failed, or the check could not go on (out of memory)",
    .schema = "bloopcl-compare/1",
    .help = print_help,
    .options = COMPARE_OPTIONS,
    .num_options = sizeof COMPARE_OPTIONS / sizeof COMPARE_OPTIONS[0],
    .apply = apply_option,
    .check = check_options,
};

int parse_options(int argc, char **argv, options *opt)
{
    *opt = (options){.seed = 1};
    return tool_parse_args(&COMPARE_TOOL, argc, argv, &opt->common, opt);
}
