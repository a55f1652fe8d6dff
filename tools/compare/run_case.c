/* run_case.c — see run_case.h. */
#include "run_case.h"
#include "checks.h"

#include <stdlib.h>
#include <string.h>

void free_workspace(workspace *ws)
{
    if (ws->segmented)
        segmented_destroy(&ws->seg);
    free(ws->d_dev);
    free(ws->d_ref);
    free(ws->m_dev);
    free(ws->q_dev);
    free(ws->m_before);
    free(ws->q_before);
    memset(ws, 0, sizeof *ws);
}

bool make_workspace(size_t n, workspace *ws)
{
    ws->n = n;
    ws->d_dev = alloc_floats(n);
    ws->d_ref = alloc_floats(n);
    ws->m_dev = alloc_floats(n);
    ws->q_dev = alloc_floats(n);
    ws->m_before = alloc_floats(n);
    ws->q_before = alloc_floats(n);
    bool ok = ws->d_dev && ws->d_ref && ws->m_dev && ws->q_dev && ws->m_before && ws->q_before;
    if (!ok)
        free_workspace(ws);
    return ok;
}

static void make_config(const case_def *c, const input_set *in, uint64_t seed,
                        bloopcl_config *config)
{
    const config_spec *cs = c->config;
    bloopcl_config_default(config, cs->method);
    config->ema_weight = cs->ema_weight;
    config->lambda = cs->lambda;
    config->eps = cs->eps;
    config->rescale = cs->rescale;
    config->ratio_only = cs->ratio_only;
    config->init = cs->init;
    config->seed = seed;
    config->initial_ema = in->initial_ema;
    config->initial_aux_ema = in->initial_aux_ema;
    config->dots = c->backend;
    bool propagate = c->input->policy == POLICY_CONFIG ? cs->propagate
                                                        : c->input->policy == POLICY_PROPAGATE;
    config->nonfinite = propagate ? BLOOPCL_NONFINITE_PROPAGATE : BLOOPCL_NONFINITE_SKIP;
}

static void call_failed(case_result *res, int step, const char *call, bloopcl_status status,
                        bloopcl_context *ctx)
{
    fail(res, FAIL_CALL, step, "%s: %s: %s", call, bloopcl_status_string(status),
         bloopcl_context_last_error(ctx));
}

static void save_reference_state(const bloopcl_reference_state *ref, workspace *ws)
{
    if (ref->ema != NULL)
        memcpy(ws->m_before, ref->ema, ref->n * sizeof(float));
    if (ref->aux_ema != NULL)
        memcpy(ws->q_before, ref->aux_ema, ref->n * sizeof(float));
}

static bloopcl_status read_device_state(bloopcl_combiner *comb, const bloopcl_config *config,
                                        workspace *ws)
{
    if (config->method == BLOOPCL_METHOD_MIXED)
        return BLOOPCL_OK;
    bloopcl_status status = bloopcl_read_state(comb, BLOOPCL_STATE_EMA, ws->m_dev, ws->n);
    if (status == BLOOPCL_OK && config->method == BLOOPCL_METHOD_PCGRAD)
        status = bloopcl_read_state(comb, BLOOPCL_STATE_AUX_EMA, ws->q_dev, ws->n);
    return status;
}

/* The device step through a segment list: g and a uploaded into their segments, d into
 * buffers that hold a sentinel, the step, then d read back and the buffers checked for writes
 * outside d's segments. Returns false (after recording why) if the case cannot go on. */
static bool segmented_step(const runner *rn, bloopcl_combiner *comb, const step_view *sv,
                           workspace *ws, bloopcl_status *status, case_result *res)
{
    char why[TEXT_SIZE];
    bool violated = false;
    segmented_io *io = &ws->seg;
    bloopcl_tensor g = {io->g.segments, io->g.num_segments};
    bloopcl_tensor a = {io->a.segments, io->a.num_segments};
    bloopcl_tensor d = {io->d.segments, io->d.num_segments};
    if (!segmented_upload(io, sv->g, sv->a, why, sizeof why)) {
        fail(res, FAIL_CALL, sv->step, "uploading the segments: %s", why);
        return false;
    }
    *status = bloopcl_step(comb, &g, &a, &d, 0, NULL, NULL);
    if (*status != BLOOPCL_OK) {
        call_failed(res, sv->step, "bloopcl_step", *status, rn->ctx);
        return false;
    }
    if (!segmented_download(io, ws->d_dev, &violated, why, sizeof why)) {
        fail(res, FAIL_CALL, sv->step, "reading the segments back: %s", why);
        return false;
    }
    if (violated)
        fail(res, FAIL_BOUNDS, sv->step, "%s", why);
    return true;
}

