/* options.c — see options.h. */
#include "options.h"
#include "shards.h"
#include "tolerance.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BLOOPCL_DOCDIR
#define BLOOPCL_DOCDIR "share/doc/bloopcl"
#endif

enum {
    OPT_ALL, OPT_QUICK, OPT_SEED, OPT_STEPS, OPT_SIZES, OPT_FILTER, OPT_SEGMENTS, OPT_LAYOUT,
    OPT_DTYPES, OPT_INV_SCALE, OPT_SHARDS
};

static const tool_option COMPARE_OPTIONS[] = {
    {"all", false, OPT_ALL},         {"quick", false, OPT_QUICK},
    {"seed", true, OPT_SEED},        {"steps", true, OPT_STEPS},
    {"sizes", true, OPT_SIZES},      {"filter", true, OPT_FILTER},
    {"segments", true, OPT_SEGMENTS}, {"layout", true, OPT_LAYOUT},
    {"dtypes", true, OPT_DTYPES},    {"inv-scale", true, OPT_INV_SCALE},
    {"shards", true, OPT_SHARDS},
};

/* The combinations of a run without --dtypes (and of --quick): everything f32 (the original
 * cases), g, a and d all bf16 or all f16, the two mixed ones trainers use (2-byte gradients
 * into an f32 update; f16 main and f32 auxiliary gradient into a bf16 update), f16 stored
 * loss-scaled with the scales from the host and from a device buffer, and f32 with device
 * scales (the one scaled combination CLBlast takes). */
