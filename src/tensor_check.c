/* tensor_check.c — checks the caller's segment lists before their step is planned:
 *   each segment   dtype; a buffer (not an image) of this cl_context; aligned; inside its
 *                  buffer, with the end computed so that it cannot wrap; d not read-only;
 *                  not the combiner's own output buffer, which the step writes;
 *   the lists      as many segments in g, a and d, with the same counts, adding up to n;
 *   shared memory  d may share memory with g or a only as the very same elements of the same
 *                  segment (pass 2 reads each element of g and a in the work-item that then
 *                  writes that element of d); any other overlap of d with g, a or d itself
 *                  races with other work-items and is refused. g and a are only read: they
 *                  may overlap anyhow.
 * Overlap is judged on the bytes of the allocation underneath, whatever the handles: a
 * sub-buffer is its parent's bytes from CL_MEM_OFFSET on, and buffers over host memory
 * (CL_MEM_USE_HOST_PTR) are that memory's addresses. Sorting the extents by (allocation,
 * start) finds an overlap in O(P log P). Nothing is enqueued here. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const tensor_names[3] = {"g", "a", "d"};

enum { TENSOR_D = 2 };

/* The bytes of one non-empty segment: [start, end) of `memory`, the allocation underneath (a
 * buffer that is no sub-buffer, by its handle; or HOST_MEMORY, where start and end are host
 * addresses). */
#define HOST_MEMORY ((uintptr_t)0)

typedef struct extent {
    uintptr_t memory;
    uint64_t start, end;
    int tensor;       /* 0 g, 1 a, 2 d */
    size_t segment;
} extent;

static const char *image_type_name(cl_mem_object_type type)
{
    switch (type) {
    case CL_MEM_OBJECT_IMAGE1D: return "CL_MEM_OBJECT_IMAGE1D";
    case CL_MEM_OBJECT_IMAGE1D_ARRAY: return "CL_MEM_OBJECT_IMAGE1D_ARRAY";
    case CL_MEM_OBJECT_IMAGE1D_BUFFER: return "CL_MEM_OBJECT_IMAGE1D_BUFFER";
    case CL_MEM_OBJECT_IMAGE2D: return "CL_MEM_OBJECT_IMAGE2D";
    case CL_MEM_OBJECT_IMAGE2D_ARRAY: return "CL_MEM_OBJECT_IMAGE2D_ARRAY";
    case CL_MEM_OBJECT_IMAGE3D: return "CL_MEM_OBJECT_IMAGE3D";
    default: return NULL;
    }
}

/* Images (and pipes, OpenCL 2) hold data in a layout of the driver's choosing, not floats at
 * byte offsets: only CL_MEM_OBJECT_BUFFER (a sub-buffer is one too) can be a gradient. */
static bloopcl_status check_is_buffer(bloopcl_context *ctx, cl_mem buffer, const char *name,
                                      size_t index)
{
    cl_mem_object_type type = 0;
    cl_int err = clGetMemObjectInfo(buffer, CL_MEM_TYPE, sizeof type, &type, NULL);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetMemObjectInfo", "checking a gradient buffer");
    if (type == CL_MEM_OBJECT_BUFFER)
        return BLOOPCL_OK;
    const char *image = image_type_name(type);
    if (image != NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu: the memory "
                             "object is an image (%s), not a buffer", name, index, image);
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu: the memory object "
                         "has type 0x%x, not a buffer (CL_MEM_OBJECT_BUFFER)", name, index,
                         (unsigned)type);
}

/* The allocation under `buffer` and where `buffer` starts in it. OpenCL 1.2 makes no
 * sub-buffer of a sub-buffer, but a chain is followed all the same (a few links). */
static cl_int locate(cl_mem buffer, uintptr_t *memory, uint64_t *origin)
{
    uint64_t offset = 0;
    cl_mem root = buffer;
    for (int link = 0; link < 8; ++link) {
        cl_mem parent = NULL;
        size_t at = 0;
        cl_int err = clGetMemObjectInfo(root, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent,
                                        &parent, NULL);
        if (err == CL_SUCCESS && parent != NULL)
            err = clGetMemObjectInfo(root, CL_MEM_OFFSET, sizeof at, &at, NULL);
        if (err != CL_SUCCESS)
            return err;
        if (parent == NULL)
            break;
        offset += at;
        root = parent;
    }
    cl_mem_flags flags = 0;
    void *host = NULL;
    cl_int err = clGetMemObjectInfo(root, CL_MEM_FLAGS, sizeof flags, &flags, NULL);
    if (err == CL_SUCCESS)
        err = clGetMemObjectInfo(root, CL_MEM_HOST_PTR, sizeof host, &host, NULL);
    if (err != CL_SUCCESS)
        return err;
    bool over_host = (flags & CL_MEM_USE_HOST_PTR) && host != NULL;
    *memory = over_host ? HOST_MEMORY : (uintptr_t)(void *)root;
    *origin = over_host ? (uint64_t)(uintptr_t)host + offset : offset;
    return CL_SUCCESS;
}

