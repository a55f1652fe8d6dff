/* tensor_plan.c — plans the step of the caller's segment lists, once tensor_check.c has found
 * them sound:
 *   pieces    runs of elements that lie in one segment of g, a and d (consecutive segments
 *             of the same types that lie end to end in all three are merged) and in one
 *             chunk of the state; each piece's types go to the kernels in its table row;
 *   groups    work-groups per piece: its share of its launch's elements times the budget, so
 *             every launch spreads over the whole device (a bias gets one);
 *   launches  up to `slots` (8-32) pieces of one state chunk per kernel launch, described by a
 *             table in device memory.
 * The plan is kept for the next step: an unchanged list is neither checked nor planned again.
 * Nothing is enqueued here, so a rejected request changes nothing. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* --- layout planning (pure) ---------------------------------------------------------------- */

size_t bloopcl__range_groups(size_t count, size_t launch_count,
                             const bloopcl_plan_limits *limits)
{
    /* The launch's share of the budget, rounded up: a launch is a barrier (the next one starts
     * when it ends), so each should keep every core busy, with work-items of similar sizes;
     * the pieces of a one-buffer step get the whole budget. */
    size_t share = (size_t)(((unsigned long long)count * limits->group_budget + launch_count - 1) /
                            launch_count);
    size_t by_size = (count + limits->min_group_elements - 1) / limits->min_group_elements;
    size_t groups = share < by_size ? share : by_size;
    return groups > 0 ? groups : 1;
}

static bool push(void **array, size_t *count, size_t *capacity, size_t size, const void *item)
{
    if (*count == *capacity) {
        size_t grown = *capacity ? 2 * *capacity : 16;
        void *bigger = realloc(*array, grown * size);
        if (bigger == NULL)
            return false;
        *array = bigger;
        *capacity = grown;
    }
    memcpy((char *)*array + *count * size, item, size);
    ++*count;
    return true;
}

/* The offset of a segment in elements of its own type (tensor_check.c: a whole number). */
static size_t element_offset(const bloopcl_segment *segment)
{
    return segment->offset_bytes / bloopcl_dtype_size(segment->dtype);
}

/* Segment s continues the range `run` in g, a and d alike: same buffers and types, no gap. */
static bool continues(const bloopcl_piece *run, const bloopcl_tensor *const t[3], size_t s)
{
    const bloopcl_segment *g = &t[0]->segments[s], *a = &t[1]->segments[s],
                          *d = &t[2]->segments[s];
    return g->buffer == run->g && a->buffer == run->a && d->buffer == run->d &&
           g->dtype == run->g_dtype && a->dtype == run->a_dtype && d->dtype == run->d_dtype &&
           element_offset(g) == run->g_offset + run->count &&
           element_offset(a) == run->a_offset + run->count &&
           element_offset(d) == run->d_offset + run->count;
}

/* Cuts one merged run (starting at global element `base`) at state-chunk and size limits. */
static bool cut_run(const bloopcl_piece *run, size_t base, const bloopcl_plan_limits *limits,
                    bloopcl_plan *plan, size_t *capacity)
{
    for (size_t done = 0; done < run->count;) {
        size_t global = base + done;
        size_t within = global % limits->chunk_capacity;
        size_t now = run->count - done;
        if (now > limits->chunk_capacity - within)
            now = limits->chunk_capacity - within;
        if (now > BLOOPCL_MAX_PIECE)
            now = BLOOPCL_MAX_PIECE;
        bloopcl_piece piece = *run;
        piece.g_offset += done;
        piece.a_offset += done;
        piece.d_offset += done;
        piece.state_chunk = global / limits->chunk_capacity;
        piece.state_offset = within;
        piece.count = now;
        if (!push((void **)&plan->pieces, &plan->num_pieces, capacity, sizeof piece, &piece))
            return false;
        done += now;
    }
    return true;
}

