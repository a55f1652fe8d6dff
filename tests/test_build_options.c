/* test_build_options.c — the caller's kernel build options at any length (they were cut at
 * 1024 bytes, silently), and caller text in the messages about them escaped. */
#include "support.h"
#include "internal.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LONG_OPTIONS 2000

/* "-DBLOOPCL_TEST_PAD_0000=1 -DBLOOPCL_..." is refused, so the padding is harmless defines
 * of another prefix: at least `length` bytes of them, then `last` (if any). */
static char *long_options(size_t length, const char *last)
{
    size_t size = length + (last ? strlen(last) : 0) + 64;
    char *text = malloc(size);
    cr_assert_not_null(text);
    size_t used = 0;
    for (unsigned i = 0; used < length; i++)
        used += (size_t)snprintf(text + used, size - used, "-DTEST_PAD_%04u=1 ", i);
    snprintf(text + used, size - used, "%s", last ? last : "");
    return text;
}

static bloopcl_status create_with_options(const char *options, bloopcl_context **ctx)
{
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.build_options = options;
    *ctx = NULL;
    return bloopcl_context_create(&params, ctx);
}

/* The option after 2000 bytes reaches the compiler: an unknown one fails the build (it was
 * cut off, and the build succeeded). */
Test(build_options, an_option_after_2000_bytes_reaches_the_compiler)
{
    support_context_skip_without_device();
    char *options = long_options(LONG_OPTIONS, "-cl-no-such-option");
    bloopcl_context *ctx = NULL;
    bloopcl_status status = create_with_options(options, &ctx);
    cr_expect_eq(status, BLOOPCL_ERR_KERNEL_BUILD, "status %d: %s", (int)status,
                 bloopcl_context_last_error(ctx));
    cr_expect(strstr(bloopcl_context_last_error(ctx), "CL_INVALID_BUILD_OPTIONS") != NULL, "%s",
              bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
    free(options);
}

/* And 2000 bytes of harmless options build kernels that agree with the reference (through the
 * environment variable, which the support context reads). */
Test(build_options, harmless_2000_byte_options_work)
{
    support_context_skip_without_device();
    char *options = long_options(LONG_OPTIONS, "-DTEST_LAST=1");
    cr_assert_gt(strlen(options), LONG_OPTIONS);
    cr_assert_eq(setenv("BLOOPCL_BUILD_OPTIONS", options, 1), 0);
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    support_run_against_reference(&config, 1031, 3, 7, false);
    free(options);
}

/* A refused option after 2000 bytes is found, and named whole even when it is long. */
Test(build_options, refused_option_after_2000_bytes)
{
    char message[4096];
    char *options = long_options(LONG_OPTIONS, "-cl-mad-enable");
    cr_expect_eq(bloopcl__check_build_options(options, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "\"-cl-mad-enable\" is refused") != NULL, "%s", message);
    free(options);

    /* A 200-byte word is quoted whole (words were cut at 127 bytes); a longer one is cut in
     * the message, which says how long it was. */
    char word[601] = "-DBLOOPCL_";
    memset(word + strlen(word), 'x', 200 - strlen(word));
    strcpy(word + 199, "Z");
    cr_expect_eq(bloopcl__check_build_options(word, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "xxZ\" is refused") != NULL, "the word whole: %s", message);
    memset(word + 199, 'x', 600 - 199);
    word[600] = '\0';
    cr_expect_eq(bloopcl__check_build_options(word, message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "xx\"... (600 bytes) is refused") != NULL, "%s", message);
}

/* ESC and a newline inside a refused option, from the parameter and from the environment. */
Test(build_options, control_characters_in_messages_are_escaped)
{
    char message[4096];
    cr_expect_eq(bloopcl__check_build_options("-w -DBLOOPCL_\x1b[2J\nX", message,
                                              sizeof message), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "\"-DBLOOPCL_\\x1b[2J\" is refused") != NULL, "%s", message);
    cr_expect(strchr(message, '\x1b') == NULL && strchr(message, '\n') == NULL, "%s", message);
    cr_expect_eq(bloopcl__check_build_options("-w '-cl-opt\x1b", message, sizeof message),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(message, "unterminated quote") != NULL, "%s", message);
    cr_expect(strchr(message, '\x1b') == NULL, "%s", message);

    support_context_skip_without_device();
    bloopcl_context *ctx = NULL;
    cr_assert_eq(create_with_options("-D BLOOPCL_\x1b[31m\nX", &ctx),
                 BLOOPCL_ERR_INVALID_ARGUMENT);
    const char *error = bloopcl_context_last_error(ctx);
    cr_expect(strstr(error, "params->build_options=\"-D BLOOPCL_\\x1b[31m\\nX\": ") != NULL,
              "%s", error);
    cr_expect(strchr(error, '\x1b') == NULL && strchr(error, '\n') == NULL, "%s", error);
    bloopcl_context_destroy(ctx);
}