/* The device step, through the host call or the segment lists. */
static bool device_step(const runner *rn, bloopcl_combiner *comb, const step_view *sv,
                        workspace *ws, bloopcl_status *status, case_result *res)
{
    if (ws->segmented)
        return segmented_step(rn, comb, sv, ws, status, res);
    *status = bloopcl_step_host(comb, sv->g, sv->a, ws->d_dev);
    if (*status != BLOOPCL_OK && *status != BLOOPCL_ERR_NONFINITE_INPUT &&
        *status != BLOOPCL_ERR_OUT_OF_RANGE) {
        call_failed(res, sv->step, "bloopcl_step_host", *status, rn->ctx);
        return false;
    }
    return true;
}

/* One step on both sides, then the checks. Returns false if the case cannot go on. */
static bool run_step(const runner *rn, const case_def *c, const bloopcl_config *config,
                     bloopcl_combiner *comb, bloopcl_reference_state *ref, const input_set *in,
                     workspace *ws, int t, case_result *res)
{
    bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, rdiag = BLOOPCL_DIAGNOSTICS_INIT;
    save_reference_state(ref, ws);
    step_view sv = {.config = config, .fp = &rn->facts->fp, .n = c->n, .step = t, .g = in->g[t],
                    .a = in->a[t], .d_dev = ws->d_dev, .d_ref = ws->d_ref, .m_dev = ws->m_dev,
                    .q_dev = ws->q_dev, .m_before = ws->m_before, .q_before = ws->q_before,
                    .dev = &dev, .ref = &rdiag};
    sv.status_ref = bloopcl_reference_step(config, ref, sv.g, sv.a, ws->d_ref, &rdiag);
    if (!device_step(rn, comb, &sv, ws, &sv.status_dev, res))
        return false;
    bloopcl_status status = bloopcl_get_diagnostics(comb, &dev);
    if (status != BLOOPCL_OK) {
        call_failed(res, t, "bloopcl_get_diagnostics", status, rn->ctx);
        return false;
    }
    /* A step the device reports as beyond fp32's range (CLBlast cannot rescale its dots; the
     * reference, in double, takes it): an expected divergence, and the states part ways. */
    if (sv.status_ref == BLOOPCL_OK && !dev.accepted && dev.reason == BLOOPCL_SKIP_OUT_OF_RANGE) {
        diverge(res, t, "the device reported the step as out of fp32's range (r = %.3g); "
                "not compared further", rdiag.ratio);
        return false;
    }
    /* bloopcl_step reports a skipped step only through accepted = 0 (its status is that of
     * the enqueue); bloopcl_step_host and the reference return NONFINITE_INPUT for it. */
    if (ws->segmented && sv.status_dev == BLOOPCL_OK && !dev.accepted)
        sv.status_dev = BLOOPCL_ERR_NONFINITE_INPUT;
    sv.state_status = read_device_state(comb, config, ws);
    sv.m_ref = ref->ema;
    sv.q_ref = ref->aux_ema;
    sv.ref_initialized = ref->initialized != 0;
    check_step(&sv, c->backend, res);
    return true;
}

void run_case(const runner *rn, const case_def *c, const input_set *in, workspace *ws,
                     case_result *res)
{
    bloopcl_config config;
    make_config(c, in, rn->opt->seed, &config);
    bloopcl_combiner *comb = NULL;
    bloopcl_reference_state ref;
    memset(&ref, 0, sizeof ref);
    bloopcl_status status = bloopcl_combiner_create(rn->ctx, &config, c->n, &comb);
    if (status != BLOOPCL_OK)
        call_failed(res, 0, "bloopcl_combiner_create", status, rn->ctx);
    else if ((status = bloopcl_reference_init(&config, c->n, &ref)) != BLOOPCL_OK)
        fail(res, FAIL_CALL, 0, "bloopcl_reference_init: %s", bloopcl_status_string(status));
    for (int t = 0; t < c->steps && status == BLOOPCL_OK; ++t)
        if (!run_step(rn, c, &config, comb, &ref, in, ws, t, res))
            break;
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
}