/* Size, owner and access of a non-empty segment's buffer; fills its extent. */
static bloopcl_status check_buffer(bloopcl_combiner *comb, const bloopcl_segment *seg,
                                   const char *name, size_t index, bool written, extent *where)
{
    bloopcl_context *ctx = comb->ctx;
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
    /* offset + count elements, computed only where it cannot wrap */
    size_t element = bloopcl_dtype_size(seg->dtype);
    const char *type = bloopcl_dtype_name(seg->dtype);
    if (seg->count > (SIZE_MAX - seg->offset_bytes) / element)
        return bloopcl__fail(ctx, BLOOPCL_ERR_BUFFER_TOO_SMALL, "%s segment %zu: offset %zu + "
                             "%zu %s elements passes the end of the address space (the buffer "
                             "has %zu bytes)", name, index, seg->offset_bytes, seg->count, type,
                             size);
    size_t end = seg->offset_bytes + seg->count * element;
    if (end > size)
        return bloopcl__fail(ctx, BLOOPCL_ERR_BUFFER_TOO_SMALL, "%s segment %zu: offset %zu + "
                             "%zu %s elements needs %zu bytes but the buffer has %zu", name,
                             index, seg->offset_bytes, seg->count, type, end, size);
    if (written && (flags & CL_MEM_READ_ONLY))
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu: the buffer is "
                             "CL_MEM_READ_ONLY but d is written", name, index);
    uint64_t origin = 0;
    err = locate(seg->buffer, &where->memory, &origin);
    if (err != CL_SUCCESS)
        return bloopcl__fail_cl(ctx, err, "clGetMemObjectInfo", "locating a gradient buffer");
    if (where->memory == (uintptr_t)(void *)comb->scalars)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu: the buffer is "
                             "this combiner's output buffer (bloopcl_combiner_outputs), which "
                             "its step writes", name, index);
    where->start = origin + seg->offset_bytes;
    where->end = where->start + (uint64_t)seg->count * element;
    return BLOOPCL_OK;
}

/* One segment; `where` receives its extent when it holds elements. */
static bloopcl_status check_segment(bloopcl_combiner *comb, const bloopcl_segment *seg,
                                    int tensor, size_t index, extent *where)
{
    bloopcl_context *ctx = comb->ctx;
    const char *name = tensor_names[tensor];
    if (bloopcl_dtype_size(seg->dtype) == 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu: dtype %d is "
                             "not a bloopcl_dtype (F32 = 0, F16 = 1, BF16 = 2)", name, index,
                             (int)seg->dtype);
    if (seg->reserved != 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_UNSUPPORTED, "%s segment %zu: reserved = %u (it "
                             "must be 0)", name, index, (unsigned)seg->reserved);
    if (seg->dtype != BLOOPCL_DTYPE_F32 && comb->config.dots == BLOOPCL_DOTS_CLBLAST)
        return bloopcl__fail(ctx, BLOOPCL_ERR_UNSUPPORTED, "%s segment %zu: dtype %s needs the "
                             "FUSED dot backend (the CLBLAST backend's CLBlastSdot reads fp32 "
                             "only)", name, index, bloopcl_dtype_name(seg->dtype));
    if (seg->count == 0)
        return BLOOPCL_OK;
    if (seg->buffer == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_NULL_ARGUMENT, "%s segment %zu: buffer is NULL "
                             "(count %zu)", name, index, seg->count);
    if (seg->offset_bytes % bloopcl_dtype_size(seg->dtype) != 0)
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "%s segment %zu: offset %zu bytes "
                             "is not a multiple of %zu (the size of %s)", name, index,
                             seg->offset_bytes, bloopcl_dtype_size(seg->dtype),
                             bloopcl_dtype_name(seg->dtype));
    bloopcl_status status = check_is_buffer(ctx, seg->buffer, name, index);
    if (status != BLOOPCL_OK)
        return status;
    *where = (extent){.tensor = tensor, .segment = index};
    return check_buffer(comb, seg, name, index, tensor == TENSOR_D, where);
}

/* g, a and d: present, with as many segments. */
static bloopcl_status check_presence(bloopcl_context *ctx, const bloopcl_tensor *const *t)
{
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
    return BLOOPCL_OK;
}

/* Every segment usable, the counts equal across g, a, d and adding up to n. Fills `extents`
 * with three entries (g, a, d) per non-empty segment, in segment order. */
