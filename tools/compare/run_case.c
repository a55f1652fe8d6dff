/* run_case.c — see run_case.h. */
#include "run_case.h"
#include "checks.h"
#include "shards.h"

#include <math.h>
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
    free(ws->g_stored);
    free(ws->a_stored);
    free(ws->d_stored);
    free(ws->g_true);
    free(ws->a_true);
    if (ws->scales != NULL)
        clReleaseMemObject(ws->scales);
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
    ws->g_stored = (unsigned char *)alloc_floats(n);
    ws->a_stored = (unsigned char *)alloc_floats(n);
    ws->d_stored = (unsigned char *)alloc_floats(n);
    ws->g_true = alloc_floats(n);
    ws->a_true = alloc_floats(n);
    bool ok = ws->d_dev && ws->d_ref && ws->m_dev && ws->q_dev && ws->m_before && ws->q_before &&
              ws->g_stored && ws->a_stored && ws->d_stored && ws->g_true && ws->a_true;
    if (!ok)
        free_workspace(ws);
    return ok;
}

/* Four floats: g's inverse scale at index 1, a's at 3, NaN at 0 and 2 (a step that read
 * the wrong index would be non-finite). */
#define SCALE_INDEX_G 1
#define SCALE_INDEX_A 3
#define SCALE_FLOATS 4

bool make_scale_buffer(bloopcl_context *ctx, workspace *ws)
{
    cl_int err = CL_SUCCESS;
    ws->scales = clCreateBuffer(bloopcl_context_cl_context(ctx), CL_MEM_READ_WRITE,
                                SCALE_FLOATS * sizeof(float), NULL, &err);
    return err == CL_SUCCESS;
}

static bool write_scales(const runner *rn, const case_def *c, workspace *ws)
{
    float values[SCALE_FLOATS] = {NAN, (float)combo_inv_scale_g(rn->opt, c->dtypes), NAN,
                                  (float)combo_inv_scale_a(rn->opt, c->dtypes)};
    return clEnqueueWriteBuffer(bloopcl_context_queue(rn->ctx), ws->scales, CL_TRUE, 0,
                                sizeof values, values, 0, NULL, NULL) == CL_SUCCESS;
}

/* The stored form of one input (x taken as the stored values: rounded into `dtype`) and the
 * true gradient the step sees: widened, then one fp32 multiplication by the inverse scale
 * rounded to float, as the kernels and bloopcl_reference_step_typed do. */
