/* tool_cli.h — the command line every bloopcl tool shares: options parsed with getopt_long,
 * the common options (--device, --list, --json, --verbose, --version, --help), BLOOPCL_LOG, and
 * the exit status convention. A tool describes its own options in a tool_spec; the common ones
 * are added here, so their spelling, messages and help text are the same in every tool. */
#ifndef BLOOPCL_TOOL_CLI_H
#define BLOOPCL_TOOL_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* The exit status of every bloopcl tool (each --help says so). */
enum {
    TOOL_EXIT_OK = 0,      /* the run or the check succeeded */
    TOOL_EXIT_FAILED = 1,  /* the run or the check failed (the tool's spec says how) */
    TOOL_EXIT_USAGE = 2    /* usage or environment error: a bad option or value, a bad
                              BLOOPCL_LOG, no such device, no OpenCL, no context, no data */
};

/* tool_parse_args: the arguments are good, go on and run. */
#define TOOL_CONTINUE (-1)

/* BLOOPCL_LOG unset or empty: no log callback. */
#define TOOL_LOG_OFF (-1)

/* One option of a tool: --name, or --name VALUE (also --name=VALUE). */
typedef struct tool_option {
    const char *name;    /* without the leading "--" */
    bool takes_value;
    int id;              /* handed to tool_spec.apply */
} tool_option;

typedef struct tool_spec {
    const char *name;        /* the program, as messages name it: "bloopcl-compare" */
    const char *usage;       /* synopsis lines, the first beginning "usage: " */
    const char *failure;     /* what exit status 1 means for this tool */
    const char *schema;      /* the "schema" of its --json documents: "bloopcl-compare/1" */
    void (*help)(FILE *out); /* the tool's description and its own options */
    const tool_option *options;
    size_t num_options;
    /* Applies one of `options` to `user`; returns false after tool_usage_error. */
    bool (*apply)(int id, const char *value, void *user);
    /* Optional: checks the options together once all are applied; false after
     * tool_usage_error. */
    bool (*check)(void *user);
} tool_spec;

/* The options every tool takes, as parsed. */
typedef struct tool_common {
    const char *device;   /* --device SPEC; NULL: BLOOPCL_DEVICE decides */
    bool json;            /* --json: one JSON document on stdout */
    bool list;            /* --list: list the devices and stop */
    bool verbose;         /* --verbose */
    int log_threshold;    /* from BLOOPCL_LOG: the lowest bloopcl_log_level shown; TOOL_LOG_OFF */
} tool_common;

/* Parses argv into *common and, through spec->apply, into `user` (which holds the tool's
 * defaults), then runs spec->check. Does what --help, --version and --list ask and returns
 * their exit status, or TOOL_EXIT_USAGE after a usage error (getopt's message or the tool's,
 * then the synopsis, on stderr), or TOOL_CONTINUE to run. */
int tool_parse_args(const tool_spec *spec, int argc, char **argv, tool_common *common,
                    void *user);

/* "<name>: <message>" and the synopsis on stderr; returns false (for tool_spec.apply). */
bool tool_usage_error(const tool_spec *spec, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Splits a comma-separated list and hands each item (with its position) to `item`; fails
 * when an item does, when there are more than `capacity` or none, or when the text is longer
 * than 1023 characters. *count gets the number of items. */
bool tool_split_list(const char *text, size_t capacity, size_t *count,
                     bool (*item)(const char *text, size_t index, void *user), void *user);

/* Parses an unsigned decimal in [min, max] (no sign, no suffix). */
bool tool_parse_unsigned(const char *text, unsigned long long min, unsigned long long max,
                         unsigned long long *out);

/* Parses a finite decimal number in [min, max]. */
bool tool_parse_double(const char *text, double min, double max, double *out);

#endif
