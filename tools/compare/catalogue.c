/* catalogue.c — see catalogue.h. */
#include "catalogue.h"

#include <string.h>

#define BLOOP BLOOPCL_METHOD_BLOOP
#define BARRIER BLOOPCL_METHOD_DYNAMIC_BARRIER
#define PCGRAD BLOOPCL_METHOD_PCGRAD
#define MIXED BLOOPCL_METHOD_MIXED
/* label, method, w, lambda, eps, rescale, ratio-only, propagate, init, core. Each option is
 * exercised at least once per method family; the defaults are those of apple/ml-bloop. */
const config_spec CONFIGS[] = {
    {"defaults", BLOOP, 0.1, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_ZEROS, true},
    {"rescale,l=2", BLOOP, 0.1, 2.0, 1e-7, true, false, false, BLOOPCL_INIT_ZEROS, false},
    {"ratio-only", BLOOP, 0.1, 0.1, 1e-7, false, true, false, BLOOPCL_INIT_ZEROS, true},
    {"w=1", BLOOP, 1.0, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_ZEROS, false},
    {"init=first", BLOOP, 0.1, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_FIRST_GRADIENT, false},
    {"init=random", BLOOP, 0.01, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_RANDOM, false},
    {"init=buffer", BLOOP, 0.1, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_BUFFER, false},
    {"eps=0", BLOOP, 0.1, 0.1, 0.0, false, false, false, BLOOPCL_INIT_ZEROS, false},
    {"propagate", BLOOP, 0.1, 0.1, 1e-7, false, false, true, BLOOPCL_INIT_ZEROS, false},
    {"l=1", BARRIER, 0.1, 1.0, 1e-7, false, false, false, BLOOPCL_INIT_ZEROS, true},
    {"l=0.5,ratio-only,rescale", BARRIER, 0.1, 0.5, 1e-7, true, true, false, BLOOPCL_INIT_ZEROS,
     false},
    {"l=0", BARRIER, 0.1, 0.0, 1e-7, false, false, false, BLOOPCL_INIT_ZEROS, false},
    {"l=0.5", PCGRAD, 0.1, 0.5, 1e-7, false, false, false, BLOOPCL_INIT_ZEROS, true},
    {"w=1,rescale", PCGRAD, 1.0, 0.1, 1e-7, true, false, false, BLOOPCL_INIT_ZEROS, false},
    {"init=random", PCGRAD, 0.1, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_RANDOM, false},
    {"init=buffer,l=1", PCGRAD, 0.1, 1.0, 1e-7, false, false, false, BLOOPCL_INIT_BUFFER, false},
    {"defaults", MIXED, 0.1, 0.1, 1e-7, false, false, false, BLOOPCL_INIT_ZEROS, true},
    {"rescale,l=2", MIXED, 0.1, 2.0, 1e-7, true, false, false, BLOOPCL_INIT_ZEROS, false},
};
const size_t NUM_CONFIGS = sizeof CONFIGS / sizeof CONFIGS[0];

/* label, kind, policy, medium, large, narrow. The narrow ones fit f16 (|x| far below 65504;
 * the few tiny N(0,1) draws become f16 subnormals, which the bounds cover); denormal, large,
 * huge and mixed would mostly overflow to Inf or flush to 0 in the conversion, which the
 * non-finite inputs already cover. */
const input_spec INPUTS[] = {
    {"normal", KIND_NORMAL, POLICY_CONFIG, true, true, true},
    {"zeros", KIND_ZEROS, POLICY_CONFIG, false, false, true},
    {"denormal", KIND_DENORMAL, POLICY_CONFIG, false, false, false},
    {"large", KIND_LARGE, POLICY_CONFIG, true, false, false},
    {"huge", KIND_HUGE, POLICY_CONFIG, true, false, false},
    {"mixed", KIND_MIXED, POLICY_CONFIG, true, false, false},
    {"parallel", KIND_PARALLEL, POLICY_CONFIG, true, true, true},
    {"antiparallel", KIND_ANTIPARALLEL, POLICY_CONFIG, false, false, true},
    {"orthogonal", KIND_ORTHOGONAL, POLICY_CONFIG, true, false, true},
    {"nan_g/prop", KIND_NAN_G, POLICY_PROPAGATE, true, false, true},
    {"nan_g/skip", KIND_NAN_G, POLICY_SKIP, false, false, true},
    {"inf_a/prop", KIND_INF_A, POLICY_PROPAGATE, false, false, true},
    {"inf_a/skip", KIND_INF_A, POLICY_SKIP, true, false, true},
    {"ninf_g/prop", KIND_NINF_G, POLICY_PROPAGATE, false, false, true},
    {"ninf_g/skip", KIND_NINF_G, POLICY_SKIP, false, false, true},
};
const size_t NUM_INPUTS = sizeof INPUTS / sizeof INPUTS[0];

const bloopcl_dot_backend BACKENDS[NUM_BACKENDS] = {BLOOPCL_DOTS_CLBLAST, BLOOPCL_DOTS_FUSED};

const char *backend_name(bloopcl_dot_backend backend)
{
    return backend == BLOOPCL_DOTS_FUSED ? "fused" : "clblast";
}

static const size_t FULL_SIZES[] = {1,    2,    3,    63,    64,    65,      255,     256,
                                    257,  1023, 1025, 4097,  65535, 65537,   1000003, 16777217};
static const size_t QUICK_SIZES[] = {1, 2, 3, 63, 64, 65, 256, 257, 1025, 4097, 65537, 1000003};

