/* test_abi.c — the struct_size rules of bloopcl.h's versioned structs (src/abi.c): a struct
 * from an older header (smaller), from a newer one (larger), or never initialised (0), each
 * as an input and as an output. The symbol table and the header's macros: check_abi.sh. */
#include "support.h"

#include <criterion/criterion.h>

#include <string.h>

#define N 1000
#define SENTINEL 0xAB

/* A caller built against a newer header: the same struct with fields we do not know. */
typedef struct newer_config {
    bloopcl_config known;
    double future[3];
} newer_config;

typedef struct newer_diagnostics {
    bloopcl_diagnostics known;
    unsigned char future[40];
} newer_diagnostics;

typedef struct newer_device_info {
    bloopcl_device_info known;
    unsigned char future[24];
} newer_device_info;

static bool all_bytes(const unsigned char *bytes, size_t size, unsigned char value)
{
    for (size_t i = 0; i < size; i++)
        if (bytes[i] != value)
            return false;
    return true;
}

/* One host step with `config` on a fresh combiner; d against the reference's. */
static void expect_step_like_reference(bloopcl_context *ctx, const bloopcl_config *config)
{
    bloopcl_combiner *comb = support_combiner(ctx, config, N);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_ref = support_alloc(N);
    support_fill_normal(g, N, 1, 1.0f);
    support_fill_normal(a, N, 2, 1.0f);
    cr_assert_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(config, N, &ref), BLOOPCL_OK);
    support_check_step(comb, config, &ref, g, a, d, d_ref, 0);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    free(g), free(a), free(d), free(d_ref);
}

Test(abi, config_without_struct_size_is_refused)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    cr_expect_eq(config.struct_size, sizeof config, "the default initialiser sets the size");
    config.struct_size = 0;
    char message[256];
    cr_expect_eq(bloopcl_config_validate(&config, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "struct_size is 0") != NULL, "message: %s", message);
    bloopcl_context *ctx = support_context();
    bloopcl_combiner *comb = NULL;
    cr_expect_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect_null(comb);
    cr_expect(strstr(bloopcl_context_last_error(ctx), "config->struct_size is 0") != NULL,
              "message: %s", bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
}

Test(abi, config_smaller_than_the_first_layout_is_refused)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.struct_size = offsetof(bloopcl_config, dots);  /* stops before the last v1 field */
    char message[256];
    cr_expect_eq(bloopcl_config_validate(&config, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "smaller than the oldest layout") != NULL, "message: %s", message);
}

Test(abi, config_of_a_newer_header_with_unset_fields_works)
{
    newer_config newer;
    memset(&newer, 0, sizeof newer);
    bloopcl_config_default(&newer.known, BLOOPCL_METHOD_BLOOP);
    newer.known.struct_size = sizeof newer;
    newer.known.lambda = 0.5;
    char message[256];
    cr_expect_eq(bloopcl_config_validate(&newer.known, message, sizeof message), BLOOPCL_OK,
                 "%s", message);
    bloopcl_context *ctx = support_context();
    expect_step_like_reference(ctx, &newer.known);
    bloopcl_context_destroy(ctx);
}

Test(abi, config_of_a_newer_header_asking_for_more_is_refused)
{
    newer_config newer;
    memset(&newer, 0, sizeof newer);
    bloopcl_config_default(&newer.known, BLOOPCL_METHOD_BLOOP);
    newer.known.struct_size = sizeof newer;
    newer.future[1] = 1.0;  /* a field this library cannot honour */
    char message[256];
    cr_expect_eq(bloopcl_config_validate(&newer.known, message, sizeof message),
                 BLOOPCL_ERR_UNSUPPORTED);
    cr_expect(strstr(message, "does not know") != NULL, "message: %s", message);
    cr_expect(strstr(message, BLOOPCL_VERSION_STRING) != NULL, "names the version: %s", message);
}

