/* segments.h — bloopcl-compare's multi-segment mode (--segments P --layout L): each of
 * g, a and d is cut into P segments of mixed sizes held in device buffers, so that the device
 * step runs over segment lists while the CPU reference takes the flat vectors. */
#ifndef BLOOPCL_COMPARE_SEGMENTS_H
#define BLOOPCL_COMPARE_SEGMENTS_H

#include "bloopcl.h"

#include <stdbool.h>
#include <stddef.h>

#define SEGMENTS_MAX 4096   /* P per tensor; the separate layout makes 3 P buffers */

typedef enum segment_layout {
    LAYOUT_SEPARATE,   /* every segment in its own cl_mem, at offset 0 */
    LAYOUT_PACKED,     /* all segments of a tensor end to end in one cl_mem (mergeable) */
    LAYOUT_GAPPED      /* one cl_mem per tensor, one guard element before every segment */
} segment_layout;

/* "separate", "packed", "gapped"; NULL for another value. */
const char *segment_layout_name(segment_layout layout);
bool segment_layout_parse(const char *text, segment_layout *layout);

/* The element counts of P segments that add up to n, a fixed function of (n, P). Segment i
 * cycles through four roles: bulk, one element, bulk, empty; the bulk segments share what the
 * one-element segments leave with weights 2^((i/2) mod 6), so sizes spread over a factor 32.
 * P = 1 is the single-buffer case. */
void segment_counts(size_t n, size_t num_segments, size_t *counts);

/* One tensor's segments and the buffers behind them. `image` is what the buffers must hold,
 * laid end to end, in elements of the tensor's type: buffer k is elements base[k] ..
 * base[k+1] of it. Outside the segments it holds the sentinel. The buffers and the image have
 * room for 4-byte elements, so one set serves every dtype (segmented_set_dtypes). */
typedef struct segmented_tensor {
    bloopcl_segment *segments;
    size_t num_segments;
    size_t *segment_start;  /* where segment s begins in image */
    cl_mem *buffers;        /* P buffers (separate) or one */
    size_t num_buffers;
    size_t *base;           /* num_buffers + 1 prefix offsets into image (elements) */
    size_t *element_of;     /* where segment s begins in its buffer (elements) */
    bloopcl_dtype dtype;    /* of every segment */
    size_t elem;            /* its size in bytes */
    unsigned char *image;
} segmented_tensor;

typedef struct segmented_io {
    bloopcl_context *ctx;
    size_t n;
    segment_layout layout;
    segmented_tensor g, a, d;
    unsigned char *scratch; /* an image's worth of 4-byte elements, for read-backs */
    unsigned char *flat;    /* n 4-byte elements: d gathered in its own type */
} segmented_io;

/* Creates the buffers for vectors of n elements in P segments. On failure writes why. */
bool segmented_create(bloopcl_context *ctx, size_t n, size_t num_segments,
                      segment_layout layout, segmented_io *io, char *why, size_t why_size);
void segmented_destroy(segmented_io *io);

/* Gives the segments of g, a and d these element types (offsets in bytes follow). All f32
 * after segmented_create. */
void segmented_set_dtypes(segmented_io *io, bloopcl_dtype g, bloopcl_dtype a, bloopcl_dtype d);

/* Writes g and a (flat arrays of n elements in their tensors' types) into their segments and
 * fills every element of d's buffers (inside the segments and out) with a sentinel NaN of d's
 * type, so an element the step fails to write, or one it writes outside its segments, shows.
 * Blocking. */
bool segmented_upload(segmented_io *io, const void *g, const void *a, char *why,
                      size_t why_size);

/* Reads d out of its segments (blocking), widened to float into d, and checks that nothing outside the segments of d
 * changed and that g and a are exactly as uploaded. Returns false if a read failed; writes
 * into `why` the first violation found (empty if none) and sets *violated. */
bool segmented_download(segmented_io *io, float *d, bool *violated, char *why,
                        size_t why_size);

#endif
