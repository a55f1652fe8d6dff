/* test_segments.c — steps over segment lists, against the CPU reference and against a combiner
 * of the same configuration stepping over one buffer that holds the same data.
 *
 * Gradients of P = 1, 2, 17 and 300 segments of mixed sizes (1-element and empty segments,
 * sizes that are not multiples of 16, a few large ones) are laid out five ways: each segment in
 * its own buffer; end to end in one buffer per tensor; in one buffer per tensor with gaps; at
 * nonzero offsets in three shared buffers, in an order shuffled differently for g, a and d; and
 * with d aliasing g. Every element outside the segments holds a NaN sentinel: g and a there must
 * not be read (a NaN would reject the step or poison the dots) and d there must not be written.
 *
 * The dots are global sums, so d, r and the dots must agree with the reference within the dot
 * tolerance whatever the layout; the EMA is elementwise, so the state must agree bit for bit
 * (with the reference, hence also with the one-buffer combiner, which is checked the same way).
 * Further tests: a changed segment list after a cached one, an invalid list after a cached one,
 * the output buffer against the diagnostics (also for a skipped step), and two properties of the
 * new step core (end-to-end segments are one range; launches do not grow with P). */
#include "support.h"

#include <criterion/criterion.h>
#include <criterion/parameterized.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 3
#define SHARED_BUFFERS 3      /* layout SHUFFLED spreads each tensor over this many buffers */
#define TRAILING_SLACK 3      /* sentinel elements after the last segment of a shared buffer */
#define NO_BUFFER ((size_t)-1)
#define MAX_SEGMENTS 300

/* --------------------------------------------------------------------------------------------
 * Segment sizes
 * ------------------------------------------------------------------------------------------ */
static const size_t counts_1[] = {100003};
static const size_t counts_2[] = {1, 262147};
static const size_t counts_17[] = {1,     0,   15,  16,  17, 33, 0,      1000, 4097,
                                   1, 65537, 255, 257,   0, 31, 131071, 7};

/* P = 300, model-like: three large weight matrices, mid-sized ones (17..3016 elements), biases
 * and scalars of 1-3 elements, and empty segments: n = 1,367,000 or so. */
static size_t count_300(size_t s)
{
    if (s == 7)
        return 524309;
    if (s == 150)
        return 300007;
    if (s == 299)
        return 196613;
    if (s % 10 == 3)
        return 0;
    if (s % 10 == 5 || s % 10 == 8)
        return 1 + s % 3;
    return (s * 97) % 3000 + 17;
}

typedef struct segment_sizes {
    size_t p, n;
    size_t count[MAX_SEGMENTS];
    size_t start[MAX_SEGMENTS];  /* first global element of each segment */
} segment_sizes;

static void sizes_for(size_t p, segment_sizes *sz)
{
    const size_t *table = p == 1 ? counts_1 : p == 2 ? counts_2 : p == 17 ? counts_17 : NULL;
    cr_assert(table != NULL || p == 300, "no size list for P = %zu", p);
    sz->p = p;
    sz->n = 0;
    for (size_t s = 0; s < p; ++s) {
        sz->count[s] = table != NULL ? table[s] : count_300(s);
        sz->start[s] = sz->n;
        sz->n += sz->count[s];
    }
}

/* --------------------------------------------------------------------------------------------
 * Layouts: where each segment of one tensor lies, and the device buffers
 * ------------------------------------------------------------------------------------------ */
typedef enum layout {
    OWN_BUFFERS, END_TO_END, WITH_GAPS, SHUFFLED, D_ALIASES_G, NUM_LAYOUTS,
    /* exact aliasing in other forms, beyond the main matrix: d's list is a's list, or d's
     * segments are sub-buffers over the very elements of g's segments (other handles) */
    D_ALIASES_A = NUM_LAYOUTS, D_IN_SUB_BUFFERS_OF_G, NUM_ALL_LAYOUTS
} layout;

static const char *const layout_names[NUM_ALL_LAYOUTS] = {
    "own buffers", "end to end", "gaps", "shuffled", "d aliases g", "d aliases a",
    "d in sub-buffers of g"};

typedef struct placement {
    size_t num_buffers;
    size_t length[MAX_SEGMENTS];     /* elements per buffer */
    cl_mem buffer[MAX_SEGMENTS];
    float *image[MAX_SEGMENTS];      /* what the host last wrote to each buffer */
    size_t buffer_of[MAX_SEGMENTS];  /* per segment; NO_BUFFER: empty, NULL cl_mem */
    size_t offset[MAX_SEGMENTS];     /* per segment, elements */
    bloopcl_segment *segments;       /* the list handed to bloopcl_step */
} placement;

