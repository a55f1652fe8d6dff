/* test_methods.c — every method and option against the CPU reference, over sizes that hit
 * the edges of work-groups and of CLBlast's blocking, for many steps, on both dot backends. */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>

typedef struct method_case {
    bloopcl_method method;
    double ema_weight;
    double lambda;
    int rescale;
    int ratio_only;
    bloopcl_init init;
    bloopcl_dot_backend dots;
} method_case;

static bloopcl_config config_of(const method_case *c)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.ema_weight = c->ema_weight;
    config.lambda = c->lambda;
    config.rescale = c->rescale;
    config.ratio_only = c->ratio_only;
    config.init = c->init;
    config.seed = 7;
    config.dots = c->dots;
    return config;
}

#define BOTH(method, w, lambda, rescale, ratio_only, init) \
    {method, w, lambda, rescale, ratio_only, init, BLOOPCL_DOTS_CLBLAST}, \
    {method, w, lambda, rescale, ratio_only, init, BLOOPCL_DOTS_FUSED}

static method_case all_cases[] = {
    BOTH(BLOOPCL_METHOD_BLOOP, 0.1, 0.1, 0, 0, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_BLOOP, 0.01, 1.0, 1, 0, BLOOPCL_INIT_FIRST_GRADIENT),
    BOTH(BLOOPCL_METHOD_BLOOP, 1.0, 0.5, 0, 0, BLOOPCL_INIT_RANDOM),
    BOTH(BLOOPCL_METHOD_BLOOP, 0.3, 2.0, 0, 1, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_DYNAMIC_BARRIER, 1.0, 3.0, 0, 0, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_DYNAMIC_BARRIER, 0.2, 0.0, 1, 1, BLOOPCL_INIT_RANDOM),
    BOTH(BLOOPCL_METHOD_PCGRAD, 1.0, 0.7, 0, 0, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_PCGRAD, 0.05, 0.3, 1, 0, BLOOPCL_INIT_FIRST_GRADIENT),
    BOTH(BLOOPCL_METHOD_MIXED, 1.0, 0.25, 1, 0, BLOOPCL_INIT_ZEROS),
};

typedef struct size_case {
    size_t n;
    int steps;
} size_case;

/* Multi-step sequences on the small and medium sizes; fewer steps where n is large so the
 * suite stays within minutes on a 2-core CPU device. */
static const size_case sizes[] = {{1, 60}, {2, 60}, {3, 60}, {1000, 55}, {65537, 12},
                                  {1048577, 3}};

typedef struct full_case {
    method_case method;
    size_case size;
} full_case;

ParameterizedTestParameters(methods, against_reference)
{
    static full_case cases[sizeof all_cases / sizeof all_cases[0] * sizeof sizes / sizeof sizes[0]];
    size_t k = 0;
    for (size_t m = 0; m < sizeof all_cases / sizeof all_cases[0]; ++m)
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s)
            cases[k++] = (full_case){all_cases[m], sizes[s]};
    return cr_make_param_array(full_case, cases, k);
}

ParameterizedTest(full_case *c, methods, against_reference, .timeout = 300)
{
    bloopcl_config config = config_of(&c->method);
    support_run_against_reference(&config, c->size.n, c->size.steps, 1000 + c->size.n, false);
}

Test(methods, host_call_matches_reference_over_50_steps)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    support_run_against_reference(&config, 4099, 50, 5, true);
}
