/* project.cl - pass 2: write the direction d and commit (or undo) the state; the scalars come
 * from the finalize kernel.
 *
 *   BLOOP, DYNAMIC_BARRIER   d = s (g + lambda (a - r m'))
 *   ratio-only               d = s ((1 - lambda r) g + lambda a)
 *   PCGRAD                   d = s ((g - min(r_q, 0) q') + lambda (a - min(r, 0) m'))
 *   MIXED                    d = s (g + lambda a)
 *
 * m' (and q') either were materialised in m_next by pass 1 (CLBlast backend, recompute_ema = 0,
 * double-buffered state) or are recomputed here from m_cur exactly as pass 1 computed them and
 * written back in place (fused backend: m_next is m_cur, and each element is read and written
 * by the same work-item). A rejected step writes d = 0 and leaves the state alone: in place
 * nothing is written; double-buffered, m_cur is copied into m_next, so the state after the
 * host's buffer flip is exactly the state before the step. g and a are read before d is
 * written, so d may alias them. g and a are read as their types and inverse loss scales say,
 * d is written in its own type (dtype.cl).
 *
 * With an optimizer (opt_kind != BLOOPCL_KERNEL_OPT_NONE) the buffers in d's place are the
 * parameters: each element's d goes into the update of optimize.cl instead of memory, and a
 * rejected step writes nothing there (parameters and moments stay as they were). */

typedef struct bloopcl_step_scalars {
    int method, ratio_only, has_ema, has_aux_ema, recompute_ema, accepted;  /* recompute_ema:
                                                       fused backend, state in place */
    float lambda, s, r, r_q, w;
    bloopcl_optimizer_scalars opt;  /* opt.kind BLOOPCL_KERNEL_OPT_NONE: d is written */
} bloopcl_step_scalars;

/* One element (T = float) or one vector (T = floatv) at index i. */
#define BLOOPCL_DEFINE_PROJECT_AT(T, SFX, LOAD, STORE)                                         \
    void bloopcl_project_at##SFX(const bloopcl_inputs *in, global uchar *d, int d_type,      \
                                 global const float *m_cur, global float *m_next,             \
                                 global const float *q_cur, global float *q_next,             \
                                 global float *m1, global float *m2, size_t i,                \
                                 const bloopcl_step_scalars *k)                                \
    {                                                                                          \
        if (!k->accepted) {                                                                    \
            if (k->opt.kind == BLOOPCL_KERNEL_OPT_NONE)                                        \
                bloopcl_store##SFX((T)(0.0f), d, i, d_type);                                   \
            if (k->has_ema && !k->recompute_ema)                                               \
                STORE(LOAD(m_cur, i), m_next, i);                                              \
            if (k->has_aux_ema && !k->recompute_ema)                                           \
                STORE(LOAD(q_cur, i), q_next, i);                                              \
            return;                                                                            \
        }                                                                                      \
        T gi = bloopcl_load##SFX(in->g, i, in->g_type, in->g_scale);                           \
        T ai = bloopcl_load##SFX(in->a, i, in->a_type, in->a_scale);                           \
        T mi = (T)(0.0f), qi = (T)(0.0f), di;                                                  \
        if (k->has_ema) {                                                                      \
            mi = k->recompute_ema ? bloopcl_ema##SFX(LOAD(m_cur, i), gi, k->w)                 \
                                  : LOAD(m_next, i);                                           \
            if (k->recompute_ema)                                                              \
                STORE(mi, m_next, i);                                                          \
        }                                                                                      \
        if (k->has_aux_ema) {                                                                  \
            qi = k->recompute_ema ? bloopcl_ema##SFX(LOAD(q_cur, i), ai, k->w)                 \
                                  : LOAD(q_next, i);                                           \
            if (k->recompute_ema)                                                              \
                STORE(qi, q_next, i);                                                          \
        }                                                                                      \
        if (k->method == BLOOPCL_KERNEL_MIXED)                                                 \
            di = k->s * (gi + k->lambda * ai);                                                 \
        else if (k->method == BLOOPCL_KERNEL_PCGRAD)                                           \
            di = k->s * ((gi - bloopcl_min_zero(k->r_q) * qi) +                                \
                         k->lambda * (ai - bloopcl_min_zero(k->r) * mi));                      \
        else if (k->ratio_only)                                                                \
            di = k->s * ((1.0f - k->lambda * k->r) * gi + k->lambda * ai);                     \
        else                                                                                   \
            di = k->s * (gi + k->lambda * (ai - k->r * mi));                                   \
        if (k->opt.kind == BLOOPCL_KERNEL_OPT_NONE)                                            \
            bloopcl_store##SFX(di, d, i, d_type);                                              \
        else                                                                                   \
            bloopcl_optimize_at##SFX(d, d_type, m1, m2, i, di, &k->opt);                       \
    }