Test(abi, diagnostics_are_written_within_the_callers_size_only)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    support_fill_normal(g, N, 3, 1.0f);
    support_fill_normal(a, N, 4, 1.0f);
    cr_assert_eq(bloopcl_step_host(comb, g, a, d), BLOOPCL_OK);

    bloopcl_diagnostics plain = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &plain), BLOOPCL_OK);
    newer_diagnostics newer;
    memset(&newer, SENTINEL, sizeof newer);
    newer.known.struct_size = sizeof newer;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &newer.known), BLOOPCL_OK);
    cr_expect_eq(newer.known.struct_size, sizeof newer, "the caller's size stays");
    cr_expect(all_bytes(newer.future, sizeof newer.future, SENTINEL),
              "nothing is written past the fields the library knows");
    cr_expect_eq(newer.known.ratio, plain.ratio);
    cr_expect_eq(newer.known.steps, 1u);
    cr_expect_eq(newer.known.kernels, plain.kernels);

    bloopcl_diagnostics unset = BLOOPCL_DIAGNOSTICS_INIT;
    memset(&unset, SENTINEL, sizeof unset);
    unset.struct_size = 0;
    cr_expect_eq(bloopcl_get_diagnostics(comb, &unset), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(all_bytes((const unsigned char *)&unset + sizeof unset.struct_size,
                        sizeof unset - sizeof unset.struct_size, SENTINEL),
              "a refused output struct is left alone");
    cr_expect(strstr(bloopcl_context_last_error(ctx), "diagnostics->struct_size is 0") != NULL,
              "message: %s", bloopcl_context_last_error(ctx));
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
    free(g), free(a), free(d);
}

Test(abi, reference_refuses_unsized_diagnostics_before_touching_the_state)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    support_fill_normal(g, N, 5, 1.0f);
    support_fill_normal(a, N, 6, 1.0f);
    bloopcl_diagnostics unset = {.struct_size = 0};
    cr_expect_eq(bloopcl_reference_step(&config, &ref, g, a, d, &unset),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(all_bytes((const unsigned char *)ref.ema, N * sizeof(float), 0),
              "the reference EMA (zeros) is untouched");
    bloopcl_reference_free(&ref);
    free(g), free(a), free(d);
}

Test(abi, device_list_uses_the_callers_struct_size_as_stride)
{
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    cr_assert_geq(count, 1u, "CI has PoCL");
    bloopcl_device_info *plain = calloc(count, sizeof *plain);
    newer_device_info *newer = malloc(count * sizeof *newer);
    cr_assert(plain != NULL && newer != NULL);
    plain[0].struct_size = sizeof *plain;
    memset(newer, SENTINEL, count * sizeof *newer);
    newer[0].known.struct_size = sizeof *newer;
    size_t again = 0;
    cr_assert_eq(bloopcl_list_devices(plain, count, &again), BLOOPCL_OK);
    cr_assert_eq(bloopcl_list_devices(&newer[0].known, count, &again), BLOOPCL_OK);
    cr_expect_eq(again, count);
    for (size_t i = 0; i < count; i++) {
        cr_expect_eq(newer[i].known.struct_size, sizeof *newer, "entry %zu gets the size", i);
        cr_expect_eq(newer[i].known.device, plain[i].device, "entry %zu", i);
        cr_expect_str_eq(newer[i].known.device_name, plain[i].device_name);
        cr_expect(all_bytes(newer[i].future, sizeof newer[i].future, SENTINEL),
                  "entry %zu: nothing past the known fields", i);
    }
    bloopcl_device_info unset[1] = {{.struct_size = 0}};
    cr_expect_eq(bloopcl_list_devices(unset, 1, &again), BLOOPCL_ERR_INVALID_ARGUMENT);
    free(plain);
    free(newer);
}

Test(abi, context_params_without_struct_size_leave_an_error_only_context)
{
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    cr_expect_eq(params.struct_size, sizeof params);
    params.struct_size = 0;
    bloopcl_context *ctx = NULL;
    cr_expect_eq(bloopcl_context_create(&params, &ctx), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_assert_not_null(ctx, "an error-only context carries the message");
    cr_expect(strstr(bloopcl_context_last_error(ctx), "params->struct_size is 0") != NULL,
              "message: %s", bloopcl_context_last_error(ctx));
    cr_expect_eq(bloopcl_context_finish(ctx), BLOOPCL_ERR_STATE);
    bloopcl_context_destroy(ctx);
    cr_expect_eq(bloopcl_context_create(NULL, &ctx), BLOOPCL_OK, "NULL params are the defaults");
    bloopcl_context_destroy(ctx);
}

Test(abi, configuration_in_force_respects_the_callers_size)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_PCGRAD);
    config.lambda = 0.25;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    newer_config newer;
    memset(&newer, SENTINEL, sizeof newer);
    newer.known.struct_size = sizeof newer;
    cr_assert_eq(bloopcl_combiner_config(comb, &newer.known), BLOOPCL_OK);
    cr_expect_eq(newer.known.method, BLOOPCL_METHOD_PCGRAD);
    cr_expect_eq(newer.known.lambda, 0.25);
    cr_expect(all_bytes((const unsigned char *)newer.future, sizeof newer.future, SENTINEL));
    bloopcl_config unset = {.struct_size = 0};
    cr_expect_eq(bloopcl_combiner_config(comb, &unset), BLOOPCL_ERR_INVALID_ARGUMENT);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}