/* A NaN with a payload no arithmetic produces: compared bit for bit. */
static float sentinel(void)
{
    const uint32_t bits = 0x7fc0beefu;
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static void place_own_buffers(placement *pl, const segment_sizes *sz)
{
    pl->num_buffers = sz->p;
    for (size_t s = 0; s < sz->p; ++s) {
        pl->length[s] = sz->count[s];
        pl->buffer_of[s] = sz->count[s] > 0 ? s : NO_BUFFER;
        pl->offset[s] = 0;
    }
}

/* One buffer; `gap(s)` sentinel elements before segment s, TRAILING_SLACK after the last
 * (END_TO_END: no gaps and no slack, so the buffer is exactly the one-buffer case). */
static void place_in_one_buffer(placement *pl, const segment_sizes *sz, bool gaps, int tensor)
{
    size_t head = 0;
    pl->num_buffers = 1;
    for (size_t s = 0; s < sz->p; ++s) {
        head += gaps ? 1 + (s + (size_t)tensor) % 4 : 0;
        pl->buffer_of[s] = 0;
        pl->offset[s] = head;
        head += sz->count[s];
    }
    pl->length[0] = head + (gaps ? TRAILING_SLACK : 0);
}

/* A permutation of 0..p-1 that differs per tensor (Fisher-Yates on a fixed LCG). */
static void shuffle(size_t *order, size_t p, int tensor)
{
    uint64_t state = 0x9e3779b97f4a7c15u * (uint64_t)(tensor + 1);
    for (size_t s = 0; s < p; ++s)
        order[s] = s;
    for (size_t s = p; s > 1; --s) {
        state = state * 6364136223846793005u + 1442695040888963407u;
        size_t j = (size_t)(state >> 33) % s;
        size_t t = order[s - 1];
        order[s - 1] = order[j];
        order[j] = t;
    }
}

/* Segments dealt in shuffled order to SHARED_BUFFERS buffers, each buffer starting at a
 * nonzero offset with two sentinel elements between segments. */
static void place_shuffled(placement *pl, const segment_sizes *sz, int tensor)
{
    size_t order[MAX_SEGMENTS], head[SHARED_BUFFERS];
    shuffle(order, sz->p, tensor);
    pl->num_buffers = SHARED_BUFFERS;
    for (size_t b = 0; b < SHARED_BUFFERS; ++b)
        head[b] = 3 + b;
    for (size_t rank = 0; rank < sz->p; ++rank) {
        size_t s = order[rank], b = rank % SHARED_BUFFERS;
        pl->buffer_of[s] = b;
        pl->offset[s] = head[b];
        head[b] += sz->count[s] + 2;
    }
    for (size_t b = 0; b < SHARED_BUFFERS; ++b)
        pl->length[b] = head[b] + TRAILING_SLACK;
}

static void place(placement *pl, layout lay, const segment_sizes *sz, int tensor)
{
    if (lay == OWN_BUFFERS)
        place_own_buffers(pl, sz);
    else if (lay == END_TO_END || lay == WITH_GAPS)
        place_in_one_buffer(pl, sz, lay == WITH_GAPS, tensor);
    else
        place_shuffled(pl, sz, tensor);
}

/* The segment list from the placement, rewritten in place (the same array each time). */
static void describe_segments(placement *pl, const segment_sizes *sz)
{
    for (size_t s = 0; s < sz->p; ++s) {
        size_t b = pl->buffer_of[s];
        pl->segments[s] = (bloopcl_segment){
            .buffer = b == NO_BUFFER ? NULL : pl->buffer[b],
            .offset_bytes = b == NO_BUFFER ? 0 : pl->offset[s] * sizeof(float),
            .count = sz->count[s],
            .dtype = BLOOPCL_DTYPE_F32,
        };
    }
}

static void placement_create(placement *pl, bloopcl_context *ctx, layout lay,
                             const segment_sizes *sz, int tensor)
{
    memset(pl, 0, sizeof *pl);
    place(pl, lay, sz, tensor);
    for (size_t b = 0; b < pl->num_buffers; ++b) {
        if (pl->length[b] == 0)
            continue;
        pl->image[b] = support_alloc(pl->length[b]);
        pl->buffer[b] = support_buffer(ctx, NULL, pl->length[b]);
    }
    pl->segments = calloc(sz->p, sizeof *pl->segments);
    cr_assert_not_null(pl->segments);
    describe_segments(pl, sz);
}

static void placement_destroy(placement *pl)
{
    for (size_t b = 0; b < pl->num_buffers; ++b) {
        if (pl->buffer[b] != NULL)
            clReleaseMemObject(pl->buffer[b]);
        free(pl->image[b]);
    }
    free(pl->segments);
}

/* Writes x (n floats, global order; NULL: nothing) into the segments, sentinels elsewhere. */
static void upload(placement *pl, bloopcl_context *ctx, const segment_sizes *sz, const float *x)
{
    const float nan_sentinel = sentinel();
    for (size_t b = 0; b < pl->num_buffers; ++b)
        for (size_t i = 0; i < pl->length[b]; ++i)
            pl->image[b][i] = nan_sentinel;
    for (size_t s = 0; x != NULL && s < sz->p; ++s)
        if (sz->count[s] > 0)
            memcpy(pl->image[pl->buffer_of[s]] + pl->offset[s], x + sz->start[s],
                   sz->count[s] * sizeof(float));
    for (size_t b = 0; b < pl->num_buffers; ++b)
        if (pl->length[b] > 0)
            cr_assert_eq(clEnqueueWriteBuffer(bloopcl_context_queue(ctx), pl->buffer[b], CL_TRUE,
                                              0, pl->length[b] * sizeof(float), pl->image[b], 0,
                                              NULL, NULL), CL_SUCCESS);
}

/* Reads every buffer into `scratch`; copies the segments into x (global order) and expects
 * every other element to still hold what the host wrote. */
static void gather(const placement *pl, bloopcl_context *ctx, const segment_sizes *sz, float *x,
                   const char *label)
{
    for (size_t b = 0; b < pl->num_buffers; ++b) {
        if (pl->length[b] == 0)
            continue;
        float *now = support_alloc(pl->length[b]);
        unsigned char *inside = calloc(pl->length[b], 1);
        cr_assert_not_null(inside);
        support_read(ctx, pl->buffer[b], now, pl->length[b]);
        for (size_t s = 0; s < sz->p; ++s) {
            if (pl->buffer_of[s] != b || sz->count[s] == 0)
                continue;
            memcpy(x + sz->start[s], now + pl->offset[s], sz->count[s] * sizeof(float));
            memset(inside + pl->offset[s], 1, sz->count[s]);
        }
        size_t touched = 0;
        for (size_t i = 0; i < pl->length[b]; ++i)
            touched += !inside[i] && memcmp(&now[i], &pl->image[b][i], sizeof(float)) != 0;
        cr_expect_eq(touched, 0, "%s: %zu elements of buffer %zu outside the segments changed",
                     label, touched, b);
        free(now);
        free(inside);
    }
}

/* Expects every buffer to hold exactly what the host last wrote (inputs are never written). */
static void expect_unchanged(const placement *pl, bloopcl_context *ctx, const char *what,
                             const char *label)
{
    for (size_t b = 0; b < pl->num_buffers; ++b) {
        if (pl->length[b] == 0)
            continue;
        float *now = support_alloc(pl->length[b]);
        support_read(ctx, pl->buffer[b], now, pl->length[b]);
        cr_expect(memcmp(now, pl->image[b], pl->length[b] * sizeof(float)) == 0,
                  "%s: %s buffer %zu was modified", label, what, b);
        free(now);
    }
}

/* g, a and d of one layout. When d aliases g or a (d_alias 0 or 1; -1: it does not), d has no
 * placement of its own: its list is that tensor's list, or (D_IN_SUB_BUFFERS_OF_G) a list of
 * sub-buffers over the same elements of g's buffers. */
typedef struct segmented {
    segment_sizes sizes;
    placement tensor[3];
    int d_alias;
    bloopcl_tensor view[3];
    bloopcl_segment *sub_list;    /* D_IN_SUB_BUFFERS_OF_G: d's list */
    cl_mem sub[MAX_SEGMENTS];     /* its sub-buffers (NULL for empty segments) */
} segmented;

/* d's segment s: a sub-buffer of g's buffer starting at the aligned origin at or below g's
 * offset, so that d's elements are g's, through another handle. */
static void describe_sub_buffers(segmented *sg, bloopcl_context *ctx)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cl_uint bits = 0;
    cr_assert_eq(clGetDeviceInfo(info.device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof bits, &bits,
                                 NULL), CL_SUCCESS);
    size_t align = bits / 8 > 0 ? bits / 8 : 1;
    sg->sub_list = calloc(sg->sizes.p, sizeof *sg->sub_list);
    cr_assert_not_null(sg->sub_list);
    for (size_t s = 0; s < sg->sizes.p; ++s) {
        bloopcl_segment g = sg->tensor[0].segments[s];
        sg->sub_list[s] = g;
        if (g.count == 0)
            continue;
        size_t origin = g.offset_bytes / align * align;
        cl_buffer_region region = {origin, g.offset_bytes - origin + g.count * sizeof(float)};
        cl_int err;
        sg->sub[s] = clCreateSubBuffer(g.buffer, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION,
                                       &region, &err);
        cr_assert_eq(err, CL_SUCCESS, "clCreateSubBuffer: %d", (int)err);
        sg->sub_list[s].buffer = sg->sub[s];
        sg->sub_list[s].offset_bytes = g.offset_bytes - origin;
    }
    sg->view[2] = (bloopcl_tensor){sg->sub_list, sg->sizes.p};
}