BLOOPCL_DEFINE_PROJECT_AT(floatv, _v, BLOOPCL_LOADV, BLOOPCL_STOREV)
BLOOPCL_DEFINE_PROJECT_AT(float, , BLOOPCL_LOAD1, BLOOPCL_STORE1)

/* One launch serves up to BLOOPCL_SLOTS ranges (layout.h), all in the same state buffers. */
kernel void bloopcl_project(BLOOPCL_SLOT_PARAMS(global const uchar *, g),
                            BLOOPCL_SLOT_PARAMS(global const uchar *, a),
                            BLOOPCL_SLOT_PARAMS(global uchar *, d),
                            global const float *m_cur, global float *m_next,
                            global const float *q_cur, global float *q_next,
                            global const ulong *table, uint launch, uint num_slots,
                            int method, int ratio_only, int has_ema, int has_aux_ema,
                            int recompute_ema, float lambda, global const int *flags,
                            float inv_scale_g, float inv_scale_a, int scales_on_device,
                            global float *moments, ulong moment2_offset, int opt_kind,
                            int opt_decoupled, int opt_nesterov, float lr, int lr_on_device,
                            float weight_decay, float momentum, float dampening, float beta1,
                            float beta2, float opt_eps, int bias_correction)
{
    bloopcl_step_scalars k = {
        method, ratio_only, has_ema, has_aux_ema, recompute_ema,
        flags[BLOOPCL_FLAG_ACCEPTED], lambda, as_float(flags[BLOOPCL_FLAG_STEP_SCALE]),
        as_float(flags[BLOOPCL_FLAG_STEP_RATIO]), as_float(flags[BLOOPCL_FLAG_STEP_AUX_RATIO]),
        as_float(flags[BLOOPCL_FLAG_STEP_EMA_WEIGHT])};
    bloopcl_optimizer_setup(&k.opt, opt_kind, opt_decoupled, opt_nesterov,
                            lr_on_device ? as_float(flags[BLOOPCL_FLAG_LR]) : lr, weight_decay,
                            momentum, dampening, beta1, beta2, opt_eps, bias_correction,
                            (uint)flags[BLOOPCL_FLAG_OPT_STEPS]);
    global const uchar *g_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(g);
    global const uchar *a_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(a);
    global uchar *d_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(d);
    bloopcl_slot slot = bloopcl_find_slot(table, launch, num_slots);
    bloopcl_inputs in;
    bloopcl_slot_inputs(
        &in, g_slots[slot.index], a_slots[slot.index], &slot,
        bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_G, inv_scale_g, scales_on_device),
        bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_A, inv_scale_a, scales_on_device));
    global uchar *dp = d_slots[slot.index] + (slot.d_off << bloopcl_dtype_shift(slot.d_type));
    global const float *mc = m_cur + slot.s_off, *qc = q_cur + slot.s_off;
    global float *mn = m_next + slot.s_off, *qn = q_next + slot.s_off;
    global float *m1 = moments + slot.s_off, *m2 = moments + moment2_offset + slot.s_off;
    bloopcl_range r = bloopcl_slot_range(&slot);
    size_t i = r.begin;
    for (; i + BLOOPCL_VECTOR <= r.end; i += r.step)
        bloopcl_project_at_v(&in, dp, slot.d_type, mc, mn, qc, qn, m1, m2, i, &k);
    for (; i < r.end; ++i)
        bloopcl_project_at(&in, dp, slot.d_type, mc, mn, qc, qn, m1, m2, i, &k);
}