static bool make_pieces(const bloopcl_tensor *const t[3], const bloopcl_plan_limits *limits,
                        bloopcl_plan *plan)
{
    size_t capacity = 0, base = 0, run_base = 0;
    bloopcl_piece run = {0};
    for (size_t s = 0; s < t[0]->num_segments; ++s) {
        const bloopcl_segment *g = &t[0]->segments[s];
        if (g->count == 0)
            continue;  /* empty segments neither add elements nor break a run */
        if (run.count > 0 && continues(&run, t, s)) {
            run.count += g->count;
        } else {
            if (run.count > 0 && !cut_run(&run, run_base, limits, plan, &capacity))
                return false;
            const bloopcl_segment *a = &t[1]->segments[s], *d = &t[2]->segments[s];
            run = (bloopcl_piece){
                .g = g->buffer, .a = a->buffer, .d = d->buffer,
                .g_dtype = g->dtype, .a_dtype = a->dtype, .d_dtype = d->dtype,
                .g_offset = element_offset(g), .a_offset = element_offset(a),
                .d_offset = element_offset(d), .count = g->count};
            run_base = base;
        }
        base += g->count;
    }
    return run.count == 0 || cut_run(&run, run_base, limits, plan, &capacity);
}

/* Work-groups of each piece of a launch, from its share of the launch's elements. */
static void assign_groups(bloopcl_plan *plan, bloopcl_launch *launch,
                          const bloopcl_plan_limits *limits)
{
    size_t elements = 0;
    for (size_t j = 0; j < launch->num_pieces; ++j)
        elements += plan->pieces[launch->first_piece + j].count;
    launch->groups = 0;
    for (size_t j = 0; j < launch->num_pieces; ++j) {
        bloopcl_piece *piece = &plan->pieces[launch->first_piece + j];
        piece->groups = bloopcl__range_groups(piece->count, elements, limits);
        launch->groups += piece->groups;
    }
    launch->first_partial = plan->total_groups;
    plan->total_groups += launch->groups;
}

/* Consecutive pieces of one state chunk share a launch, `slots` at most. */
static bool pack_launches(bloopcl_plan *plan, const bloopcl_plan_limits *limits)
{
    size_t capacity = 0;
    plan->total_groups = 0;
    for (size_t p = 0; p < plan->num_pieces; ++p) {
        const bloopcl_piece *piece = &plan->pieces[p];
        bloopcl_launch *last = plan->num_launches ? &plan->launches[plan->num_launches - 1] : NULL;
        if (last == NULL || last->num_pieces == limits->slots ||
            last->state_chunk != piece->state_chunk) {
            bloopcl_launch launch = {.first_piece = p, .state_chunk = piece->state_chunk};
            if (!push((void **)&plan->launches, &plan->num_launches, &capacity, sizeof launch,
                      &launch))
                return false;
            last = &plan->launches[plan->num_launches - 1];
        }
        last->num_pieces++;
    }
    for (size_t l = 0; l < plan->num_launches; ++l)
        assign_groups(plan, &plan->launches[l], limits);
    return true;
}

bool bloopcl__plan_layout(const bloopcl_tensor *const t[3], const bloopcl_plan_limits *limits,
                          bloopcl_plan *plan)
{
    plan->slots = limits->slots;
    return make_pieces(t, limits, plan) && pack_launches(plan, limits);
}

/* --- the plan's device and host resources ------------------------------------------------- */

void bloopcl__plan_release(bloopcl_plan *plan)
{
    for (size_t l = 0; plan->kernels != NULL && l < plan->num_launches; ++l)
        for (int kind = 0; kind < BLOOPCL_LAUNCH_KERNELS; ++kind)
            if (plan->kernels[l].kernel[kind] != NULL)
                clReleaseKernel(plan->kernels[l].kernel[kind]);
    free(plan->kernels);
    for (size_t i = 0; i < plan->num_held; ++i)
        clReleaseMemObject(plan->held[i]);
    if (plan->table != NULL)
        clReleaseMemObject(plan->table);
    free(plan->held);
    free(plan->lists);
    free(plan->pieces);
    free(plan->launches);
    *plan = (bloopcl_plan){0};
}

static int compare_handles(const void *x, const void *y)
{
    uintptr_t a = (uintptr_t)*(const cl_mem *)x, b = (uintptr_t)*(const cl_mem *)y;
    return (a > b) - (a < b);
}

/* Copies the lists and retains each distinct buffer once. A retain that fails took no
 * reference: only those that succeeded are counted in num_held (released with the plan). */