static void segmented_create(segmented *sg, bloopcl_context *ctx, size_t p, layout lay)
{
    sizes_for(p, &sg->sizes);
    sg->d_alias = lay == D_ALIASES_G || lay == D_IN_SUB_BUFFERS_OF_G ? 0
                  : lay == D_ALIASES_A                               ? 1
                                                                     : -1;
    sg->sub_list = NULL;
    memset(sg->sub, 0, sizeof sg->sub);
    for (int k = 0; k < 3; ++k) {
        if (k == 2 && sg->d_alias >= 0)
            continue;
        placement_create(&sg->tensor[k], ctx, sg->d_alias >= 0 ? SHUFFLED : lay, &sg->sizes,
                         k);
        sg->view[k] = (bloopcl_tensor){sg->tensor[k].segments, p};
    }
    if (lay == D_IN_SUB_BUFFERS_OF_G)
        describe_sub_buffers(sg, ctx);
    else if (sg->d_alias >= 0)
        sg->view[2] = sg->view[sg->d_alias];
}

static void segmented_destroy(segmented *sg)
{
    for (size_t s = 0; s < sg->sizes.p; ++s)
        if (sg->sub[s] != NULL)
            clReleaseMemObject(sg->sub[s]);
    free(sg->sub_list);
    for (int k = 0; k < (sg->d_alias >= 0 ? 2 : 3); ++k)
        placement_destroy(&sg->tensor[k]);
}

static placement *d_placement(segmented *sg)
{
    return &sg->tensor[sg->d_alias >= 0 ? sg->d_alias : 2];
}

/* Moves every segment of g, a and d `shift` elements further into the same buffers (within
 * the slack of the shared layouts), rewriting the lists in place. */
static void segmented_shift(segmented *sg, size_t shift)
{
    cr_assert_null(sg->sub_list, "sub-buffer views are not shifted");
    for (int k = 0; k < (sg->d_alias >= 0 ? 2 : 3); ++k) {
        placement *pl = &sg->tensor[k];
        for (size_t s = 0; s < sg->sizes.p; ++s)
            pl->offset[s] += shift;
        describe_segments(pl, &sg->sizes);
    }
}

/* --------------------------------------------------------------------------------------------
 * Methods
 * ------------------------------------------------------------------------------------------ */
typedef struct method_case {
    bloopcl_method method;
    double ema_weight;
    double lambda;
    int rescale;
    int ratio_only;
    bloopcl_init init;
    bloopcl_dot_backend dots;
} method_case;

