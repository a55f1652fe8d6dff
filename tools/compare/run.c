/* run.c — see run.h. */
#include "run.h"
#include "run_case.h"
#include "tool_device.h"
#include "tool_time.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void run_one(const runner *rn, const case_def *c, const input_set *in, workspace *ws)
{
    case_result res = {.parity_ok = true};
    report_case_start(rn->rp, c);
    run_case(rn, c, in, ws, &res);
    report_case(rn->rp, c, &res);
}

/* Every selected case of one input spec at one size. */
static void run_input(const runner *rn, const input_spec *inp, size_t n, int steps,
                      const input_set *in, workspace *ws)
{
    for (size_t t = 0; t < rn->opt->num_dtypes; ++t)
        for (size_t k = 0; k < NUM_CONFIGS; ++k)
            for (size_t b = 0; b < NUM_BACKENDS; ++b) {
                case_def c = {&CONFIGS[k], inp, BACKENDS[b], &rn->opt->dtypes[t], n, steps};
                if (case_selected(rn->opt, &c))
                    run_one(rn, &c, in, ws);
            }
}

/* The buffers of the segment lists for vectors of n elements: --segments P, or one segment
 * per tensor where typed combinations run without it; and the inverse scales' buffer. */
static bool make_segments(const runner *rn, size_t n, workspace *ws)
{
    char why[TEXT_SIZE];
    bool typed = typed_cases_at(rn->opt, n);
    size_t count = rn->opt->segments > 0 ? rn->opt->segments : 1;
    if (rn->opt->segments == 0 && !typed)
        return true;
    ws->segmented = segmented_create(rn->ctx, n, count, rn->opt->layout, &ws->seg, why,
                                     sizeof why);
    if (!ws->segmented)
        fprintf(stderr, "%s: cannot make %zu segments of n = %zu: %s\n", COMPARE_TOOL.name,
                count, n, why);
    else if (typed && !make_scale_buffer(rn->ctx, ws)) {
        fprintf(stderr, "%s: cannot make the buffer of the inverse scales\n", COMPARE_TOOL.name);
        return false;
    }
    return ws->segmented;
}

static bool run_size(const runner *rn, size_t n)
{
    int steps = plan_steps(rn->opt, n);
    workspace ws = {0};
    if (!make_workspace(n, &ws))
        return false;
    if (!make_segments(rn, n, &ws)) {
        free_workspace(&ws);
        return false;
    }
    bool ok = true;
    for (size_t i = 0; i < NUM_INPUTS && ok; ++i) {
        if (!input_has_cases(rn->opt, &INPUTS[i], n))
            continue;
        input_set in;
        ok = make_inputs(INPUTS[i].kind, n, steps, rn->opt->seed, &in);
        if (ok)
            run_input(rn, &INPUTS[i], n, steps, &in, &ws);
        free_inputs(&in);
    }
    free_workspace(&ws);
    if (!ok)
        fprintf(stderr, "%s: out of host memory at n = %zu\n", COMPARE_TOOL.name, n);
    return ok;
}

/* What the tolerances need to know about a device, beyond bloopcl_device_info. */
static void describe_facts(const bloopcl_device_info *info, device_facts *facts)
{
    cl_device_fp_config fp = 0;
    size_t max_group = 1;
    facts->info = *info;
    clGetDeviceInfo(info->device, CL_DEVICE_SINGLE_FP_CONFIG, sizeof fp, &fp, NULL);
    clGetDeviceInfo(info->device, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof max_group, &max_group,
                    NULL);
    facts->fp.denormals = (fp & CL_FP_DENORM) != 0;
    facts->fp.tree_depth = ceil(log2((double)(max_group > 1 ? max_group : 1)));
}

/* Runs every selected case on one device. Returns its exit status. */
static int run_device(const options *opt, const char *spec, report *rp)
{
    bloopcl_context *ctx = NULL;
    bloopcl_status status = BLOOPCL_OK;
    int code = tool_open_context(&COMPARE_TOOL, &opt->common, spec, &ctx, &status);
    if (code != TOOL_EXIT_OK) {
        report_device_error(rp, spec, status);
        return code;
    }
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    device_facts facts;
    bloopcl_context_device_info(ctx, &info);
    describe_facts(&info, &facts);
    report_device(rp, &facts);
    runner rn = {ctx, &facts, opt, rp};
    const size_t *sizes;
    size_t num_sizes;
    sizes_of_run(opt, &sizes, &num_sizes);
    bool ok = true;
    for (size_t s = 0; s < num_sizes && ok; ++s)
        ok = run_size(&rn, sizes[s]);
    report_device_end(rp);
    bloopcl_context_destroy(ctx);
    return ok ? TOOL_EXIT_OK : TOOL_EXIT_FAILED;
}

#define MAX_DEVICES 64
#define SPEC_SIZE 24

/* The device specs to check: every flat index with --all, else the one of --device (NULL:
 * BLOOPCL_DEVICE). Returns how many; 0 if --all finds none. */
static size_t device_specs(const options *opt, char (*specs)[SPEC_SIZE], const char **chosen)
{
    if (!opt->all) {
        chosen[0] = opt->common.device;
        return 1;
    }
    size_t count = 0;
    bloopcl_status status;
    free(tool_devices(&count, &status));
    count = count < MAX_DEVICES ? count : MAX_DEVICES;
    for (size_t i = 0; i < count; ++i) {
        snprintf(specs[i], SPEC_SIZE, "%zu", i);
        chosen[i] = specs[i];
    }
    return count;
}

/* The worse of two exit statuses: a usage or environment error over a failure. */
static int worse(int a, int b)
{
    return a > b ? a : b;
}

int run_devices(const options *opt)
{
    char specs[MAX_DEVICES][SPEC_SIZE];
    const char *chosen[MAX_DEVICES];
    size_t count = device_specs(opt, specs, chosen);
    if (count == 0) {
        fprintf(stderr, "%s: --all: no OpenCL device found\n", COMPARE_TOOL.name);
        return TOOL_EXIT_USAGE;
    }
    size_t total = count_cases(opt) * count;
    if (total == 0) {
        tool_usage_error(&COMPARE_TOOL, "no case matches the --sizes and --filter given");
        return TOOL_EXIT_USAGE;
    }
    report rp;
    double start = tool_seconds();
    int code = TOOL_EXIT_OK;
    report_begin(&rp, opt, total);
    for (size_t i = 0; i < count; ++i) {
        int device_code = run_device(opt, chosen[i], &rp);
        if (device_code == TOOL_EXIT_USAGE && !opt->all && !opt->common.json)
            return device_code;   /* no table to close: the message says it all */
        code = worse(code, device_code);
    }
    report_end(&rp, tool_seconds() - start);
    return worse(code, rp.counts.failed > 0 ? TOOL_EXIT_FAILED : TOOL_EXIT_OK);
}
