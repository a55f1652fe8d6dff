/* environment.c — the only place the library calls getenv. A context copies the variables
 * when it is created, so a later setenv in the trainer (which may also invalidate getenv's
 * pointers) changes nothing in a context that exists, and every value a context uses can be
 * named with its source in messages. */
#include "environment.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef struct variable {
    const char *name;
    size_t offset;
} variable;

#define VARIABLE(name, field) {name, offsetof(bloopcl_environment, field)}
static const variable variables[] = {
    VARIABLE("BLOOPCL_DEVICE", device),
    VARIABLE("BLOOPCL_BUILD_OPTIONS", build_options),
    VARIABLE("BLOOPCL_CACHE_DIR", cache_dir),
    VARIABLE("XDG_CACHE_HOME", xdg_cache_home),
    VARIABLE("HOME", home),
    VARIABLE("BLOOPCL_DOTS", dots),
    VARIABLE("BLOOPCL_KERNEL_SHAPE", kernel_shape),
    VARIABLE("BLOOPCL_KERNEL_SLOTS", kernel_slots),
    VARIABLE("BLOOPCL_KERNEL_VECTOR", kernel_vector),
    VARIABLE("BLOOPCL_KERNEL_DIR", kernel_dir),
    VARIABLE("BLOOPCL_CLBLAST_XDOT", clblast_xdot),
};

static char **field(bloopcl_environment *env, const variable *v)
{
    return (char **)(void *)((unsigned char *)env + v->offset);
}

bool bloopcl__environment_read(bloopcl_environment *env)
{
    memset(env, 0, sizeof *env);
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) {
        const char *value = getenv(variables[i].name);
        if (value == NULL)
            continue;
        char *copy = malloc(strlen(value) + 1);
        if (copy == NULL) {
            bloopcl__environment_free(env);
            return false;
        }
        *field(env, &variables[i]) = strcpy(copy, value);
    }
    return true;
}

void bloopcl__environment_free(bloopcl_environment *env)
{
    for (size_t i = 0; i < sizeof variables / sizeof variables[0]; i++) {
        free(*field(env, &variables[i]));
        *field(env, &variables[i]) = NULL;
    }
}
