/* kernels.c — the trainer's OpenCL program: the .cl files of tools/train/, embedded at build
 * time by tools/embed_kernels.py (as the library embeds cl/), built as one program for the
 * bloopcl context's device. A failed build prints the compiler's log with the line map of the
 * concatenated sources, so that its line numbers lead back to a file and line. */
#include "trainer.h"
#include "train_kernels.h"

#include <stdio.h>

static const char *const kernel_names[NUM_KERNELS] = {
    "gather", "bias_act", "relu_back", "colsum", "softmax_xent", "matvec", "unit_scale",
    "aux_grad", "adam", "adam_tick"};

/* "batch.cl lines 1-12, model.cl lines 13-55, ...": compilers number the lines of the
 * concatenated program. */
static void print_line_map(void)
{
    size_t line = 1;
    fprintf(stderr, "%s: the program is, in order:", PROGRAM);
    for (size_t i = 0; i < train_num_embedded_sources; ++i) {
        const train_embedded_source *src = &train_embedded_sources[i];
        size_t lines = 0;
        for (size_t c = 0; c < src->length; ++c)
            lines += src->text[c] == '\n';
        fprintf(stderr, "%s %s lines %zu-%zu", i ? "," : "", src->name, line,
                line + lines - (lines > 0));
        line += lines;
    }
    fprintf(stderr, "\n");
}

static void print_build_log(trainer *tr)
{
    char log[4096] = "";
    clGetProgramBuildInfo(tr->program, tr->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log,
                          NULL);
    fprintf(stderr, "%s: kernel build failed:\n%s\n", PROGRAM, log);
    print_line_map();
}

/* -cl-std=CL1.2 and no fast-math, as the library's kernels; OUTPUT_ACCEPTED is the index of
 * the flag that adam.cl reads in bloopcl's output buffer. */
int kernels_build(trainer *tr)
{
    enum { MAX_SOURCES = 8 };
    const char *texts[MAX_SOURCES];
    size_t lengths[MAX_SOURCES], count = train_num_embedded_sources;
    if (count > MAX_SOURCES) {
        fprintf(stderr, "%s: %zu kernel sources, room for %d\n", PROGRAM, count, MAX_SOURCES);
        return -1;
    }
    for (size_t i = 0; i < count; ++i) {
        texts[i] = train_embedded_sources[i].text;
        lengths[i] = train_embedded_sources[i].length;
    }
    cl_int err;
    tr->program = clCreateProgramWithSource(tr->cl, (cl_uint)count, texts, lengths, &err);
    if (cl_check(err, "clCreateProgramWithSource") != 0)
        return -1;
    char build_options[64];
    snprintf(build_options, sizeof build_options, "-cl-std=CL1.2 -DOUTPUT_ACCEPTED=%d",
             (int)BLOOPCL_OUTPUT_ACCEPTED);
    if (clBuildProgram(tr->program, 1, &tr->device, build_options, NULL, NULL) != CL_SUCCESS) {
        print_build_log(tr);
        return -1;
    }
    for (int i = 0; i < NUM_KERNELS; ++i) {
        tr->k[i] = clCreateKernel(tr->program, kernel_names[i], &err);
        if (cl_check(err, kernel_names[i]) != 0)
            return -1;
    }
    return 0;
}

void kernels_release(trainer *tr)
{
    for (int i = 0; i < NUM_KERNELS; ++i)
        if (tr->k[i])
            clReleaseKernel(tr->k[i]);
    if (tr->program)
        clReleaseProgram(tr->program);
}

int launch(trainer *tr, int id, size_t gx, size_t gy, const karg *args, size_t nargs)
{
    for (size_t i = 0; i < nargs; ++i)
        if (cl_check(clSetKernelArg(tr->k[id], (cl_uint)i, args[i].size, args[i].value),
                     kernel_names[id]) != 0)
            return -1;
    size_t global[2] = {gx, gy};
    return cl_check(clEnqueueNDRangeKernel(tr->queue, tr->k[id], gy ? 2 : 1, NULL, global, NULL,
                                           0, NULL, NULL), kernel_names[id]);
}
