/* skip_check.c — see skip_check.h. */
#include "skip_check.h"
#include "optimizer.h"
#include "step.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What Adam owns. */
typedef struct optimizer_snapshot {
    float *tensor[3][NUM_TENSORS];  /* parameters, first and second moments (trainer's Adam) */
    float *fused[2];                /* bloopcl's moments over the own slices (fused Adam) */
    size_t fused_count;
    cl_int steps;                   /* Adam's step count */
} optimizer_snapshot;

static void free_snapshot(optimizer_snapshot *s)
{
    for (int k = 0; k < 3; ++k)
        for (int t = 0; t < NUM_TENSORS; ++t)
            free(s->tensor[k][t]);
    free(s->fused[0]);
    free(s->fused[1]);
}

/* Bytes of part k of a snapshot (parameters: whole tensors; moments: the own slices). */
static size_t snapshot_bytes(const trainer *tr, int k, int t)
{
    return (k == 0 ? tr->tensor_size[t] : tr->own_count[t]) * sizeof(float);
}

static int take_snapshot(trainer *tr, const options *opt, bloopcl_combiner *comb,
                         optimizer_snapshot *s)
{
    cl_mem *groups[3] = {tr->param, tr->adam_m, tr->adam_v};
    *s = (optimizer_snapshot){0};
    for (int k = 0; k < 3; ++k)
        for (int t = 0; t < NUM_TENSORS; ++t) {
            size_t bytes = snapshot_bytes(tr, k, t);
            if (bytes == 0)
                continue;
            if ((s->tensor[k][t] = malloc(bytes)) == NULL ||
                read_buffer(tr, groups[k][t], s->tensor[k][t], bytes, "snapshot") != 0)
                return -1;
        }
    s->fused_count = opt->own_adam ? 0 : bloopcl_combiner_size(comb);
    if (optimizer_fused_moments(opt, comb, s->fused) != 0)
        return -1;
    return optimizer_steps_applied(tr, opt, comb, &s->steps);
}

/* Bit for bit (memcmp: a NaN that crept in or a -0 for a +0 counts as a change). */
static int same_snapshot(const trainer *tr, const optimizer_snapshot *x,
                         const optimizer_snapshot *y)
{
    int same = x->steps == y->steps;
    for (int k = 0; k < 2 && x->fused_count > 0; ++k)
        same = same && memcmp(x->fused[k], y->fused[k], x->fused_count * sizeof(float)) == 0;
    for (int k = 0; k < 3; ++k)
        for (int t = 0; t < NUM_TENSORS; ++t)
            same = same && (snapshot_bytes(tr, k, t) == 0 ||
                            memcmp(x->tensor[k][t], y->tensor[k][t],
                                   snapshot_bytes(tr, k, t)) == 0);
    return same;
}

/* bloopcl's verdict on the last step: its output buffer's "accepted" entry. */
static int read_accepted(trainer *tr, bloopcl_combiner *comb, float *accepted)
{
    cl_mem outputs = NULL;
    if (bloopcl_combiner_outputs(comb, &outputs) != BLOOPCL_OK)
        return 0;  /* then *accepted stays -1: the check fails */
    return cl_check(clEnqueueReadBuffer(tr->queue, outputs, CL_TRUE,
                                        BLOOPCL_OUTPUT_ACCEPTED * sizeof(float), sizeof *accepted,
                                        accepted, 0, NULL, NULL), "read accepted");
}

int skip_check_step(trainer *tr, bloopcl_combiner *comb, const options *opt, size_t first,
                    long t)
{
    optimizer_snapshot before = {0}, after = {0};
    float accepted = -1.0f;
    int rc = take_snapshot(tr, opt, comb, &before);
    if (rc == 0 && (rc = train_step(tr, comb, opt, first, t)) == 0)
        rc = take_snapshot(tr, opt, comb, &after);
    if (rc == 0)
        rc = read_accepted(tr, comb, &accepted);
    if (rc == 0 && (accepted != 0.0f || !same_snapshot(tr, &before, &after))) {
        fprintf(stderr, "%s: FAIL: NaN in g at step %ld: accepted %g; parameters, Adam moments "
                "or step count changed\n", PROGRAM, t, (double)accepted);
        rc = -1;
    } else if (rc == 0 && train_dp_rank(tr->dp) == 0) {
        fprintf(stderr, "%s: NaN in g at step %ld: skipped (accepted 0); parameters, Adam "
                "moments and step count (%d) bit-identical\n", PROGRAM, t, (int)after.steps);
    }
    free_snapshot(&before);
    free_snapshot(&after);
    return rc;
}

int skip_check_steps_applied(trainer *tr, const options *opt, bloopcl_combiner *comb,
                             long steps_run)
{
    cl_int applied = 0;
    if (optimizer_steps_applied(tr, opt, comb, &applied) != 0)
        return -1;
    if (applied != steps_run - 1) {
        fprintf(stderr, "%s: FAIL: Adam applied %d of %ld steps, expected %ld\n", PROGRAM,
                (int)applied, steps_run, steps_run - 1);
        return -1;
    }
    return 0;
}