#define BOTH(method, w, lambda, rescale, ratio_only, init) \
    {method, w, lambda, rescale, ratio_only, init, BLOOPCL_DOTS_FUSED}, \
    {method, w, lambda, rescale, ratio_only, init, BLOOPCL_DOTS_CLBLAST}

/* The apple/ml-bloop defaults; ratio-only with rescale and a first-gradient init; a dynamic
 * barrier that clips (w = 1, lambda = 3: r > 1/3 happens for aligned a); PCGrad with both
 * EMAs initialised from the first gradients; and Mixed. */
static const method_case method_cases[] = {
    BOTH(BLOOPCL_METHOD_BLOOP, 0.1, 0.1, 0, 0, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_BLOOP, 0.3, 2.0, 1, 1, BLOOPCL_INIT_FIRST_GRADIENT),
    BOTH(BLOOPCL_METHOD_DYNAMIC_BARRIER, 1.0, 3.0, 0, 0, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_PCGRAD, 0.05, 0.3, 1, 0, BLOOPCL_INIT_FIRST_GRADIENT),
    BOTH(BLOOPCL_METHOD_MIXED, 1.0, 0.25, 1, 0, BLOOPCL_INIT_ZEROS),
};
#define NUM_METHOD_CASES (sizeof method_cases / sizeof method_cases[0])

static const size_t segment_counts[] = {1, 2, 17, 300};
#define NUM_SEGMENT_COUNTS (sizeof segment_counts / sizeof segment_counts[0])

static bloopcl_config config_of(const method_case *c)
{
    bloopcl_config config;
    bloopcl_config_default(&config, c->method);
    config.ema_weight = c->ema_weight;
    config.lambda = c->lambda;
    config.rescale = c->rescale;
    config.ratio_only = c->ratio_only;
    config.init = c->init;
    config.seed = 7;
    config.dots = c->dots;
    return config;
}

static void describe_method(const method_case *c, char *out, size_t size)
{
    snprintf(out, size, "%s%s w %g lambda %g%s%s, %s", bloopcl_method_name(c->method),
             c->ratio_only ? " ratio-only" : "", c->ema_weight, c->lambda,
             c->rescale ? " rescale" : "",
             c->init == BLOOPCL_INIT_FIRST_GRADIENT ? " first-gradient" : "",
             c->dots == BLOOPCL_DOTS_FUSED ? "fused" : "clblast");
}

/* --------------------------------------------------------------------------------------------
 * Fixture: a combiner over segments, one over a single buffer, and the reference
 * ------------------------------------------------------------------------------------------ */
typedef struct fixture {
    bloopcl_context *ctx;
    bloopcl_config config;
    size_t n;
    uint64_t seed;
    bloopcl_combiner *multi, *single;
    bloopcl_reference_state ref;
    cl_mem one[3];                /* the single-buffer combiner's g, a, d */
    float *g, *a, *noise, *d_multi, *d_single, *d_ref;
    char label[176];              /* the case */
    char multi_label[200], single_label[200];
} fixture;

static void fixture_create(fixture *f, const method_case *c, size_t n, const char *where)
{
    memset(f, 0, sizeof *f);
    char method[112];
    describe_method(c, method, sizeof method);
    snprintf(f->label, sizeof f->label, "%s, %s", method, where);
    snprintf(f->multi_label, sizeof f->multi_label, "[%s; segments] ", f->label);
    snprintf(f->single_label, sizeof f->single_label, "[%s; one buffer] ", f->label);
    support_set_label(f->multi_label);
    f->ctx = support_context();
    f->config = config_of(c);
    f->n = n;
    f->seed = 1000 + n;
    f->multi = support_combiner(f->ctx, &f->config, n);
    f->single = support_combiner(f->ctx, &f->config, n);
    cr_assert_eq(bloopcl_reference_init(&f->config, n, &f->ref), BLOOPCL_OK);
    for (int k = 0; k < 3; ++k)
        f->one[k] = support_buffer(f->ctx, NULL, n);
    f->g = support_alloc(n), f->a = support_alloc(n), f->noise = support_alloc(n);
    f->d_multi = support_alloc(n), f->d_single = support_alloc(n), f->d_ref = support_alloc(n);
}

static void fixture_destroy(fixture *f)
{
    support_set_label(NULL);
    for (int k = 0; k < 3; ++k)
        clReleaseMemObject(f->one[k]);
    free(f->g), free(f->a), free(f->noise);
    free(f->d_multi), free(f->d_single), free(f->d_ref);
    bloopcl_reference_free(&f->ref);
    bloopcl_combiner_destroy(f->multi);
    bloopcl_combiner_destroy(f->single);
    bloopcl_context_destroy(f->ctx);
}

/* Inputs of step t; `poison` (an element index, or NO_BUFFER) gets a NaN in g. */
static void fixture_inputs(fixture *f, int t, size_t poison)
{
    support_make_inputs(f->g, f->a, f->noise, f->n, f->seed, t);
    if (poison != NO_BUFFER)
        f->g[poison] = NAN;
}

static void upload_inputs(fixture *f, segmented *sg)
{
    upload(&sg->tensor[0], f->ctx, &sg->sizes, f->g);
    upload(&sg->tensor[1], f->ctx, &sg->sizes, f->a);
    if (sg->d_alias < 0)
        upload(&sg->tensor[2], f->ctx, &sg->sizes, NULL);  /* sentinels everywhere */
}