static bloopcl_status hold_lists(bloopcl_context *ctx, const bloopcl_tensor *const t[3],
                                 bloopcl_plan *plan)
{
    size_t segments = t[0]->num_segments;
    if (segments <= SIZE_MAX / (3 * sizeof(bloopcl_segment))) {
        plan->lists = malloc(3 * segments * sizeof *plan->lists);
        plan->held = malloc(3 * segments * sizeof *plan->held);
    }
    if (plan->lists == NULL || plan->held == NULL)
        return bloopcl__fail(ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "planning the step over %zu "
                             "segments", segments);
    plan->num_segments = segments;
    size_t candidates = 0;
    for (int k = 0; k < 3; ++k) {
        memcpy(plan->lists + k * segments, t[k]->segments, segments * sizeof *plan->lists);
        for (size_t s = 0; s < segments; ++s)
            if (t[k]->segments[s].count > 0)
                plan->held[candidates++] = t[k]->segments[s].buffer;
    }
    qsort(plan->held, candidates, sizeof *plan->held, compare_handles);
    size_t distinct = 0;
    for (size_t i = 0; i < candidates; ++i)
        if (distinct == 0 || plan->held[distinct - 1] != plan->held[i])
            plan->held[distinct++] = plan->held[i];
    for (size_t i = 0; i < distinct; ++i) {
        cl_int err = clRetainMemObject(plan->held[i]);
        if (err != CL_SUCCESS)
            return bloopcl__fail_cl(ctx, err, "clRetainMemObject", "holding the step's buffers");
        plan->num_held = i + 1;
    }
    return BLOOPCL_OK;
}

/* The launch table, BLOOPCL_SLOT_WORDS ulongs per slot (layout.h), copied to the device at
 * creation (CL_MEM_COPY_HOST_PTR), so no transfer is left pending on host memory. */
static bloopcl_status upload_table(bloopcl_combiner *comb, bloopcl_plan *plan)
{
    size_t words = plan->num_launches * plan->slots * BLOOPCL_SLOT_WORDS;
    cl_ulong *table = calloc(words ? words : 1, sizeof *table);
    if (table == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "planning the step");
    for (size_t l = 0; l < plan->num_launches; ++l) {
        const bloopcl_launch *launch = &plan->launches[l];
        size_t first_group = 0;
        for (size_t j = 0; j < launch->num_pieces; ++j) {
            const bloopcl_piece *p = &plan->pieces[launch->first_piece + j];
            cl_ulong *row = table + (l * plan->slots + j) * BLOOPCL_SLOT_WORDS;
            row[BLOOPCL_SLOT_G_OFFSET] = p->g_offset;
            row[BLOOPCL_SLOT_A_OFFSET] = p->a_offset;
            row[BLOOPCL_SLOT_D_OFFSET] = p->d_offset;
            row[BLOOPCL_SLOT_STATE_OFFSET] = p->state_offset;
            row[BLOOPCL_SLOT_COUNT] = p->count;
            row[BLOOPCL_SLOT_FIRST_GROUP] = first_group;
            row[BLOOPCL_SLOT_GROUPS] = p->groups;
            row[BLOOPCL_SLOT_DTYPES] = (cl_ulong)p->g_dtype |
                                       (cl_ulong)p->a_dtype << BLOOPCL_DTYPE_BITS |
                                       (cl_ulong)p->d_dtype << (2 * BLOOPCL_DTYPE_BITS);
            first_group += p->groups;
        }
    }
    cl_int err;
    plan->table = clCreateBuffer(comb->ctx->cl_ctx, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                 (words ? words : 1) * sizeof *table, table, &err);
    free(table);
    if (err != CL_SUCCESS) {
        plan->table = NULL;
        return bloopcl__fail_cl(comb->ctx, err, "clCreateBuffer", "uploading the step plan");
    }
    return BLOOPCL_OK;
}

