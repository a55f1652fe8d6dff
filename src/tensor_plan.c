/* tensor_plan.c — checks the caller's segment lists and cuts them into pieces: runs of
 * elements that lie in one segment of g, a and d and in one chunk of the state. Kernels and
 * CLBlast calls are issued per piece. Nothing is enqueued here, so a rejected request changes
 * nothing. */
#include "internal.h"

#include <stdlib.h>

static const char *const tensor_names[3] = {"g", "a", "d"};

static bloopcl_status check_segment(bloopcl_combiner *comb, const bloopcl_segment *seg,
                                    const char *name, size_t index, bool written)
{
    bloopcl_context *ctx = comb->ctx;
    if (seg->dtype != BLOOPCL_DTYPE_F32 || seg->reserved != 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_UNSUPPORTED, "%s segment %zu: only dtype F32 with "
                             "reserved = 0 is supported", name, index);
    if (seg->count == 0)
        return BLOOPCL_OK;
    if (seg->buffer == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT, "%s segment %zu: buffer is NULL "
                             "(count %zu)", name, index, seg->count);
    if (seg->offset_bytes % sizeof(float) != 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "%s segment %zu: offset %zu bytes "
                             "is not a multiple of 4", name, index, seg->offset_bytes);
    size_t size = 0;
    cl_context owner = NULL;
    cl_mem_flags flags = 0;
    cl_int err = clGetMemObjectInfo(seg->buffer, CL_MEM_SIZE, sizeof size, &size, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(seg->buffer, CL_MEM_CONTEXT, sizeof owner, &owner, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(seg->buffer, CL_MEM_FLAGS, sizeof flags, &flags, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetMemObjectInfo", "checking a gradient buffer");
    if (owner != ctx->cl_ctx)
        return bloopcl__fail(ctx, BLOOPCL_ERR_WRONG_CONTEXT, "%s segment %zu: the buffer "
                             "belongs to another cl_context", name, index);
    if (seg->count > (SIZE_MAX - seg->offset_bytes) / sizeof(float) ||
        seg->offset_bytes + seg->count * sizeof(float) > size)
        return bloopcl__fail(ctx, BLOOPCL_ERR_BUFFER_TOO_SMALL, "%s segment %zu: offset %zu + "
                             "%zu floats needs %zu bytes but the buffer has %zu", name, index,
                             seg->offset_bytes, seg->count,
                             seg->offset_bytes + seg->count * sizeof(float), size);
    if (written && (flags & CL_MEM_READ_ONLY))
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu: the buffer is "
                             "CL_MEM_READ_ONLY but d is written", name, index);
    return BLOOPCL_OK;
}

/* g, a and d: present, same segment counts, adding up to n, each segment usable. */
static bloopcl_status check_tensors(bloopcl_combiner *comb, const bloopcl_tensor *const *t)
{
    bloopcl_context *ctx = comb->ctx;
    for (int k = 0; k < 3; ++k) {
        if (t[k] == NULL || (t[k]->segments == NULL && t[k]->num_segments > 0))
            return bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT, "%s: %s is NULL",
                                 tensor_names[k], t[k] == NULL ? "the tensor" : "the segment list");
        if (t[k]->num_segments == 0)
            return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "%s: num_segments = 0",
                                 tensor_names[k]);
        if (t[k]->num_segments != t[0]->num_segments)
            return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "%s has %zu segments but g has "
                                 "%zu", tensor_names[k], t[k]->num_segments, t[0]->num_segments);
    }
    size_t total = 0;
    for (size_t s = 0; s < t[0]->num_segments; ++s) {
        for (int k = 0; k < 3; ++k) {
            if (t[k]->segments[s].count != t[0]->segments[s].count)
                return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "segment %zu: %s has %zu "
                                     "elements but g has %zu", s, tensor_names[k],
                                     t[k]->segments[s].count, t[0]->segments[s].count);
            bloopcl_status status = check_segment(comb, &t[k]->segments[s], tensor_names[k], s,
                                                  k == 2);
            if (status != BLOOPCL_OK)
                return status;
        }
        total += t[0]->segments[s].count;
    }
    if (total != comb->n)
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "the segments hold %zu elements "
                             "but the combiner was created for n = %zu", total, comb->n);
    return BLOOPCL_OK;
}

static bloopcl_status push_piece(bloopcl_combiner *comb, size_t *count, bloopcl_piece piece)
{
    if (*count == comb->piece_capacity) {
        size_t capacity = comb->piece_capacity ? 2 * comb->piece_capacity : 16;
        bloopcl_piece *grown = realloc(comb->pieces, capacity * sizeof *grown);
        if (grown == NULL)
            return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "planning the step");
        comb->pieces = grown;
        comb->piece_capacity = capacity;
    }
    comb->pieces[(*count)++] = piece;
    return BLOOPCL_OK;
}

/* Cuts segment s (starting at global element `base`) at state-chunk and size boundaries. */
static bloopcl_status cut_segment(bloopcl_combiner *comb, const bloopcl_tensor *const *t, size_t s,
                                  size_t base, size_t *count)
{
    const bloopcl_segment *g = &t[0]->segments[s], *a = &t[1]->segments[s], *d = &t[2]->segments[s];
    size_t done = 0;
    while (done < g->count) {
        size_t global = base + done;
        size_t chunk = global / comb->chunk_capacity;
        size_t within = global % comb->chunk_capacity;
        size_t room = comb->chunk_capacity - within;
        size_t now = g->count - done;
        if (now > room)
            now = room;
        if (now > BLOOPCL_MAX_PIECE)
            now = BLOOPCL_MAX_PIECE;
        bloopcl_piece piece = {
            .g = g->buffer, .a = a->buffer, .d = d->buffer,
            .g_offset = g->offset_bytes / sizeof(float) + done,
            .a_offset = a->offset_bytes / sizeof(float) + done,
            .d_offset = d->offset_bytes / sizeof(float) + done,
            .state_chunk = chunk, .state_offset = within, .count = now,
        };
        bloopcl_status status = push_piece(comb, count, piece);
        if (status != BLOOPCL_OK)
            return status;
        done += now;
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__plan_pieces(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                    const bloopcl_tensor *a, const bloopcl_tensor *d,
                                    size_t *num_pieces)
{
    const bloopcl_tensor *const tensors[3] = {g, a, d};
    bloopcl_status status = check_tensors(comb, tensors);
    if (status != BLOOPCL_OK)
        return status;
    size_t count = 0, base = 0;
    for (size_t s = 0; s < g->num_segments && status == BLOOPCL_OK; ++s) {
        status = cut_segment(comb, tensors, s, base, &count);
        base += g->segments[s].count;
    }
    *num_pieces = count;
    return status;
}