static void step_multi(fixture *f, segmented *sg, int t)
{
    bloopcl_status status = bloopcl_step(f->multi, &sg->view[0], &sg->view[1], &sg->view[2], 0,
                                         NULL, NULL);
    cr_assert_eq(status, BLOOPCL_OK, "%sstep %d: %s", f->multi_label, t,
                 bloopcl_context_last_error(f->ctx));
    gather(d_placement(sg), f->ctx, &sg->sizes, f->d_multi, f->multi_label);
}

static void step_single(fixture *f, int t)
{
    cl_command_queue queue = bloopcl_context_queue(f->ctx);
    size_t bytes = f->n * sizeof(float);
    cr_assert_eq(clEnqueueWriteBuffer(queue, f->one[0], CL_TRUE, 0, bytes, f->g, 0, NULL, NULL),
                 CL_SUCCESS);
    cr_assert_eq(clEnqueueWriteBuffer(queue, f->one[1], CL_TRUE, 0, bytes, f->a, 0, NULL, NULL),
                 CL_SUCCESS);
    bloopcl_status status = bloopcl_step_buffers(f->single, f->one[0], f->one[1], f->one[2]);
    cr_assert_eq(status, BLOOPCL_OK, "%sstep %d: %s", f->single_label, t,
                 bloopcl_context_last_error(f->ctx));
    support_read(f->ctx, f->one[2], f->d_single, f->n);
}

static void expect_state_is_reference(fixture *f, bloopcl_combiner *comb)
{
    if (f->ref.ema != NULL && f->ref.initialized)
        support_expect_state(comb, BLOOPCL_STATE_EMA, f->ref.ema, f->n);
    if (f->ref.aux_ema != NULL && f->ref.initialized)
        support_expect_state(comb, BLOOPCL_STATE_AUX_EMA, f->ref.aux_ema, f->n);
}

/* One combiner's step t against the reference step already taken (diagnostics `reference`). */
static void expect_matches_reference(fixture *f, bloopcl_combiner *comb, const float *d_device,
                                     const bloopcl_diagnostics *reference, const char *label,
                                     int t)
{
    support_set_label(label);
    bloopcl_diagnostics device = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(comb, &device), BLOOPCL_OK);
    if (reference->accepted) {
        support_expect_step_matches(&f->config, f->n, f->g, f->a, d_device, f->d_ref, &device,
                                    reference, f->ref.ema, f->ref.aux_ema, t);
        support_expect_dot(device.grad_norm_sq, reference->grad_norm_sq,
                           reference->grad_norm_sq, "<g,g>", t);
    } else {
        /* skipped: d is exactly 0 and nothing else is promised but the unchanged state */
        cr_expect_eq(device.accepted, 0, "%sstep %d: a NaN in g was accepted", label, t);
        cr_expect(memcmp(d_device, f->d_ref, f->n * sizeof(float)) == 0,
                  "%sstep %d: a skipped step's d is not all zeros", label, t);
    }
    expect_state_is_reference(f, comb);
}

/* Step t on the segment lists of `sg`, on the one-buffer combiner when `with_single`, and on
 * the reference; every result checked. */
static void fixture_step(fixture *f, segmented *sg, int t, bool with_single, size_t poison)
{
    fixture_inputs(f, t, poison);
    upload_inputs(f, sg);
    step_multi(f, sg, t);
    if (with_single)
        step_single(f, t);
    bloopcl_diagnostics reference = BLOOPCL_DIAGNOSTICS_INIT;
    bloopcl_status expected = poison == NO_BUFFER ? BLOOPCL_OK : BLOOPCL_ERR_NONFINITE_INPUT;
    cr_assert_eq(bloopcl_reference_step(&f->config, &f->ref, f->g, f->a, f->d_ref, &reference),
                 expected);
    expect_matches_reference(f, f->multi, f->d_multi, &reference, f->multi_label, t);
    if (with_single)
        expect_matches_reference(f, f->single, f->d_single, &reference, f->single_label, t);
}

static void expect_inputs_unchanged(fixture *f, segmented *sg)
{
    if (sg->d_alias != 0)
        expect_unchanged(&sg->tensor[0], f->ctx, "g", f->label);
    if (sg->d_alias != 1)
        expect_unchanged(&sg->tensor[1], f->ctx, "a", f->label);
}

/* --------------------------------------------------------------------------------------------
 * Every method, backend, segment count and layout, over STEPS steps
 * ------------------------------------------------------------------------------------------ */
typedef struct layout_case {
    method_case method;
    size_t p;
    layout layout;
} layout_case;

ParameterizedTestParameters(segments, against_reference_and_one_buffer)
{
    static layout_case cases[NUM_METHOD_CASES * NUM_SEGMENT_COUNTS * NUM_LAYOUTS];
    size_t k = 0;
    for (size_t m = 0; m < NUM_METHOD_CASES; ++m)
        for (size_t p = 0; p < NUM_SEGMENT_COUNTS; ++p)
            for (int lay = 0; lay < NUM_LAYOUTS; ++lay)
                cases[k++] = (layout_case){method_cases[m], segment_counts[p], (layout)lay};
    return cr_make_param_array(layout_case, cases, k);
}

ParameterizedTest(layout_case *c, segments, against_reference_and_one_buffer, .timeout = 120)
{
    char where[64];
    snprintf(where, sizeof where, "P = %zu, %s", c->p, layout_names[c->layout]);
    segment_sizes sz;
    sizes_for(c->p, &sz);
    fixture f;
    fixture_create(&f, &c->method, sz.n, where);
    segmented sg;
    segmented_create(&sg, f.ctx, c->p, c->layout);
    for (int t = 0; t < STEPS; ++t)
        fixture_step(&f, &sg, t, true, NO_BUFFER);
    expect_inputs_unchanged(&f, &sg);
    segmented_destroy(&sg);
    fixture_destroy(&f);
}

