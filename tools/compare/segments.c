/* segments.c — see segments.h. Plain OpenCL buffer calls on the context's own
 * cl_context and queue; the library sees only the segment lists. */
#include "segments.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A NaN with a payload no arithmetic produces: an element that still holds it after a step
 * was never written, and one of g or a that is read shows up as a NaN in the results. For the
 * 2-byte types a signalling NaN (quiet bit clear), which the library's narrowing (it sets the
 * quiet bit) cannot write. */
#define SENTINEL_F32 0x7FC0DEADu
#define SENTINEL_F16 0x7D5Au
#define SENTINEL_BF16 0x7F9Au

/* The element at `index` of a typed array, as unsigned bits. */
static uint32_t bits_at(const unsigned char *array, size_t elem, size_t index)
{
    uint32_t bits32 = 0;
    uint16_t bits16 = 0;
    if (elem == 4) {
        memcpy(&bits32, array + index * 4, 4);
        return bits32;
    }
    memcpy(&bits16, array + index * 2, 2);
    return bits16;
}

static void set_bits_at(unsigned char *array, size_t elem, size_t index, uint32_t bits)
{
    uint16_t bits16 = (uint16_t)bits;
    if (elem == 4)
        memcpy(array + index * 4, &bits, 4);
    else
        memcpy(array + index * 2, &bits16, 2);
}

static uint32_t sentinel_bits(bloopcl_dtype dtype)
{
    return dtype == BLOOPCL_DTYPE_F16 ? SENTINEL_F16
           : dtype == BLOOPCL_DTYPE_BF16 ? SENTINEL_BF16 : SENTINEL_F32;
}

static const char *const LAYOUT_NAMES[] = {"separate", "packed", "gapped"};

const char *segment_layout_name(segment_layout layout)
{
    return (unsigned)layout < 3 ? LAYOUT_NAMES[layout] : NULL;
}

bool segment_layout_parse(const char *text, segment_layout *layout)
{
    for (unsigned k = 0; k < 3; ++k)
        if (strcmp(text, LAYOUT_NAMES[k]) == 0) {
            *layout = (segment_layout)k;
            return true;
        }
    return false;
}

enum { ROLE_BULK, ROLE_ONE, ROLE_EMPTY };

static int segment_role(size_t i, size_t num_segments)
{
    if (num_segments == 1 || i % 2 == 0)
        return ROLE_BULK;
    return i % 4 == 1 ? ROLE_ONE : ROLE_EMPTY;
}

static size_t bulk_weight(size_t i)
{
    return (size_t)1 << ((i / 2) % 6);
}

void segment_counts(size_t n, size_t num_segments, size_t *counts)
{
    size_t left = n, weights = 0, last_bulk = 0;
    for (size_t i = 0; i < num_segments; ++i) {
        int role = segment_role(i, num_segments);
        counts[i] = (role == ROLE_ONE && left > 0) ? 1 : 0;
        left -= counts[i];
        if (role == ROLE_BULK) {
            weights += bulk_weight(i);
            last_bulk = i;   /* segment 0 is always bulk */
        }
    }
    size_t shared = left;
    for (size_t i = 0; i < num_segments; ++i)
        if (segment_role(i, num_segments) == ROLE_BULK && i != last_bulk) {
            counts[i] = shared * bulk_weight(i) / weights;   /* shared < 2^26: no overflow */
            left -= counts[i];
        }
    counts[last_bulk] = left;
}

/* Where each segment lies: which buffer, at which element, and how large the buffers are. */
static void place_segments(const size_t *counts, size_t num_segments, segment_layout layout,
                           size_t *buffer_of, size_t *element_of, size_t *buffer_floats)
{
    size_t end = 0;
    for (size_t s = 0; s < num_segments; ++s) {
        if (layout == LAYOUT_SEPARATE) {
            buffer_of[s] = s;
            element_of[s] = 0;
            buffer_floats[s] = counts[s] > 0 ? counts[s] : 1;   /* no zero-sized cl_mem */
            continue;
        }
        end += layout == LAYOUT_GAPPED;   /* the guard element */
        buffer_of[s] = 0;
        element_of[s] = end;
        end += counts[s];
    }
    if (layout != LAYOUT_SEPARATE)
        buffer_floats[0] = end + 1;   /* a guard after the last segment too */
}

static bool tensor_alloc(segmented_tensor *t, size_t num_segments, size_t num_buffers)
{
    t->num_segments = num_segments;
    t->num_buffers = num_buffers;
    t->segments = calloc(num_segments, sizeof *t->segments);
    t->segment_start = calloc(num_segments, sizeof *t->segment_start);
    t->buffers = calloc(num_buffers, sizeof *t->buffers);
    t->base = calloc(num_buffers + 1, sizeof *t->base);
    t->element_of = calloc(num_segments, sizeof *t->element_of);
    t->dtype = BLOOPCL_DTYPE_F32;
    t->elem = sizeof(float);
    return t->segments && t->segment_start && t->buffers && t->base && t->element_of;
}

