/* test_gpu_policy.c — the default policy on a GPU-typed device is what bloopcl.h says: a
 * combiner left on BLOOPCL_DOTS_AUTO uses the fused backend on every device type (unless
 * BLOOPCL_DOTS says otherwise), and its steps match the CPU reference there.
 *
 * meson runs this program on Oclgrind, a simulator every machine can have, through the ICD
 * loader (OCL_ICD_VENDORS, BLOOPCL_DEVICE=oclgrind:), with gpu_type_shim.c preloaded so that
 * the device reports CL_DEVICE_TYPE_GPU alone (Oclgrind 21.10 reports every type at once).
 * Every test first makes sure the device is a GPU and not a CPU, so none can pass on a CPU
 * device; the steps then run in the GPU kernel shape. */
#include "support.h"

#include <criterion/criterion.h>
#include <stdlib.h>

#define N 1031   /* several work-groups and a partial one in the GPU shape */
#define STEPS 3

/* The environment is read at context creation: no BLOOPCL_DOTS from the caller's shell. */
static bloopcl_context *gpu_context(const char *dots_env)
{
    if (dots_env == NULL)
        cr_assert_eq(unsetenv("BLOOPCL_DOTS"), 0);
    else
        cr_assert_eq(setenv("BLOOPCL_DOTS", dots_env, 1), 0);
    bloopcl_context *ctx = support_context();
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cr_assert((info.type & CL_DEVICE_TYPE_GPU) && !(info.type & CL_DEVICE_TYPE_CPU),
              "this test needs a device of type GPU and not CPU (meson runs it on Oclgrind "
              "with gpu_type_shim preloaded), got \"%s\" of type 0x%llx", info.device_name,
              (unsigned long long)info.type);
    return ctx;
}

static bloopcl_dot_backend resolved_backend(bloopcl_context *ctx, bloopcl_method method)
{
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    cr_assert_eq(config.dots, BLOOPCL_DOTS_AUTO, "the default configuration asks for AUTO");
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_config in_force = {.struct_size = sizeof(bloopcl_config)};
    cr_assert_eq(bloopcl_combiner_config(comb, &in_force), BLOOPCL_OK);
    bloopcl_combiner_destroy(comb);
    return in_force.dots;
}

Test(gpu_policy, device_is_a_gpu)
{
    bloopcl_context_destroy(gpu_context(NULL));
}

Test(gpu_policy, auto_resolves_to_fused_for_every_method)
{
    bloopcl_context *ctx = gpu_context(NULL);
    bloopcl_method methods[] = {BLOOPCL_METHOD_BLOOP, BLOOPCL_METHOD_DYNAMIC_BARRIER,
                                BLOOPCL_METHOD_PCGRAD, BLOOPCL_METHOD_MIXED};
    for (size_t k = 0; k < sizeof methods / sizeof methods[0]; ++k)
        cr_expect_eq(resolved_backend(ctx, methods[k]), BLOOPCL_DOTS_FUSED,
                     "%s: AUTO on a GPU must resolve to FUSED (bloopcl.h, bloopcl_dot_backend)",
                     bloopcl_method_name(methods[k]));
    bloopcl_context_destroy(ctx);
}

Test(gpu_policy, environment_overrides_auto)
{
    bloopcl_context *ctx = gpu_context("clblast");
    cr_expect_eq(resolved_backend(ctx, BLOOPCL_METHOD_BLOOP), BLOOPCL_DOTS_CLBLAST);
    bloopcl_context_destroy(ctx);
}

/* Steps of an AUTO combiner on the GPU, each checked against the reference (d per element,
 * r and the dots within the dot tolerance, the state bit for bit). */
static void run_auto_steps(bloopcl_method method)
{
    bloopcl_context *ctx = gpu_context(NULL);
    bloopcl_config config;
    bloopcl_config_default(&config, method);
    config.lambda = 0.5;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N);
    float *d_dev = support_alloc(N), *d_ref = support_alloc(N);
    for (int t = 0; t < STEPS; ++t) {
        support_fill_normal(g, N, 100 + 2 * (uint64_t)t, 1.0f);
        support_fill_normal(a, N, 101 + 2 * (uint64_t)t, 0.5f);
        cr_assert_eq(bloopcl_step_host(comb, g, a, d_dev), BLOOPCL_OK, "step %d: %s", t,
                     bloopcl_context_last_error(ctx));
        support_check_step(comb, &config, &ref, g, a, d_dev, d_ref, t);
    }
    if (ref.ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);
    if (ref.aux_ema != NULL)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, ref.aux_ema, N);
    free(g), free(a), free(d_dev), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

Test(gpu_policy, auto_bloop_steps_match_reference)
{
    run_auto_steps(BLOOPCL_METHOD_BLOOP);
}

Test(gpu_policy, auto_pcgrad_steps_match_reference)
{
    run_auto_steps(BLOOPCL_METHOD_PCGRAD);
}