/* --------------------------------------------------------------------------------------------
 * Exact aliasing stays allowed (issue 15, item 4 refuses every other sharing): d's segments
 * are a's, or sub-buffers over g's very elements, over 300 shuffled segments, every method
 * and backend, against the reference and the one-buffer combiner
 * ------------------------------------------------------------------------------------------ */
ParameterizedTestParameters(segments, exact_aliasing_matches_reference)
{
    static layout_case cases[NUM_METHOD_CASES * 2];
    size_t k = 0;
    for (size_t m = 0; m < NUM_METHOD_CASES; ++m) {
        cases[k++] = (layout_case){method_cases[m], 300, D_ALIASES_A};
        cases[k++] = (layout_case){method_cases[m], 300, D_IN_SUB_BUFFERS_OF_G};
    }
    return cr_make_param_array(layout_case, cases, k);
}

ParameterizedTest(layout_case *c, segments, exact_aliasing_matches_reference, .timeout = 120)
{
    char where[64];
    snprintf(where, sizeof where, "P = %zu, %s", c->p, layout_names[c->layout]);
    segment_sizes sz;
    sizes_for(c->p, &sz);
    fixture f;
    fixture_create(&f, &c->method, sz.n, where);
    segmented sg;
    segmented_create(&sg, f.ctx, c->p, c->layout);
    for (int t = 0; t < STEPS; ++t)
        fixture_step(&f, &sg, t, true, NO_BUFFER);
    expect_inputs_unchanged(&f, &sg);
    segmented_destroy(&sg);
    fixture_destroy(&f);
}

/* --------------------------------------------------------------------------------------------
 * The plan of the last list is cached: a changed list must be planned (and checked) again
 * ------------------------------------------------------------------------------------------ */
typedef struct cache_case {
    method_case method;
} cache_case;

/* Bloop (one state) and PCGrad (two), on both backends. */
static const method_case cache_methods[] = {
    BOTH(BLOOPCL_METHOD_BLOOP, 0.1, 0.1, 0, 0, BLOOPCL_INIT_ZEROS),
    BOTH(BLOOPCL_METHOD_PCGRAD, 0.05, 0.3, 1, 0, BLOOPCL_INIT_FIRST_GRADIENT),
};
#define NUM_CACHE_METHODS (sizeof cache_methods / sizeof cache_methods[0])

ParameterizedTestParameters(segments, changed_list_after_cached_list)
{
    static cache_case cases[NUM_CACHE_METHODS];
    for (size_t m = 0; m < NUM_CACHE_METHODS; ++m)
        cases[m] = (cache_case){cache_methods[m]};
    return cr_make_param_array(cache_case, cases, NUM_CACHE_METHODS);
}

/* The same list twice; the same arrays and buffers with every offset moved (a cache keyed on
 * the list's address or on its buffers would reuse stale offsets); other buffers; then the
 * first buffers again (not the last list any more). Every step against the reference. */
ParameterizedTest(cache_case *c, segments, changed_list_after_cached_list, .timeout = 60)
{
    segment_sizes sz;
    sizes_for(17, &sz);
    fixture f;
    fixture_create(&f, &c->method, sz.n, "P = 17, shuffled, changing lists");
    segmented first, other;
    segmented_create(&first, f.ctx, 17, SHUFFLED);
    segmented_create(&other, f.ctx, 17, WITH_GAPS);
    fixture_step(&f, &first, 0, true, NO_BUFFER);
    fixture_step(&f, &first, 1, true, NO_BUFFER);
    segmented_shift(&first, 1);
    fixture_step(&f, &first, 2, true, NO_BUFFER);
    fixture_step(&f, &other, 3, true, NO_BUFFER);
    fixture_step(&f, &first, 4, true, NO_BUFFER);
    expect_inputs_unchanged(&f, &first);
    segmented_destroy(&first);
    segmented_destroy(&other);
    fixture_destroy(&f);
}

/* --------------------------------------------------------------------------------------------
 * An invalid list after a cached good one is refused, and nothing changes
 * ------------------------------------------------------------------------------------------ */
typedef enum bad_segment {
    A_IN_SMALLER_BUFFER,   /* a's segment in another buffer, one float too small */
    D_PAST_END_OF_BUFFER   /* d's segment moved in its own buffer until it ends past it */
} bad_segment;

typedef struct invalid_case {
    method_case method;
    bad_segment bad;
} invalid_case;

#define BAD_SEGMENT 10

ParameterizedTestParameters(segments, invalid_list_after_cached_list)
{
    static invalid_case cases[NUM_CACHE_METHODS * 2];
    size_t k = 0;
    for (size_t m = 0; m < NUM_CACHE_METHODS; ++m) {
        cases[k++] = (invalid_case){cache_methods[m], A_IN_SMALLER_BUFFER};
        cases[k++] = (invalid_case){cache_methods[m], D_PAST_END_OF_BUFFER};
    }
    return cr_make_param_array(invalid_case, cases, k);
}

/* Makes segment BAD_SEGMENT of a or d invalid, in place; returns the small buffer it made. */
static cl_mem break_segment(segmented *sg, bloopcl_context *ctx, bad_segment bad)
{
    size_t count = sg->sizes.count[BAD_SEGMENT];
    if (bad == A_IN_SMALLER_BUFFER) {
        cl_mem small = support_buffer(ctx, NULL, count - 1);
        sg->tensor[1].segments[BAD_SEGMENT].buffer = small;
        sg->tensor[1].segments[BAD_SEGMENT].offset_bytes = 0;
        return small;
    }
    placement *d = &sg->tensor[2];
    size_t length = d->length[d->buffer_of[BAD_SEGMENT]];
    d->segments[BAD_SEGMENT].offset_bytes = (length - count + 1) * sizeof(float);
    return NULL;
}

