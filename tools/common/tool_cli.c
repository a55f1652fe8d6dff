/* tool_cli.c — see tool_cli.h. */
#include "tool_cli.h"
#include "tool_device.h"
#include "tool_log.h"

#include "bloopcl.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* getopt_long's val for the common options; a tool option k gets OPTION_BASE + k. */
enum {
    COMMON_DEVICE = 0x100,
    COMMON_LIST,
    COMMON_JSON,
    COMMON_VERBOSE,
    COMMON_VERSION,
    COMMON_HELP,
    OPTION_BASE = 0x200
};

static const struct option COMMON_OPTIONS[] = {
    {"device", required_argument, NULL, COMMON_DEVICE},
    {"list", no_argument, NULL, COMMON_LIST},
    {"json", no_argument, NULL, COMMON_JSON},
    {"verbose", no_argument, NULL, COMMON_VERBOSE},
    {"version", no_argument, NULL, COMMON_VERSION},
    {"help", no_argument, NULL, COMMON_HELP},
};
#define NUM_COMMON (sizeof COMMON_OPTIONS / sizeof COMMON_OPTIONS[0])

static void print_usage(const tool_spec *spec, FILE *out)
{
    fprintf(out, "%s       %s --list [--json] | --version [--verbose] | --help\n", spec->usage,
            spec->name);
}

static void print_common_help(const tool_spec *spec, FILE *out)
{
    fprintf(out,
            "\n"
            "Options of every bloopcl tool:\n"
            "  --device SPEC    the OpenCL device: gpu, cpu, acc, gpu:1 (type and rank), P:D\n"
            "                   (platform and device, each an index or a name substring:\n"
            "                   portable:, amd:gfx1100, 0:1) or N (the index --list prints);\n"
            "                   default: BLOOPCL_DEVICE's choice, else the first GPU, the\n"
            "                   first accelerator, the first CPU\n"
            "  --list           list the OpenCL devices (with --json: a JSON document)\n"
            "  --json           one JSON document on stdout; its \"schema\" field (%s)\n"
            "                   names the format and its version\n"
            "  --verbose        more detail (with --version: the devices)\n"
            "  --version        the tool's and the library's versions\n"
            "  --help           this text\n"
            "\n"
            "Environment:\n"
            "  BLOOPCL_DEVICE   the device when --device is not given (same grammar)\n"
            "  BLOOPCL_LOG      %s: print the library's log messages of that\n"
            "                   level and above on stderr (unset: none); another value is a\n"
            "                   usage error\n"
            "\n"
            "Exit status: 0 success; 1 %s; 2 usage or environment error (a bad\n"
            "option or value, a bad BLOOPCL_LOG, no such device, no OpenCL, no context).\n",
            spec->schema, TOOL_LOG_LEVELS, spec->failure);
}

static void print_help(const tool_spec *spec)
{
    print_usage(spec, stdout);
    putchar('\n');
    spec->help(stdout);
    print_common_help(spec, stdout);
}

static void print_version(const tool_spec *spec, bool verbose)
{
    printf("%s %s\n", spec->name, BLOOPCL_TOOLS_VERSION);
    printf("library: bloopcl %s (version number %u; built against bloopcl.h %s)\n",
           bloopcl_version_string(), bloopcl_version_number(), BLOOPCL_VERSION_STRING);
    if (verbose)
        tool_print_device_summary(stdout);
}

bool tool_usage_error(const tool_spec *spec, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "%s: ", spec->name);
    vfprintf(stderr, format, args);
    va_end(args);
    fputc('\n', stderr);
    print_usage(spec, stderr);
    fprintf(stderr, "Try '%s --help'.\n", spec->name);
    return false;
}

bool tool_parse_unsigned(const char *text, unsigned long long min, unsigned long long max,
                         unsigned long long *out)
{
    if (text == NULL || *text < '0' || *text > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < min || value > max)
        return false;
    *out = value;
    return true;
}

bool tool_parse_double(const char *text, double min, double max, double *out)
{
    if (text == NULL || *text == '\0')
        return false;
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || *end != '\0' || !isfinite(value) || !(value >= min && value <= max))
        return false;
    *out = value;
    return true;
}