/* Sizes of --quick (without --sizes) at which the typed combinations run up to n = 4097. */
static bool quick_typed_size(size_t n)
{
    return n == 1 || n == 257 || n == 4097 || n > 4097;
}

/* --quick beyond n = 4097: the typed combinations on the inputs of the largest sizes (normal,
 * parallel), and beyond 65537 on normal with the fused backend only: a typed case goes
 * through device buffers, and --quick must stay near a minute on two cores. */
static bool quick_typed_large(const case_def *c)
{
    if (c->n <= 4097)
        return true;
    if (c->n <= SMALL_LIMIT)
        return c->input->large;
    return c->input->kind == KIND_NORMAL && c->backend == BLOOPCL_DOTS_FUSED;
}

/* The plan for a combination other than plain f32: fused only where a type has 2 bytes
 * (CLBlastSdot reads fp32 only: BLOOPCL_ERR_UNSUPPORTED), the inputs that fit 2-byte types,
 * every configuration up to n = 4097 (--quick: the core ones, at three of its small sizes),
 * the core ones beyond. */
static bool typed_plan_includes(const options *opt, const case_def *c)
{
    if (dtype_combo_narrow(c->dtypes) && c->backend == BLOOPCL_DOTS_CLBLAST)
        return false;
    if (!c->input->narrow)
        return false;
    if (opt->quick && (!c->config->core || !quick_typed_large(c)))
        return false;
    if (opt->quick && opt->num_sizes == 0 && !quick_typed_size(c->n))
        return false;
    return c->n <= 4097 || c->config->core;
}

/* The size plan: which (config, input) pairs run at n, before any --filter. */
static bool plan_includes(const options *opt, size_t n, const config_spec *cs,
                          const input_spec *in)
{
    if (cs->propagate && in->policy != POLICY_CONFIG)
        return false;   /* the non-finite inputs already run under PROPAGATE */
    if (opt->quick) {
        if (n <= 4097)
            return true;
        if (n <= SMALL_LIMIT)
            return in->medium;
        return in->large && cs->core;
    }
    if (n <= SMALL_LIMIT)
        return true;
    return n <= LARGE_LIMIT ? in->medium : in->large;
}

int plan_steps(const options *opt, size_t n)
{
    if (opt->steps > 0)
        return opt->steps;
    return (n <= (opt->quick ? SMALL_LIMIT : LARGE_LIMIT)) ? 3 : 2;
}

void describe_case(const case_def *c, char *text, size_t size)
{
    snprintf(text, size, "%s %s %s %s n=%zu dtype=%s", bloopcl_method_name(c->config->method),
             c->config->label, backend_name(c->backend), c->input->label, c->n,
             c->dtypes->label);
}

static bool filters_accept(const options *opt, const case_def *c)
{
    char text[TEXT_SIZE];
    describe_case(c, text, sizeof text);
    for (size_t i = 0; i < opt->num_filters; ++i)
        if (strstr(text, opt->filters[i]) == NULL)
            return false;
    return true;
}

bool case_selected(const options *opt, const case_def *c)
{
    if (!plan_includes(opt, c->n, c->config, c->input))
        return false;
    if (!dtype_combo_plain(c->dtypes) && !typed_plan_includes(opt, c))
        return false;
    return filters_accept(opt, c);
}

void sizes_of_run(const options *opt, const size_t **sizes, size_t *count)
{
    if (opt->num_sizes > 0) {
        *sizes = opt->sizes;
        *count = opt->num_sizes;
    } else if (opt->quick) {
        *sizes = QUICK_SIZES;
        *count = sizeof QUICK_SIZES / sizeof QUICK_SIZES[0];
    } else {
        *sizes = FULL_SIZES;
        *count = sizeof FULL_SIZES / sizeof FULL_SIZES[0];
    }
}

/* How many cases of `inp` at n are selected (typed_only: those of other combinations than
 * plain f32). */
static size_t input_cases(const options *opt, const input_spec *inp, size_t n, bool typed_only)
{
    size_t total = 0;
    for (size_t t = 0; t < opt->num_dtypes; ++t) {
        if (typed_only && dtype_combo_plain(&opt->dtypes[t]))
            continue;
        for (size_t k = 0; k < NUM_CONFIGS; ++k)
            for (size_t b = 0; b < NUM_BACKENDS; ++b) {
                case_def c = {&CONFIGS[k], inp, BACKENDS[b], &opt->dtypes[t], n, 0};
                total += case_selected(opt, &c);
            }
    }
    return total;
}

/* How many cases the run will have (for the progress counter). */
size_t count_cases(const options *opt)
{
    const size_t *sizes;
    size_t num_sizes, total = 0;
    sizes_of_run(opt, &sizes, &num_sizes);
    for (size_t s = 0; s < num_sizes; ++s)
        for (size_t i = 0; i < NUM_INPUTS; ++i)
            total += input_cases(opt, &INPUTS[i], sizes[s], false);
    return total;
}

bool input_has_cases(const options *opt, const input_spec *inp, size_t n)
{
    return input_cases(opt, inp, n, false) > 0;
}

bool typed_cases_at(const options *opt, size_t n)
{
    for (size_t i = 0; i < NUM_INPUTS; ++i)
        if (input_cases(opt, &INPUTS[i], n, true) > 0)
            return true;
    return false;
}

bool run_has_narrow(const options *opt)
{
    for (size_t t = 0; t < opt->num_dtypes; ++t)
        if (dtype_combo_narrow(&opt->dtypes[t]))
            return true;
    return false;
}