static void tensor_free(segmented_tensor *t)
{
    for (size_t k = 0; t->buffers != NULL && k < t->num_buffers; ++k)
        if (t->buffers[k] != NULL)
            clReleaseMemObject(t->buffers[k]);
    free(t->segments);
    free(t->segment_start);
    free(t->buffers);
    free(t->base);
    free(t->element_of);
    free(t->image);
    memset(t, 0, sizeof *t);
}

static bool tensor_create(segmented_tensor *t, cl_context cl_ctx, const size_t *counts,
                          size_t num_segments, segment_layout layout, char *why, size_t why_size)
{
    size_t num_buffers = layout == LAYOUT_SEPARATE ? num_segments : 1;
    size_t *buffer_of = calloc(num_segments, sizeof *buffer_of);
    size_t *floats = calloc(num_buffers, sizeof *floats);
    bool ok = buffer_of && floats && tensor_alloc(t, num_segments, num_buffers);
    if (ok)
        place_segments(counts, num_segments, layout, buffer_of, t->element_of, floats);
    for (size_t k = 0; ok && k < num_buffers; ++k) {
        cl_int err = CL_SUCCESS;
        t->base[k + 1] = t->base[k] + floats[k];
        t->buffers[k] = clCreateBuffer(cl_ctx, CL_MEM_READ_WRITE, floats[k] * sizeof(float),
                                       NULL, &err);
        if (err != CL_SUCCESS) {
            snprintf(why, why_size, "clCreateBuffer of %zu floats failed: %d", floats[k], err);
            ok = false;
        }
    }
    for (size_t s = 0; ok && s < num_segments; ++s) {
        t->segments[s] = (bloopcl_segment){t->buffers[buffer_of[s]],
                                           t->element_of[s] * sizeof(float), counts[s],
                                           BLOOPCL_DTYPE_F32, 0};
        t->segment_start[s] = t->base[buffer_of[s]] + t->element_of[s];
    }
    ok = ok && (t->image = malloc(t->base[num_buffers] * sizeof(float))) != NULL;
    free(buffer_of);
    free(floats);
    return ok;
}

bool segmented_create(bloopcl_context *ctx, size_t n, size_t num_segments,
                      segment_layout layout, segmented_io *io, char *why, size_t why_size)
{
    memset(io, 0, sizeof *io);
    io->ctx = ctx;
    io->n = n;
    io->layout = layout;
    snprintf(why, why_size, "out of host memory");
    size_t *counts = calloc(num_segments, sizeof *counts);
    cl_context cl_ctx = bloopcl_context_cl_context(ctx);
    bool ok = counts != NULL;
    if (ok)
        segment_counts(n, num_segments, counts);
    ok = ok && tensor_create(&io->g, cl_ctx, counts, num_segments, layout, why, why_size) &&
         tensor_create(&io->a, cl_ctx, counts, num_segments, layout, why, why_size) &&
         tensor_create(&io->d, cl_ctx, counts, num_segments, layout, why, why_size) &&
         (io->scratch = malloc(io->g.base[io->g.num_buffers] * sizeof(float))) != NULL &&
         (io->flat = malloc((n > 0 ? n : 1) * sizeof(float))) != NULL;
    free(counts);
    if (!ok)
        segmented_destroy(io);
    return ok;
}

void segmented_destroy(segmented_io *io)
{
    tensor_free(&io->g);
    tensor_free(&io->a);
    tensor_free(&io->d);
    free(io->scratch);
    free(io->flat);
    io->scratch = NULL;
    io->flat = NULL;
}

static void tensor_set_dtype(segmented_tensor *t, bloopcl_dtype dtype)
{
    t->dtype = dtype;
    t->elem = bloopcl_dtype_size(dtype);
    for (size_t s = 0; s < t->num_segments; ++s) {
        t->segments[s].dtype = dtype;
        t->segments[s].offset_bytes = t->element_of[s] * t->elem;
    }
}

void segmented_set_dtypes(segmented_io *io, bloopcl_dtype g, bloopcl_dtype a, bloopcl_dtype d)
{
    tensor_set_dtype(&io->g, g);
    tensor_set_dtype(&io->a, a);
    tensor_set_dtype(&io->d, d);
}

/* The image of a tensor: the sentinel everywhere, the flat vector x (NULL: none; in the
 * tensor's type) in the segments. */