static const char *const DEFAULT_DTYPES[] = {
    "f32", "bf16", "f16", "bf16:bf16:f32", "f16:f32:bf16", "f16/scaled", "f16/scaled-dev",
    "f32/scaled-dev",
};
#define NUM_DEFAULT_DTYPES (sizeof DEFAULT_DTYPES / sizeof DEFAULT_DTYPES[0])
#define DEFAULT_INV_SCALE 0x1p-16

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
          "  --quick          a subset (sizes up to 1000003, fewer cases): ~40 s on PoCL\n"
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
          "  --shards K       split each case's gradient into K uneven slices (the first ones\n"
          "                   empty when n is small), a combiner each, and step them as one\n"
          "                   through split steps (bloopcl_step_begin, bloopcl_sum_totals,\n"
          "                   bloopcl_step_end), as K ranks of a sharded trainer would; the\n"
          "                   assembled d and state are checked, and every shard must hold\n"
          "                   the same scalars bit for bit. f32 only (1..16)\n",
          out);
    fputs("  --dtypes LIST    comma-separated element-type combinations of g, a and d (the\n"
          "                   EMA state is always f32): f32, f16 or bf16 for all three, or\n"
          "                   G:A:D (as bf16:bf16:f32), each optionally followed by /scaled\n"
          "                   (g and a stored loss-scaled: inverse scales --inv-scale for g\n"
          "                   and twice that for a, from the host) or /scaled-dev (the same\n"
          "                   scales read from a device buffer). Default (also --quick): f32,\n"
          "                   bf16, f16, bf16:bf16:f32, f16:f32:bf16, f16/scaled,\n"
          "                   f16/scaled-dev, f32/scaled-dev. Anything but plain f32 runs\n"
          "                   through bloopcl_step_with_options and the reference through\n"
          "                   bloopcl_reference_step_typed on the same stored values, on the\n"
          "                   inputs that fit 2-byte types (not denormal, large, huge,\n"
          "                   mixed) and the core configurations beyond n = 4097; a 2-byte\n"
          "                   type runs on the fused backend only (clblast refuses it)\n"
          "  --inv-scale X    g's inverse loss scale of the /scaled combinations, a number or\n"
          "                   2^K (default 2^-16; 2^-40..2^40): the inputs are the stored,\n"
          "                   scaled values, the true gradient is stored times X\n"
          "  --verbose        also: up to 32 failure details per case (default: 4)\n"
          "  --json           stdout is one JSON document: devices[] (each with its device\n"
          "                   and cases[]) and summary {passed, failed, expected_divergences}\n"
          "\n"
          "Output: one line per case: method, options, backend, dtype, n, input, steps, the largest\n"
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

static bool parse_dtype_name(const char *text, size_t length, bloopcl_dtype *dtype)
{
    static const bloopcl_dtype ALL[] = {BLOOPCL_DTYPE_F32, BLOOPCL_DTYPE_F16, BLOOPCL_DTYPE_BF16};
    for (size_t k = 0; k < 3; ++k) {
        const char *name = bloopcl_dtype_name(ALL[k]);
        if (strlen(name) == length && strncmp(text, name, length) == 0) {
            *dtype = ALL[k];
            return true;
        }
    }
    return false;
}

/* "TYPE" or "G:A:D", then nothing, "/scaled" or "/scaled-dev". */
static bool parse_dtype_combo(const char *text, dtype_combo *dt)
{
    const char *slash = strchr(text, '/');
    size_t body = slash != NULL ? (size_t)(slash - text) : strlen(text);
    const char *first = memchr(text, ':', body);
    const char *second = first != NULL ? memchr(first + 1, ':', body - (size_t)(first + 1 - text))
                                       : NULL;
    bool ok;
    if (first == NULL) {
        ok = parse_dtype_name(text, body, &dt->g);
        dt->a = dt->d = dt->g;
    } else {
        ok = second != NULL && parse_dtype_name(text, (size_t)(first - text), &dt->g) &&
             parse_dtype_name(first + 1, (size_t)(second - first - 1), &dt->a) &&
             parse_dtype_name(second + 1, body - (size_t)(second + 1 - text), &dt->d);
    }
    if (slash == NULL)
        dt->scale = SCALE_NONE;
    else if (strcmp(slash, "/scaled") == 0)
        dt->scale = SCALE_HOST;
    else if (strcmp(slash, "/scaled-dev") == 0)
        dt->scale = SCALE_DEVICE;
    else
        ok = false;
    if (!ok)
        return false;
    /* The canonical label: one name when the three agree. */
    const char *suffix = dt->scale == SCALE_NONE ? "" : dt->scale == SCALE_HOST ? "/scaled"
                                                                              : "/scaled-dev";
    if (dt->g == dt->a && dt->a == dt->d)
        snprintf(dt->label, sizeof dt->label, "%s%s", bloopcl_dtype_name(dt->g), suffix);
    else
        snprintf(dt->label, sizeof dt->label, "%s:%s:%s%s", bloopcl_dtype_name(dt->g),
                 bloopcl_dtype_name(dt->a), bloopcl_dtype_name(dt->d), suffix);
    return true;
}

static bool parse_dtype_item(const char *text, size_t index, void *user)
{
    options *opt = user;
    return parse_dtype_combo(text, &opt->dtypes[index]);
}

/* A number, or 2^K for an integer K. */
static bool parse_inv_scale(const char *text, double *out)
{
    double lo = 0x1p-40, hi = 0x1p40;
    if (strncmp(text, "2^", 2) == 0) {
        char *end = NULL;
        long k = strtol(text + 2, &end, 10);
        if (end == text + 2 || *end != '\0' || k < -40 || k > 40)
            return false;
        *out = ldexp(1.0, (int)k);
        return true;
    }
    return tool_parse_double(text, lo, hi, out);
}

bool dtype_combo_plain(const dtype_combo *dt)
{
    return dt->g == BLOOPCL_DTYPE_F32 && dt->a == BLOOPCL_DTYPE_F32 &&
           dt->d == BLOOPCL_DTYPE_F32 && dt->scale == SCALE_NONE;
}

bool dtype_combo_narrow(const dtype_combo *dt)
{
    return dt->g != BLOOPCL_DTYPE_F32 || dt->a != BLOOPCL_DTYPE_F32 ||
           dt->d != BLOOPCL_DTYPE_F32;
}

double combo_inv_scale_g(const options *opt, const dtype_combo *dt)
{
    return dt->scale == SCALE_NONE ? 1.0 : opt->inv_scale;
}

/* Twice g's: a different value, so that swapping the two would show. */
double combo_inv_scale_a(const options *opt, const dtype_combo *dt)
{
    return dt->scale == SCALE_NONE ? 1.0 : 2.0 * opt->inv_scale;
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
    case OPT_SHARDS:
        if (!tool_parse_unsigned(value, 1, SHARDS_MAX, &number))
            return tool_usage_error(&COMPARE_TOOL, "--shards takes 1..%d, not \"%s\"",
                                    SHARDS_MAX, value);
        opt->shards = (size_t)number;
        return true;
    case OPT_DTYPES:
        if (!tool_split_list(value, MAX_DTYPES, &opt->num_dtypes, parse_dtype_item, opt))
            return tool_usage_error(&COMPARE_TOOL, "--dtypes takes up to %d combinations "
                                    "f32|f16|bf16 or G:A:D, each optionally /scaled or "
                                    "/scaled-dev, comma-separated, not \"%s\"", MAX_DTYPES,
                                    value);
        return true;
    case OPT_INV_SCALE:
        if (!parse_inv_scale(value, &opt->inv_scale))
            return tool_usage_error(&COMPARE_TOOL, "--inv-scale takes a number or 2^K in "
                                    "2^-40..2^40, not \"%s\"", value);
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
    if (opt->shards > 0 && opt->segments > 0)
        return tool_usage_error(&COMPARE_TOOL, "--shards and --segments exclude each other");
    for (size_t k = 0; opt->shards > 0 && k < opt->num_dtypes; ++k)
        if (!dtype_combo_plain(&opt->dtypes[k]))
            return tool_usage_error(&COMPARE_TOOL, "--shards takes f32 only (--dtypes f32)");
    return true;
}

const tool_spec COMPARE_TOOL = {
    .name = "bloopcl-compare",
    .usage = "usage: bloopcl-compare [--quick] [--device SPEC | --all] [--json] [--seed N]\n"
             "                       [--steps N] [--sizes N,N,...] [--filter TEXT]... [--verbose]\n"
             "                       [--segments P [--layout separate|packed|gapped]]\n"
             "                       [--dtypes COMBO,...] [--inv-scale X] [--shards K]\n",
    .failure = "some case failed, or the check could not go on (out of memory)",
    .schema = "bloopcl-compare/2",
    .help = print_help,
    .options = COMPARE_OPTIONS,
    .num_options = sizeof COMPARE_OPTIONS / sizeof COMPARE_OPTIONS[0],
    .apply = apply_option,
    .check = check_options,
};

int parse_options(int argc, char **argv, options *opt)
{
    *opt = (options){.seed = 1, .inv_scale = DEFAULT_INV_SCALE};
    int status = tool_parse_args(&COMPARE_TOOL, argc, argv, &opt->common, opt);
    if (opt->num_dtypes == 0 && opt->shards > 0) {  /* split steps: f32 (bloopcl_step's) */
        parse_dtype_combo("f32", &opt->dtypes[0]);
        opt->num_dtypes = 1;
    } else if (opt->num_dtypes == 0) {
        for (size_t k = 0; k < NUM_DEFAULT_DTYPES; ++k)
            parse_dtype_combo(DEFAULT_DTYPES[k], &opt->dtypes[k]);
        opt->num_dtypes = NUM_DEFAULT_DTYPES;
    }
    return status;
}
