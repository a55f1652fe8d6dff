/* build_options.c — the caller's kernel build options, split into words and checked.
 *
 * The kernels rely on IEEE float semantics: NaN and Inf propagate (the non-finite probe, the
 * SKIP policy), a*b+c is not contracted (the EMA matches the CPU reference bit for bit), signed
 * zeros and denormals are kept. They also rely on the shape macros the library defines itself
 * (BLOOPCL_VECTOR with BLOOPCL_CONTIGUOUS): a caller's -DBLOOPCL_* would break that pairing.
 * So the options that give up any of these are refused before anything is built. Pure
 * functions: no OpenCL, no environment. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

int bloopcl__next_build_option(const char *text, size_t *position, char *word, size_t word_size)
{
    size_t p = *position, length = 0;
    while (is_blank(text[p]))
        p++;
    if (text[p] == '\0') {
        *position = p;
        return 0;
    }
    /* Shell-like words: blanks separate, quotes group (and are removed), so that
     * -DNAME="a b" is one word and "-cl-mad-enable" is the option it names. */
    char quote = '\0';
    for (; text[p] != '\0' && (quote != '\0' || !is_blank(text[p])); p++) {
        char c = text[p];
        if (quote == '\0' && (c == '"' || c == '\'')) {
            quote = c;
            continue;
        }
        if (c == quote) {
            quote = '\0';
            continue;
        }
        if (length + 1 < word_size)
            word[length++] = c;
    }
    if (word_size > 0)
        word[length] = '\0';
    *position = p;
    return quote != '\0' ? -1 : 1;
}

/* Options that give up a property the kernels depend on, and that property. */
static const struct {
    const char *option;
    const char *why;
} refused_options[] = {
    {"-cl-fast-relaxed-math", "it implies finite-only, unsafe and mad math"},
    {"-cl-finite-math-only", "NaN and Inf must propagate (non-finite inputs are detected)"},
    {"-cl-unsafe-math-optimizations", "it reorders and contracts float arithmetic"},
    {"-cl-mad-enable", "a*b+c must not be contracted (the EMA is exact)"},
    {"-cl-no-signed-zeros", "signed zeros must be kept (results match the CPU reference)"},
    {"-cl-denorms-are-zero", "denormals must be kept (results match the CPU reference)"},
};

#define MACRO_PREFIX "BLOOPCL_"

static int defines_library_macro(const char *name)
{
    return strncmp(name, MACRO_PREFIX, strlen(MACRO_PREFIX)) == 0;
}

/* A refused word is quoted whole, escaped (it is the caller's or the environment's text). */
#define QUOTED_OPTION 256 /* with the reason, within the 512 bytes context.c gives */

static bloopcl_status refuse(const char *option, size_t length, const char *why, char *message,
                             size_t message_size)
{
    char quoted[QUOTED_OPTION];
    bloopcl__quote(quoted, sizeof quoted, option, length);
    bloopcl__format(message, message_size, "build option %s is refused: %s", quoted, why);
    return BLOOPCL_ERR_INVALID_ARGUMENT;
}

/* Checks one word; `previous_was_d` says the word before was a bare -D (as in "-D NAME"):
 * then the word is a macro name, and the pair is refused together. */
static bloopcl_status check_word(const char *word, int previous_was_d, char *message,
                                 size_t message_size)
{
    for (size_t i = 0; i < sizeof refused_options / sizeof refused_options[0]; ++i)
        if (strcmp(word, refused_options[i].option) == 0)
            return refuse(word, strlen(word), refused_options[i].why, message, message_size);
    const char *shape_why = "the library defines the BLOOPCL_* macros itself (kernel shape)";
    if (strncmp(word, "-D", 2) == 0 && defines_library_macro(word + 2))
        return refuse(word, strlen(word), shape_why, message, message_size);
    if (previous_was_d && defines_library_macro(word)) {
        /* The pair quoted as one word, "-D NAME". */
        size_t length = strlen(word) + 3;
        char *both = malloc(length + 1);
        if (both == NULL)
            return refuse(word, length - 3, shape_why, message, message_size);
        memcpy(both, "-D ", 3);
        memcpy(both + 3, word, length - 2);
        bloopcl_status status = refuse(both, length, shape_why, message, message_size);
        free(both);
        return status;
    }
    return BLOOPCL_OK;
}

/* Words are checked whole, however long: the word buffer holds the whole text. */
static bloopcl_status check_words(const char *options, char *word, char *message,
                                  size_t message_size)
{
    size_t capacity = strlen(options) + 1, position = 0;
    int previous_was_d = 0, found;
    while ((found = bloopcl__next_build_option(options, &position, word, capacity)) > 0) {
        bloopcl_status status = check_word(word, previous_was_d, message, message_size);
        if (status != BLOOPCL_OK)
            return status;
        previous_was_d = strcmp(word, "-D") == 0;
    }
    if (found < 0) {
        char quoted[QUOTED_OPTION];
        bloopcl__quote(quoted, sizeof quoted, options, strlen(options));
        bloopcl__format(message, message_size, "build options %s: unterminated quote", quoted);
        return BLOOPCL_ERR_INVALID_ARGUMENT;
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__check_build_options(const char *options, char *message,
                                            size_t message_size)
{
    if (message != NULL && message_size > 0)
        message[0] = '\0';
    if (options == NULL)
        return BLOOPCL_OK;
    char *word = malloc(strlen(options) + 1);
    if (word == NULL) {
        bloopcl__format(message, message_size, "no memory to check %zu bytes of build options",
                        strlen(options));
        return BLOOPCL_ERR_OUT_OF_MEMORY;
    }
    bloopcl_status status = check_words(options, word, message, message_size);
    free(word);
    return status;
}