static void make_image(segmented_tensor *t, const void *x)
{
    uint32_t fill = sentinel_bits(t->dtype);
    for (size_t i = 0; i < t->base[t->num_buffers]; ++i)
        set_bits_at(t->image, t->elem, i, fill);
    size_t flat = 0;
    for (size_t s = 0; x != NULL && s < t->num_segments; ++s) {
        memcpy(t->image + t->segment_start[s] * t->elem,
               (const unsigned char *)x + flat * t->elem, t->segments[s].count * t->elem);
        flat += t->segments[s].count;
    }
}

static bool transfer(segmented_io *io, segmented_tensor *t, unsigned char *host, bool write,
                     char *why, size_t why_size)
{
    cl_command_queue queue = bloopcl_context_queue(io->ctx);
    for (size_t k = 0; k < t->num_buffers; ++k) {
        size_t bytes = (t->base[k + 1] - t->base[k]) * t->elem;
        unsigned char *at = host + t->base[k] * t->elem;
        cl_int err = write ? clEnqueueWriteBuffer(queue, t->buffers[k], CL_TRUE, 0, bytes, at, 0,
                                                  NULL, NULL)
                           : clEnqueueReadBuffer(queue, t->buffers[k], CL_TRUE, 0, bytes, at, 0,
                                                 NULL, NULL);
        if (err != CL_SUCCESS) {
            snprintf(why, why_size, "%s of buffer %zu failed: %d",
                     write ? "clEnqueueWriteBuffer" : "clEnqueueReadBuffer", k, err);
            return false;
        }
    }
    return true;
}

bool segmented_upload(segmented_io *io, const void *g, const void *a, char *why,
                      size_t why_size)
{
    make_image(&io->g, g);
    make_image(&io->a, a);
    make_image(&io->d, NULL);
    return transfer(io, &io->g, io->g.image, true, why, why_size) &&
           transfer(io, &io->a, io->a.image, true, why, why_size) &&
           transfer(io, &io->d, io->d.image, true, why, why_size);
}

/* The first element of [from, to) whose bits differ from the image, or `to`. */
static size_t first_change(const segmented_tensor *t, const unsigned char *read, size_t from,
                           size_t to)
{
    for (size_t i = from; i < to; ++i)
        if (bits_at(read, t->elem, i) != bits_at(t->image, t->elem, i))
            return i;
    return to;
}

/* g or a read back must equal its image bit for bit (only_outside false); d must still hold
 * the sentinel outside its segments (only_outside true: the segments lie in increasing order
 * in the image, so the gaps between them are walked in one pass). Reports the first
 * difference. */
static bool image_intact(const segmented_tensor *t, const unsigned char *read, bool only_outside,
                         const char *name, char *why, size_t why_size)
{
    size_t end = t->base[t->num_buffers], from = 0, bad = end;
    for (size_t s = 0; only_outside && s < t->num_segments && bad == end; ++s) {
        size_t to = t->segment_start[s];
        bad = first_change(t, read, from, to);
        bad = bad == to ? end : bad;
        from = to + t->segments[s].count;
    }
    if (bad == end)
        bad = first_change(t, read, from, end);
    if (bad == end)
        return true;
    snprintf(why, why_size, "%s changed where the step may not write: element %zu of its "
             "buffers holds 0x%08" PRIx32 ", expected 0x%08" PRIx32, name, bad,
             bits_at(read, t->elem, bad), bits_at(t->image, t->elem, bad));
    return false;
}

static void gather(const segmented_tensor *t, const unsigned char *read, unsigned char *x)
{
    size_t flat = 0;
    for (size_t s = 0; s < t->num_segments; ++s) {
        memcpy(x + flat * t->elem, read + t->segment_start[s] * t->elem,
               t->segments[s].count * t->elem);
        flat += t->segments[s].count;
    }
}

bool segmented_download(segmented_io *io, float *d, bool *violated, char *why,
                        size_t why_size)
{
    why[0] = '\0';
    *violated = false;
    if (!transfer(io, &io->d, io->scratch, false, why, why_size))
        return false;
    gather(&io->d, io->scratch, io->flat);
    bloopcl_convert(io->flat, io->d.dtype, d, BLOOPCL_DTYPE_F32, io->n);
    *violated = !image_intact(&io->d, io->scratch, true, "d", why, why_size);
    if (!transfer(io, &io->g, io->scratch, false, why, why_size))
        return false;
    *violated = *violated || !image_intact(&io->g, io->scratch, false, "g", why, why_size);
    if (!transfer(io, &io->a, io->scratch, false, why, why_size))
        return false;
    *violated = *violated || !image_intact(&io->a, io->scratch, false, "a", why, why_size);
    return true;
}