bool tool_split_list(const char *text, size_t capacity, size_t *count,
                     bool (*item)(const char *text, size_t index, void *user), void *user)
{
    char buffer[1024];
    *count = 0;
    if (snprintf(buffer, sizeof buffer, "%s", text) >= (int)sizeof buffer)
        return false;
    char *save = NULL;
    for (char *token = strtok_r(buffer, ",", &save); token != NULL;
         token = strtok_r(NULL, ",", &save)) {
        if (*count == capacity || !item(token, *count, user))
            return false;
        ++*count;
    }
    return *count > 0;
}

/* The tool's options, then the common ones, then the terminator. NULL if out of memory. */
static struct option *option_table(const tool_spec *spec)
{
    struct option *table = calloc(spec->num_options + NUM_COMMON + 1, sizeof *table);
    if (table == NULL)
        return NULL;
    for (size_t k = 0; k < spec->num_options; ++k)
        table[k] = (struct option){spec->options[k].name,
                                   spec->options[k].takes_value ? required_argument : no_argument,
                                   NULL, OPTION_BASE + (int)k};
    memcpy(table + spec->num_options, COMMON_OPTIONS, sizeof COMMON_OPTIONS);
    return table;
}

typedef struct parse_state {
    bool help, version, failed;
} parse_state;

static void apply_common(int c, tool_common *common, parse_state *state)
{
    switch (c) {
    case COMMON_DEVICE: common->device = optarg; break;
    case COMMON_LIST: common->list = true; break;
    case COMMON_JSON: common->json = true; break;
    case COMMON_VERBOSE: common->verbose = true; break;
    case COMMON_VERSION: state->version = true; break;
    case 'h':
    case COMMON_HELP: state->help = true; break;
    default: state->failed = true; break;  /* '?': getopt_long has said why */
    }
}

static void parse_loop(const tool_spec *spec, const struct option *table, int argc, char **argv,
                       tool_common *common, void *user, parse_state *state)
{
    optind = 1;
    opterr = 1;
    int c;
    while (!state->failed && (c = getopt_long(argc, argv, "h", table, NULL)) != -1) {
        if (c >= OPTION_BASE && (size_t)(c - OPTION_BASE) < spec->num_options) {
            const tool_option *option = &spec->options[c - OPTION_BASE];
            state->failed = !spec->apply(option->id, optarg, user);
            continue;
        }
        apply_common(c, common, state);
        if (state->failed) {
            print_usage(spec, stderr);
            fprintf(stderr, "Try '%s --help'.\n", spec->name);
        }
    }
    if (!state->failed && optind < argc)
        state->failed = !tool_usage_error(spec, "unexpected argument \"%s\"", argv[optind]);
}

int tool_parse_args(const tool_spec *spec, int argc, char **argv, tool_common *common,
                    void *user)
{
    *common = (tool_common){.log_threshold = TOOL_LOG_OFF};
    struct option *table = option_table(spec);
    if (table == NULL) {
        fprintf(stderr, "%s: out of memory\n", spec->name);
        return TOOL_EXIT_USAGE;
    }
    parse_state state = {0};
    parse_loop(spec, table, argc, argv, common, user, &state);
    free(table);
    if (state.failed)
        return TOOL_EXIT_USAGE;
    if (state.help) {
        print_help(spec);
        return TOOL_EXIT_OK;
    }
    if (state.version) {
        print_version(spec, common->verbose);
        return TOOL_EXIT_OK;
    }
    const char *log = getenv("BLOOPCL_LOG");
    if (!tool_log_parse(log, &common->log_threshold)) {
        tool_usage_error(spec, "BLOOPCL_LOG=\"%s\": takes %s", log, TOOL_LOG_LEVELS);
        return TOOL_EXIT_USAGE;
    }
    if (spec->check != NULL && !spec->check(user))
        return TOOL_EXIT_USAGE;
    return common->list ? tool_list_devices(spec, common) : TOOL_CONTINUE;
}