static bloopcl_status check_segments(bloopcl_combiner *comb, const bloopcl_tensor *const *t,
                                     extent *extents, size_t *used)
{
    bloopcl_context *ctx = comb->ctx;
    size_t total = 0;
    bool wrapped = false;
    *used = 0;
    for (size_t s = 0; s < t[0]->num_segments; ++s) {
        size_t count = t[0]->segments[s].count;
        for (int k = 0; k < 3; ++k) {
            if (t[k]->segments[s].count != count)
                return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "segment %zu: %s has %zu "
                                     "elements but g has %zu", s, tensor_names[k],
                                     t[k]->segments[s].count, count);
            bloopcl_status status = check_segment(comb, &t[k]->segments[s], k, s,
                                                  &extents[*used + (size_t)k]);
            if (status != BLOOPCL_OK)
                return status;
        }
        *used += count > 0 ? 3 : 0;
        wrapped = wrapped || count > SIZE_MAX - total;
        total += count;
    }
    if (wrapped)
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "the segments hold more than "
                             "SIZE_MAX elements but the combiner was created for n = %zu",
                             comb->n);
    if (total != comb->n)
        return bloopcl__fail(ctx, BLOOPCL_ERR_SIZE_MISMATCH, "the segments hold %zu elements "
                             "but the combiner was created for n = %zu", total, comb->n);
    return BLOOPCL_OK;
}

/* Drops the g and a extents that are exactly their own segment's d extent (the aliasing that
 * is allowed). Whatever such an extent overlaps, that d extent overlaps as well, so no
 * forbidden overlap is lost with it. Returns the extents kept (compacted in place). */
static size_t drop_exact_aliases(extent *extents, size_t count)
{
    size_t kept = 0;
    for (size_t i = 0; i < count; i += 3) {
        const extent d = extents[i + TENSOR_D];
        for (int k = 0; k < 3; ++k) {
            const extent *e = &extents[i + (size_t)k];
            bool alias = k != TENSOR_D && e->memory == d.memory && e->start == d.start;
            if (!alias)
                extents[kept++] = *e;
        }
    }
    return kept;
}

static int compare_extents(const void *x, const void *y)
{
    const extent *a = x, *b = y;
    if (a->memory != b->memory)
        return a->memory < b->memory ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    if (a->tensor != b->tensor)
        return a->tensor > b->tensor ? -1 : 1;  /* d first: named first in the message */
    return (a->segment > b->segment) - (a->segment < b->segment);
}

static bloopcl_status fail_overlap(bloopcl_context *ctx, const extent *earlier,
                                   const extent *later, bool parameters)
{
    /* earlier->start <= later->start < earlier->end */
    uint64_t end = earlier->end < later->end ? earlier->end : later->end;
    bool later_first = later->tensor == TENSOR_D &&
                       (earlier->tensor != TENSOR_D || later->segment < earlier->segment);
    const extent *x = later_first ? later : earlier, *y = later_first ? earlier : later;
    return bloopcl__fail(ctx, BLOOPCL_ERR_INVALID_ARGUMENT, "%s segment %zu and %s segment %zu "
                         "overlap in memory (%llu bytes in common): %s",
                         parameters && x->tensor == TENSOR_D ? "parameter" : tensor_names[x->tensor],
                         x->segment, tensor_names[y->tensor], y->segment,
                         (unsigned long long)(end - later->start),
                         parameters ? "the parameters (update_parameters) may share no memory "
                                      "with g, a or each other"
                                    : "d may share memory with g or a only as exactly the "
                                      "same elements of the same segment");
}

/* In (memory, start) order, an extent overlaps an earlier one exactly when it starts before
 * the furthest end seen so far in that memory. A d extent may overlap nothing; a g or a
 * extent may overlap only other g and a extents: so each is checked against the furthest end
 * of all extents, or of the d extents, before it. */
static bloopcl_status check_overlaps(bloopcl_context *ctx, extent *extents, size_t count,
                                     bool parameters)
{
    if (!parameters)  /* parameters updated in place may not alias the gradients at all */
        count = drop_exact_aliases(extents, count);
    qsort(extents, count, sizeof *extents, compare_extents);
    const extent *widest = NULL, *widest_d = NULL;
    for (size_t i = 0; i < count; ++i) {
        const extent *e = &extents[i];
        if (i > 0 && e->memory != extents[i - 1].memory)
            widest = widest_d = NULL;
        const extent *reach = e->tensor == TENSOR_D ? widest : widest_d;
        if (reach != NULL && reach->end > e->start)
            return fail_overlap(ctx, reach, e, parameters);
        if (widest == NULL || e->end > widest->end)
            widest = e;
        if (e->tensor == TENSOR_D && (widest_d == NULL || e->end > widest_d->end))
            widest_d = e;
    }
    return BLOOPCL_OK;
}

bloopcl_status bloopcl__check_tensors(bloopcl_combiner *comb, const bloopcl_tensor *const t[3])
{
    bloopcl_status status = check_presence(comb->ctx, t);
    if (status != BLOOPCL_OK)
        return status;
    size_t segments = t[0]->num_segments;
    extent *extents = segments <= SIZE_MAX / (3 * sizeof(extent))
                          ? malloc(3 * segments * sizeof(extent)) : NULL;
    if (extents == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "checking %zu segments",
                             segments);
    size_t used = 0;
    status = check_segments(comb, t, extents, &used);
    if (status == BLOOPCL_OK)
        status = check_overlaps(comb->ctx, extents, used, comb->options.update_parameters != 0);
    free(extents);
    return status;
}
