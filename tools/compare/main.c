/*
 * bloopcl-compare — runs every method, option and dot backend of bloopcl on an OpenCL device
 * and on the CPU reference (bloopcl_reference_*) from the same inputs, step after step, and
 * checks the direction d, the EMA state and the scalars (r and the dot products) against the
 * error bounds derived in tools/COMPARE.md ("Tolerances"; tolerance.c evaluates them). It uses
 * only the public API (bloopcl.h), linked like any user program; OpenCL itself is called only
 * to read CL_DEVICE_SINGLE_FP_CONFIG and the largest work-group (run.c), and, with --segments,
 * to make the buffers of the segment lists (segments.c).
 *
 * The parts: options.c (command line, --help), catalogue.c (what runs), inputs.c (g and a),
 * tolerance.c (the bounds), checks.c and results.c (one step's checks, one case's findings),
 * run_case.c (one case), run.c (devices and sizes), report*.c (table, JSON, progress).
 * Exit status: tools/common/tool_cli.h (0 passed, 1 some case failed, 2 usage or device).
 */
#include "options.h"
#include "run.h"

int main(int argc, char **argv)
{
    options opt;
    int status = parse_options(argc, argv, &opt);
    return status == TOOL_CONTINUE ? run_devices(&opt) : status;
}