ParameterizedTest(invalid_case *c, segments, invalid_list_after_cached_list, .timeout = 60)
{
    segment_sizes sz;
    sizes_for(17, &sz);
    cr_assert_gt(sz.count[BAD_SEGMENT], 1);
    fixture f;
    fixture_create(&f, &c->method, sz.n, c->bad == A_IN_SMALLER_BUFFER
                   ? "P = 17, shuffled, a segment in too small a buffer"
                   : "P = 17, shuffled, d segment past the end of its buffer");
    segmented sg;
    segmented_create(&sg, f.ctx, 17, SHUFFLED);
    fixture_step(&f, &sg, 0, false, NO_BUFFER);
    fixture_step(&f, &sg, 1, false, NO_BUFFER);

    fixture_inputs(&f, 2, NO_BUFFER);
    upload_inputs(&f, &sg);
    cl_mem small = break_segment(&sg, f.ctx, c->bad);
    bloopcl_status status = bloopcl_step(f.multi, &sg.view[0], &sg.view[1], &sg.view[2], 0,
                                         NULL, NULL);
    const char *message = bloopcl_context_last_error(f.ctx);
    cr_expect_eq(status, BLOOPCL_ERR_BUFFER_TOO_SMALL, "%s: status %s (%s)", f.label,
                 bloopcl_status_string(status), message);
    cr_expect(strstr(message, "segment 10") != NULL, "%s: the message names the segment: %s",
              f.label, message);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(f.multi, &diag), BLOOPCL_OK);
    cr_expect_eq(diag.steps, 2, "%s: the refused step was counted", f.label);
    expect_state_is_reference(&f, f.multi);
    expect_unchanged(&sg.tensor[2], f.ctx, "d of a refused step", f.label);

    describe_segments(&sg.tensor[1], &sg.sizes);  /* repaired: the good list again */
    describe_segments(&sg.tensor[2], &sg.sizes);
    fixture_step(&f, &sg, 2, false, NO_BUFFER);
    if (small != NULL)
        clReleaseMemObject(small);
    segmented_destroy(&sg);
    fixture_destroy(&f);
}

/* --------------------------------------------------------------------------------------------
 * The output buffer holds what the diagnostics report, also for a skipped step
 * ------------------------------------------------------------------------------------------ */
ParameterizedTestParameters(segments, outputs_match_diagnostics)
{
    static method_case cases[NUM_METHOD_CASES];
    memcpy(cases, method_cases, sizeof cases);
    return cr_make_param_array(method_case, cases, NUM_METHOD_CASES);
}

/* Equal as floats (the diagnostics are the output buffer's floats widened), NaN equal NaN. */
static void expect_output(const float *out, bloopcl_output index, double reported,
                          const char *name, const char *label, int t)
{
    float value = out[index];
    bool same = value == (float)reported || (isnan(value) && isnan(reported));
    cr_expect(same, "%s step %d: output %s = %.9g but the diagnostics say %.9g", label, t, name,
              value, reported);
}

static void expect_outputs(fixture *f, int t, bool accepted, float w_used)
{
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(f->multi, &diag), BLOOPCL_OK);
    cl_mem outputs = NULL;
    cr_assert_eq(bloopcl_combiner_outputs(f->multi, &outputs), BLOOPCL_OK);
    cr_assert_not_null(outputs);
    float out[BLOOPCL_NUM_OUTPUTS];
    cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(f->ctx), outputs, CL_TRUE, 0,
                                     sizeof out, out, 0, NULL, NULL), CL_SUCCESS);
    cr_expect_eq(out[BLOOPCL_OUTPUT_ACCEPTED], accepted ? 1.0f : 0.0f, "%s step %d: accepted "
                 "%g", f->label, t, out[BLOOPCL_OUTPUT_ACCEPTED]);
    cr_expect_eq(diag.accepted, accepted, "%s step %d: diagnostics accepted", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_RATIO, diag.ratio, "ratio", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_RATIO_RAW, diag.ratio_raw, "ratio_raw", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_AUX_RATIO, diag.aux_ratio, "aux_ratio", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_DOT_EMA_AUX, diag.dot_ema_aux, "<m,a>", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_EMA_NORM_SQ, diag.ema_norm_sq, "<m,m>", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_AUX_NORM_SQ, diag.aux_norm_sq, "<a,a>", f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_DOT_AUX_EMA_MAIN, diag.dot_aux_ema_main, "<q,g>",
                  f->label, t);
    expect_output(out, BLOOPCL_OUTPUT_AUX_EMA_NORM_SQ, diag.aux_ema_norm_sq, "<q,q>", f->label,
                  t);
    expect_output(out, BLOOPCL_OUTPUT_GRAD_NORM_SQ, diag.grad_norm_sq, "<g,g>", f->label, t);
    /* s and w in closed form: s = 1/(1+lambda) divided in double and rounded once, exactly */
    float s = f->config.rescale ? (float)(1.0 / (1.0 + f->config.lambda)) : 1.0f;
    cr_expect_eq(out[BLOOPCL_OUTPUT_SCALE], s, "%s step %d: scale %a, expected %a", f->label, t,
                 out[BLOOPCL_OUTPUT_SCALE], s);
    cr_expect_eq(out[BLOOPCL_OUTPUT_EMA_WEIGHT], w_used, "%s step %d: ema weight %.9g, expected "
                 "%.9g", f->label, t, out[BLOOPCL_OUTPUT_EMA_WEIGHT], w_used);
}

