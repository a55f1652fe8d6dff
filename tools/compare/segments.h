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
 * laid end to end: buffer k is image[base[k] .. base[k+1]). Outside the segments it holds the
 * sentinel. */
typedef struct segmented_tensor {
    bloopcl_segment *segments;
    size_t num_segments;
    size_t *segment_start;  /* where segment s begins in image */
    cl_mem *buffers;        /* P buffers (separate) or one */
    size_t num_buffers;
    size_t *base;           /* num_buffers + 1 prefix offsets into image */
    float *image;
} segmented_tensor;

typedef struct segmented_io {
    bloopcl_context *ctx;
    size_t n;
    segment_layout layout;
    segmented_tensor g, a, d;
    float *scratch;         /* an image's worth of floats, for read-backs */
} segmented_io;

/* Creates the buffers for vectors of n elements in P segments. On failure writes why. */
bool segmented_create(bloopcl_context *ctx, size_t n, size_t num_segments,
                      segment_layout layout, segmented_io *io, char *why, size_t why_size);
void segmented_destroy(segmented_io *io);

/* Writes g and a into their segments and fills every element of d's buffers (inside the
 * segments and out) with a sentinel NaN, so an element the step fails to write, or one it
 * writes outside its segments, shows. Blocking. */
bool segmented_upload(segmented_io *io, const float *g, const float *a, char *why,
                      size_t why_size);

/* Reads d out of its segments (blocking) and checks that nothing outside the segments of d
 * changed and that g and a are exactly as uploaded. Returns false if a read failed; writes
 * into `why` the first violation found (empty if none) and sets *violated. */
bool segmented_download(segmented_io *io, float *d, bool *violated, char *why,
                        size_t why_size);

#endif