static void store_input(const float *x, bloopcl_dtype dtype, double inv_scale, size_t n,
                        unsigned char *stored, float *true_value)
{
    float scale = (float)inv_scale;
    bloopcl_convert(x, BLOOPCL_DTYPE_F32, stored, dtype, n);
    bloopcl_convert(stored, dtype, true_value, BLOOPCL_DTYPE_F32, n);
    for (size_t i = 0; scale != 1.0f && i < n; ++i)
        true_value[i] = true_value[i] * scale;
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

/* The device side of a case: one combiner, or (--shards K) K of them over slices. */
typedef struct device_side {
    bloopcl_combiner *comb;
    bool is_sharded;
    sharded shards;
} device_side;

static bloopcl_status read_state_of(device_side *dev, bloopcl_state_kind kind, float *out,
                                    size_t n)
{
    if (dev->is_sharded)
        return sharded_read_state(&dev->shards, kind, out);
    return bloopcl_read_state(dev->comb, kind, out, n);
}

static bloopcl_status read_device_state(device_side *dev, const bloopcl_config *config,
                                        workspace *ws)
{
    if (config->method == BLOOPCL_METHOD_MIXED)
        return BLOOPCL_OK;
    bloopcl_status status = read_state_of(dev, BLOOPCL_STATE_EMA, ws->m_dev, ws->n);
    if (status == BLOOPCL_OK && config->method == BLOOPCL_METHOD_PCGRAD)
        status = read_state_of(dev, BLOOPCL_STATE_AUX_EMA, ws->q_dev, ws->n);
    return status;
}

/* The step's diagnostics; sharded, every shard must hold the same scalars bit for bit. */
static bloopcl_status device_diagnostics(device_side *dev, int step, bloopcl_diagnostics *out,
                                         case_result *res)
{
    if (!dev->is_sharded)
        return bloopcl_get_diagnostics(dev->comb, out);
    bool agree = true;
    bloopcl_status status = sharded_diagnostics(&dev->shards, out, &agree);
    if (status == BLOOPCL_OK && !agree)
        fail(res, FAIL_R, step, "the shards disagree on the step's scalars");
    return status;
}

/* The step's options: the combination's inverse scales, from the host or the buffer. */
static bloopcl_step_options step_options(const runner *rn, const case_def *c,
                                         const workspace *ws)
{
    bloopcl_step_options so = BLOOPCL_STEP_OPTIONS_INIT;
    so.inv_scale_g = combo_inv_scale_g(rn->opt, c->dtypes);
    so.inv_scale_a = combo_inv_scale_a(rn->opt, c->dtypes);
    if (c->dtypes->scale == SCALE_DEVICE) {
        so.inv_scale_buffer = ws->scales;
        so.inv_scale_g_index = SCALE_INDEX_G;
        so.inv_scale_a_index = SCALE_INDEX_A;
    }
    return so;
}

/* The device step through a segment list: g and a uploaded into their segments (as
 * stored), d into buffers that hold a sentinel, the step (bloopcl_step for plain f32, else
 * bloopcl_step_with_options), then d read back and the buffers checked for writes outside
 * d's segments. Returns false (after recording why) if the case cannot go on. */
static bool segmented_step(const runner *rn, const case_def *c, bloopcl_combiner *comb,
                           const step_view *sv, workspace *ws, bloopcl_status *status,
                           case_result *res)
{
    char why[TEXT_SIZE];
    bool violated = false, plain = dtype_combo_plain(c->dtypes);
    segmented_io *io = &ws->seg;
    bloopcl_tensor g = {io->g.segments, io->g.num_segments};
    bloopcl_tensor a = {io->a.segments, io->a.num_segments};
    bloopcl_tensor d = {io->d.segments, io->d.num_segments};
    segmented_set_dtypes(io, c->dtypes->g, c->dtypes->a, c->dtypes->d);
    if (!segmented_upload(io, plain ? (const void *)sv->g : ws->g_stored,
                          plain ? (const void *)sv->a : ws->a_stored, why, sizeof why)) {
        fail(res, FAIL_CALL, sv->step, "uploading the segments: %s", why);
        return false;
    }
    if (c->dtypes->scale == SCALE_DEVICE && !write_scales(rn, c, ws)) {
        fail(res, FAIL_CALL, sv->step, "writing the inverse scales failed");
        return false;
    }
    bloopcl_step_options so = step_options(rn, c, ws);
    *status = plain ? bloopcl_step(comb, &g, &a, &d, 0, NULL, NULL)
                    : bloopcl_step_with_options(comb, &g, &a, &d, &so, 0, NULL, NULL);
    if (*status != BLOOPCL_OK) {
        call_failed(res, sv->step, plain ? "bloopcl_step" : "bloopcl_step_with_options",
                    *status, rn->ctx);
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
/* The case steps through segment lists (bloopcl_step or _with_options), not the host call. */
static bool through_segments(const runner *rn, const case_def *c)
{
    return rn->opt->segments > 0 || !dtype_combo_plain(c->dtypes);
}

static bool device_step(const runner *rn, const case_def *c, device_side *dev,
                        const step_view *sv, workspace *ws, bloopcl_status *status,
                        case_result *res)
{
    bloopcl_combiner *comb = dev->comb;
    if (dev->is_sharded) {
        char why[TEXT_SIZE];
        *status = sharded_step(&dev->shards, sv->g, sv->a, ws->d_dev, why, sizeof why);
        if (*status != BLOOPCL_OK)
            fail(res, FAIL_CALL, sv->step, "%s", why);
        return *status == BLOOPCL_OK;
    }
    if (through_segments(rn, c))
        return segmented_step(rn, c, comb, sv, ws, status, res);
    *status = bloopcl_step_host(comb, sv->g, sv->a, ws->d_dev);
    if (*status != BLOOPCL_OK && *status != BLOOPCL_ERR_NONFINITE_INPUT &&
        *status != BLOOPCL_ERR_OUT_OF_RANGE) {
        call_failed(res, sv->step, "bloopcl_step_host", *status, rn->ctx);
        return false;
    }
    return true;
}

/* The reference step of a typed combination on the stored inputs (which it makes, with the
 * true gradients the checks see instead of the inputs), its d widened into ws->d_ref. */
static bloopcl_status typed_reference_step(const runner *rn, const case_def *c,
                                           const bloopcl_config *config,
                                           bloopcl_reference_state *ref, const input_set *in,
                                           workspace *ws, int t, step_view *sv,
                                           bloopcl_diagnostics *rdiag)
{
    const dtype_combo *dt = c->dtypes;
    double inv_g = combo_inv_scale_g(rn->opt, dt), inv_a = combo_inv_scale_a(rn->opt, dt);
    store_input(in->g[t], dt->g, inv_g, c->n, ws->g_stored, ws->g_true);
    store_input(in->a[t], dt->a, inv_a, c->n, ws->a_stored, ws->a_true);
    sv->g = ws->g_true;
    sv->a = ws->a_true;
    bloopcl_status status = bloopcl_reference_step_typed(config, ref, ws->g_stored, dt->g,
                                                         ws->a_stored, dt->a, ws->d_stored,
                                                         dt->d, inv_g, inv_a, rdiag);
    bloopcl_convert(ws->d_stored, dt->d, ws->d_ref, BLOOPCL_DTYPE_F32, c->n);
    return status;
}

/* One step on both sides, then the checks. Returns false if the case cannot go on. */
static bool run_step(const runner *rn, const case_def *c, const bloopcl_config *config,
                     device_side *side, bloopcl_reference_state *ref, const input_set *in,
                     workspace *ws, int t, case_result *res)
{
    bloopcl_diagnostics dev = BLOOPCL_DIAGNOSTICS_INIT, rdiag = BLOOPCL_DIAGNOSTICS_INIT;
    save_reference_state(ref, ws);
    step_view sv = {.config = config, .fp = &rn->facts->fp, .n = c->n, .step = t, .g = in->g[t],
                    .a = in->a[t], .d_dev = ws->d_dev, .d_ref = ws->d_ref,
                    .d_dtype = c->dtypes->d, .m_dev = ws->m_dev, .q_dev = ws->q_dev,
                    .m_before = ws->m_before, .q_before = ws->q_before, .dev = &dev,
                    .ref = &rdiag};
    if (dtype_combo_plain(c->dtypes))
        sv.status_ref = bloopcl_reference_step(config, ref, sv.g, sv.a, ws->d_ref, &rdiag);
    else
        sv.status_ref = typed_reference_step(rn, c, config, ref, in, ws, t, &sv, &rdiag);
    if (!device_step(rn, c, side, &sv, ws, &sv.status_dev, res))
        return false;
    bloopcl_status status = device_diagnostics(side, t, &dev, res);
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
    if ((side->is_sharded || through_segments(rn, c)) && sv.status_dev == BLOOPCL_OK &&
        !dev.accepted)
        sv.status_dev = BLOOPCL_ERR_NONFINITE_INPUT;
    sv.state_status = read_device_state(side, config, ws);
    sv.m_ref = ref->ema;
    sv.q_ref = ref->aux_ema;
    sv.ref_initialized = ref->initialized != 0;
    check_step(&sv, c->backend, res);
    return true;
}

static bloopcl_status create_side(const runner *rn, const case_def *c,
                                  const bloopcl_config *config, device_side *side,
                                  case_result *res)
{
    memset(side, 0, sizeof *side);
    if (rn->opt->shards > 0) {
        char why[TEXT_SIZE];
        bloopcl_status status = sharded_create(rn->ctx, config, c->n, rn->opt->shards,
                                               &side->shards, why, sizeof why);
        if (status != BLOOPCL_OK)
            fail(res, FAIL_CALL, 0, "bloopcl_combiner_create: %s", why);
        side->is_sharded = status == BLOOPCL_OK;
        return status;
    }
    bloopcl_status status = bloopcl_combiner_create(rn->ctx, config, c->n, &side->comb);
    if (status != BLOOPCL_OK)
        call_failed(res, 0, "bloopcl_combiner_create", status, rn->ctx);
    return status;
}

static void destroy_side(device_side *side)
{
    if (side->is_sharded)
        sharded_destroy(&side->shards);
    bloopcl_combiner_destroy(side->comb);
}

void run_case(const runner *rn, const case_def *c, const input_set *in, workspace *ws,
              case_result *res)
{
    bloopcl_config config;
    make_config(c, in, rn->opt->seed, &config);
    device_side side;
    bloopcl_reference_state ref;
    memset(&ref, 0, sizeof ref);
    bloopcl_status status = create_side(rn, c, &config, &side, res);
    if (status == BLOOPCL_OK && (status = bloopcl_reference_init(&config, c->n, &ref)) != BLOOPCL_OK)
        fail(res, FAIL_CALL, 0, "bloopcl_reference_init: %s", bloopcl_status_string(status));
    for (int t = 0; t < c->steps && status == BLOOPCL_OK; ++t)
        if (!run_step(rn, c, &config, &side, &ref, in, ws, t, res))
            break;
    bloopcl_reference_free(&ref);
    destroy_side(&side);
}
