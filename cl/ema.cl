/* ema.cl - pass 1 of the CLBlast backend: write the updated EMA(s) into the "next" buffers, so
 * that CLBlast can take their dot products, and flag non-finite inputs. The state is
 * double-buffered: m_cur is never written, so a rejected step can be undone by the projection
 * kernel. */

/* One element (T = float) or one vector (T = floatv) at index i; adds the non-finite probe
 * of g and a (as scaled) to *probe (when checked). */
#define BLOOPCL_DEFINE_EMA_AT(T, SFX, LOAD, STORE)                                             \
    void bloopcl_ema_at##SFX(const bloopcl_inputs *in,                                        \
                            global const float *m_cur, global float *m_next,                  \
                            global const float *q_cur, global float *q_next, size_t i,        \
                            float w, int has_ema, int has_aux_ema, int check,                 \
                            T *probe)                                                          \
    {                                                                                          \
        T gi = bloopcl_load##SFX(in->g, i, in->g_type, in->g_scale);                           \
        T ai = (has_aux_ema || check) ? bloopcl_load##SFX(in->a, i, in->a_type, in->a_scale)   \
                                      : (T)(0.0f);                                             \
        if (check)                                                                             \
            *probe += bloopcl_probe##SFX(gi, ai);                                              \
        if (has_ema)                                                                           \
            STORE(bloopcl_ema##SFX(LOAD(m_cur, i), gi, w), m_next, i);                         \
        if (has_aux_ema)                                                                       \
            STORE(bloopcl_ema##SFX(LOAD(q_cur, i), ai, w), q_next, i);                         \
    }
BLOOPCL_DEFINE_EMA_AT(floatv, _v, BLOOPCL_LOADV, BLOOPCL_STOREV)
BLOOPCL_DEFINE_EMA_AT(float, , BLOOPCL_LOAD1, BLOOPCL_STORE1)

/* One launch serves up to BLOOPCL_SLOTS ranges (layout.h), all in the same state buffers. */
kernel void bloopcl_ema_update(BLOOPCL_SLOT_PARAMS(global const uchar *, g),
                               BLOOPCL_SLOT_PARAMS(global const uchar *, a),
                               global const float *m_cur, global float *m_next,
                               global const float *q_cur, global float *q_next,
                               global const ulong *table, uint launch, uint num_slots, float w,
                               int has_ema, int has_aux_ema, int check_finite,
                               global int *flags, float inv_scale_g, float inv_scale_a,
                               int scales_on_device)
{
    /* Before a first-gradient initialisation the EMA takes g whole (w = 1). */
    float w_step = flags[BLOOPCL_FLAG_INITIALIZED] ? w : 1.0f;
    global const uchar *g_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(g);
    global const uchar *a_slots[BLOOPCL_SLOTS] = BLOOPCL_SLOT_TABLE(a);
    bloopcl_slot slot = bloopcl_find_slot(table, launch, num_slots);
    bloopcl_inputs in;
    bloopcl_slot_inputs(
        &in, g_slots[slot.index], a_slots[slot.index], &slot,
        bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_G, inv_scale_g, scales_on_device),
        bloopcl_inv_scale(flags, BLOOPCL_FLAG_INV_SCALE_A, inv_scale_a, scales_on_device));
    global const float *mc = m_cur + slot.s_off, *qc = q_cur + slot.s_off;
    global float *mn = m_next + slot.s_off, *qn = q_next + slot.s_off;
    floatv probe_v = (floatv)(0.0f);
    float probe = 0.0f;
    bloopcl_range r = bloopcl_slot_range(&slot);
    size_t i = r.begin;
    for (; i + BLOOPCL_VECTOR <= r.end; i += r.step)
        bloopcl_ema_at_v(&in, mc, mn, qc, qn, i, w_step, has_ema, has_aux_ema, check_finite,
                         &probe_v);
    for (; i < r.end; ++i)
        bloopcl_ema_at(&in, mc, mn, qc, qn, i, w_step, has_ema, has_aux_ema, check_finite,
                       &probe);
    if (isnan(BLOOPCL_LANE_SUM(probe_v) + probe))
        flags[BLOOPCL_FLAG_NONFINITE] = 1;  /* every writer stores the same value: no race */
}