/* One cl_kernel per launch for each multi-range kernel the backend uses (see internal.h). */
static bloopcl_status create_launch_kernels(bloopcl_combiner *comb, bloopcl_plan *plan)
{
    static const char *const names[BLOOPCL_LAUNCH_KERNELS] = {
        [BLOOPCL_LAUNCH_EMA] = "bloopcl_ema_update", [BLOOPCL_LAUNCH_FUSED] = "bloopcl_fused_dots",
        [BLOOPCL_LAUNCH_PROJECT] = "bloopcl_project",
        [BLOOPCL_LAUNCH_ACCUMULATE] = "bloopcl_aux_accumulate"};
    bool fused = comb->config.dots == BLOOPCL_DOTS_FUSED, step = !plan->accumulates;
    bool used[BLOOPCL_LAUNCH_KERNELS] = {[BLOOPCL_LAUNCH_EMA] = step && !fused,
                                         [BLOOPCL_LAUNCH_FUSED] = step && fused,
                                         [BLOOPCL_LAUNCH_PROJECT] = step,
                                         [BLOOPCL_LAUNCH_ACCUMULATE] = !step};
    plan->kernels = calloc(plan->num_launches ? plan->num_launches : 1, sizeof *plan->kernels);
    if (plan->kernels == NULL)
        return bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "planning the step");
    for (size_t l = 0; l < plan->num_launches; ++l)
        for (int kind = 0; kind < BLOOPCL_LAUNCH_KERNELS; ++kind) {
            if (!used[kind])
                continue;
            cl_int err;
            plan->kernels[l].kernel[kind] = clCreateKernel(comb->ctx->kernels.program,
                                                           names[kind], &err);
            if (err != CL_SUCCESS) {
                plan->kernels[l].kernel[kind] = NULL;
                return bloopcl__fail_cl(comb->ctx, err, "clCreateKernel", names[kind]);
            }
        }
    return BLOOPCL_OK;
}

static bool same_lists(const bloopcl_plan *plan, const bloopcl_tensor *const t[3])
{
    if (!plan->valid)
        return false;
    for (int k = 0; k < 3; ++k)
        if (t[k] == NULL || t[k]->segments == NULL || t[k]->num_segments != plan->num_segments)
            return false;
    for (int k = 0; k < 3; ++k)
        for (size_t s = 0; s < plan->num_segments; ++s) {
            const bloopcl_segment *x = &plan->lists[k * plan->num_segments + s];
            const bloopcl_segment *y = &t[k]->segments[s];
            if (x->buffer != y->buffer || x->offset_bytes != y->offset_bytes ||
                x->count != y->count || x->dtype != y->dtype || x->reserved != y->reserved)
                return false;
        }
    return true;
}

static bloopcl_plan_limits limits_of(const bloopcl_combiner *comb)
{
    return (bloopcl_plan_limits){.chunk_capacity = comb->chunk_capacity,
                                 .group_budget = comb->ctx->kernels.fused_groups,
                                 .min_group_elements = BLOOPCL_MIN_GROUP_ELEMENTS,
                                 .slots = comb->ctx->kernels.slots};
}

bloopcl_status bloopcl__plan_step(bloopcl_combiner *comb, const bloopcl_tensor *g,
                                  const bloopcl_tensor *a, const bloopcl_tensor *d)
{
    const bloopcl_tensor *const tensors[3] = {g, a, d};
    return bloopcl__plan_tensors(comb, &comb->plan, tensors, false);
}

bloopcl_status bloopcl__plan_tensors(bloopcl_combiner *comb, bloopcl_plan *target,
                                     const bloopcl_tensor *const tensors[3], bool accumulates)
{
    const bloopcl_tensor *g = tensors[0];
    bool for_parameters = comb->options.update_parameters != 0 && !accumulates;
    if (same_lists(target, tensors) && target->for_parameters == for_parameters)
        return BLOOPCL_OK;
    bloopcl_status status = bloopcl__check_tensors(comb, tensors);
    if (status != BLOOPCL_OK)
        return status;
    bloopcl_plan plan = {.accumulates = accumulates};
    bloopcl_plan_limits limits = limits_of(comb);
    if (!bloopcl__plan_layout(tensors, &limits, &plan))
        status = bloopcl__fail(comb->ctx, BLOOPCL_ERR_OUT_OF_MEMORY, "planning the step over "
                               "%zu segments", g->num_segments);
    if (status == BLOOPCL_OK)
        status = hold_lists(comb->ctx, tensors, &plan);
    if (status == BLOOPCL_OK)
        status = upload_table(comb, &plan);
    if (status == BLOOPCL_OK)
        status = create_launch_kernels(comb, &plan);
    if (status != BLOOPCL_OK) {
        bloopcl__plan_release(&plan);
        return status;  /* the previous plan stays in force */
    }
    bloopcl__plan_release(target);
    plan.valid = true;
    plan.for_parameters = for_parameters;
    *target = plan;
    return BLOOPCL_OK;
}