/* Accepted, skipped (a NaN in g, policy SKIP), accepted again. The EMA weight a step uses is
 * 1 until a first-gradient init has seen its first accepted step. */
ParameterizedTest(method_case *c, segments, outputs_match_diagnostics, .timeout = 60)
{
    segment_sizes sz;
    sizes_for(17, &sz);
    fixture f;
    fixture_create(&f, c, sz.n, "P = 17, gaps, outputs");
    cr_assert_eq(f.config.nonfinite, BLOOPCL_NONFINITE_SKIP, "the default policy is SKIP");
    segmented sg;
    segmented_create(&sg, f.ctx, 17, WITH_GAPS);
    float w = (float)f.config.ema_weight;
    float w_first = f.config.init == BLOOPCL_INIT_FIRST_GRADIENT ? 1.0f : w;
    fixture_step(&f, &sg, 0, false, NO_BUFFER);
    expect_outputs(&f, 0, true, w_first);
    fixture_step(&f, &sg, 1, false, sz.start[BAD_SEGMENT] + 5);
    expect_outputs(&f, 1, false, w);
    fixture_step(&f, &sg, 2, false, NO_BUFFER);
    expect_outputs(&f, 2, true, w);
    segmented_destroy(&sg);
    fixture_destroy(&f);
}

/* --------------------------------------------------------------------------------------------
 * Properties of the new step core (issue 8): segments that lie end to end in one buffer are
 * merged into one range, and the kernels a fused step enqueues do not grow with P
 * ------------------------------------------------------------------------------------------ */
ParameterizedTestParameters(segments, new_core_end_to_end_is_one_buffer)
{
    static method_case cases[NUM_METHOD_CASES];
    memcpy(cases, method_cases, sizeof cases);
    return cr_make_param_array(method_case, cases, NUM_METHOD_CASES);
}

/* The diagnostics are floats widened to double: equal as floats, bit for bit. */
static void expect_same_bits(double multi, double single, const char *name, const char *label,
                             int t)
{
    float x = (float)multi, y = (float)single;
    cr_expect(memcmp(&x, &y, sizeof x) == 0, "%s step %d: %s %.9g, one buffer %.9g", label, t,
              name, x, y);
}

/* 300 segments end to end from offset 0 are one range over the whole buffer: the same plan as
 * one buffer, hence the same d, scalars and kernel count, bit for bit. */
ParameterizedTest(method_case *c, segments, new_core_end_to_end_is_one_buffer, .timeout = 60)
{
    segment_sizes sz;
    sizes_for(300, &sz);
    fixture f;
    fixture_create(&f, c, sz.n, "P = 300, end to end, bitwise as one buffer");
    segmented sg;
    segmented_create(&sg, f.ctx, 300, END_TO_END);
    for (int t = 0; t < 2; ++t) {
        fixture_step(&f, &sg, t, true, NO_BUFFER);
        cr_expect(memcmp(f.d_multi, f.d_single, f.n * sizeof(float)) == 0,
                  "%s step %d: d differs from the one-buffer step", f.label, t);
        bloopcl_diagnostics dm = BLOOPCL_DIAGNOSTICS_INIT, ds = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(f.multi, &dm), BLOOPCL_OK);
        cr_assert_eq(bloopcl_get_diagnostics(f.single, &ds), BLOOPCL_OK);
        expect_same_bits(dm.ratio, ds.ratio, "r", f.label, t);
        expect_same_bits(dm.dot_ema_aux, ds.dot_ema_aux, "<m,a>", f.label, t);
        expect_same_bits(dm.ema_norm_sq, ds.ema_norm_sq, "<m,m>", f.label, t);
        expect_same_bits(dm.aux_ratio, ds.aux_ratio, "r_q", f.label, t);
        expect_same_bits(dm.grad_norm_sq, ds.grad_norm_sq, "<g,g>", f.label, t);
        cr_expect_eq(dm.kernels, ds.kernels, "%s step %d: %u kernels, one buffer %u", f.label, t,
                     dm.kernels, ds.kernels);
    }
    segmented_destroy(&sg);
    fixture_destroy(&f);
}

ParameterizedTestParameters(segments, new_core_fused_launches_per_step)
{
    static method_case cases[NUM_METHOD_CASES / 2];
    size_t k = 0;
    for (size_t m = 0; m < NUM_METHOD_CASES; ++m)
        if (method_cases[m].dots == BLOOPCL_DOTS_FUSED)
            cases[k++] = method_cases[m];
    return cr_make_param_array(method_case, cases, k);
}

/* The header's count for the fused backend: 2 ceil(P/16) + 1 kernels for P segments (each in
 * its own buffer here, so nothing merges); and at least pass 1, finalize and pass 2. */
ParameterizedTest(method_case *c, segments, new_core_fused_launches_per_step, .timeout = 60)
{
    segment_sizes sz;
    sizes_for(300, &sz);
    fixture f;
    fixture_create(&f, c, sz.n, "P = 300, own buffers, launches");
    segmented sg;
    segmented_create(&sg, f.ctx, 300, OWN_BUFFERS);
    fixture_step(&f, &sg, 0, false, NO_BUFFER);
    bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
    cr_assert_eq(bloopcl_get_diagnostics(f.multi, &diag), BLOOPCL_OK);
    unsigned bound = 2 * ((300 + 15) / 16) + 1;
    cr_expect(diag.kernels >= 3 && diag.kernels <= bound, "%s: %u kernels for 300 segments, "
              "expected 3 to %u", f.label, diag.kernels, bound);
    segmented_destroy(&sg);
    fixture_destroy(&f);
}
