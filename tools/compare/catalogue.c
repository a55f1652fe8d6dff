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

const input_spec INPUTS[] = {
    {"normal", KIND_NORMAL, POLICY_CONFIG, true, true},
    {"zeros", KIND_ZEROS, POLICY_CONFIG, false, false},
    {"denormal", KIND_DENORMAL, POLICY_CONFIG, false, false},
    {"large", KIND_LARGE, POLICY_CONFIG, true, false},
    {"huge", KIND_HUGE, POLICY_CONFIG, true, false},
    {"mixed", KIND_MIXED, POLICY_CONFIG, true, false},
    {"parallel", KIND_PARALLEL, POLICY_CONFIG, true, true},
    {"antiparallel", KIND_ANTIPARALLEL, POLICY_CONFIG, false, false},
    {"orthogonal", KIND_ORTHOGONAL, POLICY_CONFIG, true, false},
    {"nan_g/prop", KIND_NAN_G, POLICY_PROPAGATE, true, false},
    {"nan_g/skip", KIND_NAN_G, POLICY_SKIP, false, false},
    {"inf_a/prop", KIND_INF_A, POLICY_PROPAGATE, false, false},
    {"inf_a/skip", KIND_INF_A, POLICY_SKIP, true, false},
    {"ninf_g/prop", KIND_NINF_G, POLICY_PROPAGATE, false, false},
    {"ninf_g/skip", KIND_NINF_G, POLICY_SKIP, false, false},
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
    snprintf(text, size, "%s %s %s %s n=%zu", bloopcl_method_name(c->config->method),
             c->config->label, backend_name(c->backend), c->input->label, c->n);
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
    return plan_includes(opt, c->n, c->config, c->input) && filters_accept(opt, c);
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

/* How many cases the run will have (for the progress counter). */
size_t count_cases(const options *opt)
{
    const size_t *sizes;
    size_t num_sizes, total = 0;
    sizes_of_run(opt, &sizes, &num_sizes);
    for (size_t s = 0; s < num_sizes; ++s)
        for (size_t i = 0; i < NUM_INPUTS; ++i)
            for (size_t k = 0; k < NUM_CONFIGS; ++k)
                for (size_t b = 0; b < NUM_BACKENDS; ++b) {
                    case_def c = {&CONFIGS[k], &INPUTS[i], BACKENDS[b], sizes[s], 0};
                    total += case_selected(opt, &c);
                }
    return total;
}

bool input_has_cases(const options *opt, const input_spec *inp, size_t n)
{
    for (size_t k = 0; k < NUM_CONFIGS; ++k)
        for (size_t b = 0; b < NUM_BACKENDS; ++b) {
            case_def c = {&CONFIGS[k], inp, BACKENDS[b], n, 0};
            if (case_selected(opt, &c))
                return true;
        }
    return false;
}

