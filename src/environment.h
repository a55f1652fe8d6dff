/* environment.h — the environment variables bloopcl reads, read in one place (environment.c)
 * when a context is created, and kept with the context (explicit parameters override them). */
#ifndef BLOOPCL_ENVIRONMENT_H
#define BLOOPCL_ENVIRONMENT_H

#include <stdbool.h>

/* Each field is a private copy of the variable's value, or NULL when it is unset. */
typedef struct bloopcl_environment {
    char *device;          /* BLOOPCL_DEVICE: device spec, when params->device_spec is NULL */
    char *build_options;   /* BLOOPCL_BUILD_OPTIONS: extra kernel build options */
    char *cache_dir;       /* BLOOPCL_CACHE_DIR: binary cache folder ("" or "off": none) */
    char *xdg_cache_home;  /* XDG_CACHE_HOME, then HOME: where the default cache folder lies */
    char *home;
    char *dots;            /* BLOOPCL_DOTS: auto|fused|clblast for BLOOPCL_DOTS_AUTO */
    char *kernel_shape;    /* BLOOPCL_KERNEL_SHAPE: cpu|gpu (tests, benchmarks) */
    char *kernel_slots;    /* BLOOPCL_KERNEL_SLOTS: 8|16|32 ranges per launch */
    char *kernel_vector;   /* BLOOPCL_KERNEL_VECTOR: floats per vector in the CPU shape */
    char *kernel_dir;      /* BLOOPCL_KERNEL_DIR: kernel sources from disk (development) */
    char *clblast_xdot;    /* BLOOPCL_CLBLAST_XDOT: WGS1,WGS2 for CLBlast's Xdot */
} bloopcl_environment;

/* Copies every variable above; false (and nothing held) if a copy cannot be allocated. */
bool bloopcl__environment_read(bloopcl_environment *env);
void bloopcl__environment_free(bloopcl_environment *env);

#endif
