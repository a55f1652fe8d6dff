/* test_plan.c — the step planner, without a device (but for the last test): merging of
 * end-to-end segments, cuts at state-chunk limits, work-groups per range, packing into
 * launches of 16 ranges, and the rebasing of CLBlast operands whose int offsets
 * would overflow. */
#include "internal.h"
#include "support.h"

#include <criterion/criterion.h>
#include <limits.h>
#include <stdlib.h>

/* Distinct fake handles: the planner only compares them. */
#define BUFFER(k) ((cl_mem)(uintptr_t)(0x1000 * (k)))

static bloopcl_plan_limits limits(void)
{
    return (bloopcl_plan_limits){.chunk_capacity = (size_t)1 << 30, .group_budget = 16,
                                 .min_group_elements = BLOOPCL_MIN_GROUP_ELEMENTS,
                                 .slots = 16};
}

/* Plans g, a, d given as one list each. */
static bloopcl_plan plan_of(const bloopcl_segment *g, const bloopcl_segment *a,
                            const bloopcl_segment *d, size_t count, bloopcl_plan_limits lim)
{
    bloopcl_tensor tg = {g, count}, ta = {a, count}, td = {d, count};
    const bloopcl_tensor *const t[3] = {&tg, &ta, &td};
    bloopcl_plan plan = {0};
    cr_assert(bloopcl__plan_layout(t, &lim, &plan));
    return plan;
}

static void free_plan(bloopcl_plan *plan)
{
    free(plan->pieces);
    free(plan->launches);
}

/* P segments of `size` elements each: end to end in one buffer per tensor (gap = 0), with a
 * gap of `gap` elements between them, or (separate) each in a buffer of its own. */
static void layout(bloopcl_segment *list, size_t P, size_t size, size_t gap, bool separate,
                   int tensor)
{
    for (size_t s = 0; s < P; ++s)
        list[s] = (bloopcl_segment){
            .buffer = BUFFER(separate ? 1 + (size_t)tensor * 1000 + s : 1 + (size_t)tensor),
            .offset_bytes = separate ? 0 : s * (size + gap) * sizeof(float), .count = size};
}

Test(plan, end_to_end_segments_merge_into_one_range)
{
    bloopcl_segment g[40], a[40], d[40];
    layout(g, 40, 1000, 0, false, 0);
    layout(a, 40, 1000, 0, false, 1);
    layout(d, 40, 1000, 0, false, 2);
    bloopcl_plan plan = plan_of(g, a, d, 40, limits());
    cr_expect_eq(plan.num_pieces, 1);
    cr_expect_eq(plan.pieces[0].count, 40000);
    cr_expect_eq(plan.num_launches, 1);
    free_plan(&plan);
}

Test(plan, a_gap_or_another_buffer_breaks_the_run)
{
    bloopcl_segment g[10], a[10], d[10];
    layout(g, 10, 100, 0, false, 0);
    layout(a, 10, 100, 3, false, 1);  /* gaps in a only: nothing merges */
    layout(d, 10, 100, 0, false, 2);
    bloopcl_plan plan = plan_of(g, a, d, 10, limits());
    cr_expect_eq(plan.num_pieces, 10);
    free_plan(&plan);
    layout(a, 10, 100, 0, false, 1);
    d[5].buffer = BUFFER(77);  /* d's segment 5 elsewhere: three runs (0-4, 5, 6-9) */
    d[5].offset_bytes = 0;
    plan = plan_of(g, a, d, 10, limits());
    cr_expect_eq(plan.num_pieces, 3);
    cr_expect_eq(plan.pieces[0].count, 500);
    cr_expect_eq(plan.pieces[1].count, 100);
    cr_expect_eq(plan.pieces[2].count, 400);
    cr_expect_eq(plan.pieces[2].g_offset, 600);
    free_plan(&plan);
}

Test(plan, empty_segments_neither_add_nor_break)
{
    bloopcl_segment g[5], a[5], d[5];
    layout(g, 5, 64, 0, false, 0);
    layout(a, 5, 64, 0, false, 1);
    layout(d, 5, 64, 0, false, 2);
    for (int k = 0; k < 3; ++k) {
        bloopcl_segment *list = k == 0 ? g : k == 1 ? a : d;
        list[2] = (bloopcl_segment){.buffer = NULL, .count = 0};  /* empty, no buffer */
        for (size_t s = 3; s < 5; ++s)
            list[s].offset_bytes -= 64 * sizeof(float);
    }
    bloopcl_plan plan = plan_of(g, a, d, 5, limits());
    cr_expect_eq(plan.num_pieces, 1);
    cr_expect_eq(plan.pieces[0].count, 256);
    free_plan(&plan);
}

Test(plan, separate_buffers_pack_sixteen_ranges_per_launch)
{
    enum { P = 300 };
    static bloopcl_segment g[P], a[P], d[P];
    layout(g, P, 5000, 0, true, 0);
    layout(a, P, 5000, 0, true, 1);
    layout(d, P, 5000, 0, true, 2);
    bloopcl_plan plan = plan_of(g, a, d, P, limits());
    cr_expect_eq(plan.num_pieces, P);
    cr_expect_eq(plan.num_launches, (P + 15) / 16);
    size_t pieces = 0, partial = 0;
    for (size_t l = 0; l < plan.num_launches; ++l) {
        const bloopcl_launch *launch = &plan.launches[l];
        cr_expect_leq(launch->num_pieces, 16);
        cr_expect_eq(launch->first_piece, pieces);
        cr_expect_eq(launch->first_partial, partial, "partial slots are handed out in order");
        size_t groups = 0;
        for (size_t j = 0; j < launch->num_pieces; ++j)
            groups += plan.pieces[launch->first_piece + j].groups;
        cr_expect_eq(launch->groups, groups);
        pieces += launch->num_pieces;
        partial += launch->groups;
    }
    cr_expect_eq(pieces, P);
    cr_expect_eq(plan.total_groups, partial);
    free_plan(&plan);
}

Test(plan, work_groups_follow_the_size)
{
    bloopcl_plan_limits lim = limits();
    size_t n = (size_t)16 << 20;
    cr_expect_eq(bloopcl__range_groups(n, n, &lim), 16, "one buffer: the budget");
    cr_expect_eq(bloopcl__range_groups(10, n, &lim), 1, "a bias: one group");
    cr_expect_eq(bloopcl__range_groups(n / 2, n, &lim), 8, "half the launch: half");
    cr_expect_eq(bloopcl__range_groups(8192, 8192, &lim), 2, "no group under 4096 elements");
    /* over any split of a launch, the groups add up to at most budget + number of ranges */
    size_t launch = 1000003, total = 0, ranges = 0;
    for (size_t done = 0, size = 1; done < launch; ++ranges, size = size * 3 + 1) {
        size_t now = size < launch - done ? size : launch - done;
        total += bloopcl__range_groups(now, launch, &lim);
        done += now;
    }
    cr_expect_leq(total, lim.group_budget + ranges);
}

Test(plan, every_launch_spreads_over_the_budget)
{
    /* 48 segments: a big one (6400 x 4096 elements) then 15 small ones, three times: each
     * launch gives its big piece the whole budget, not its third of it */
    enum { P = 48 };
    bloopcl_segment g[P], a[P], d[P];
    for (size_t s = 0; s < P; ++s) {
        size_t count = s % 16 == 0 ? (size_t)6400 * 4096 : 100;
        for (int k = 0; k < 3; ++k) {
            bloopcl_segment *list = k == 0 ? g : k == 1 ? a : d;
            list[s] = (bloopcl_segment){.buffer = BUFFER(1 + (size_t)k * 1000 + s), .count = count};
        }
    }
    bloopcl_plan plan = plan_of(g, a, d, P, limits());
    cr_assert_eq(plan.num_launches, 3);
    for (size_t l = 0; l < 3; ++l) {
        const bloopcl_piece *big = &plan.pieces[plan.launches[l].first_piece];
        cr_expect_eq(big->groups, 16, "launch %zu: the big piece gets the budget", l);
        cr_expect_eq(plan.launches[l].groups, 16 + 15);
    }
    free_plan(&plan);
}

Test(plan, state_chunk_limits_cut_pieces_and_launches)
{
    bloopcl_segment g[1] = {{.buffer = BUFFER(1), .count = 2500}};
    bloopcl_segment a[1] = {{.buffer = BUFFER(2), .count = 2500}};
    bloopcl_segment d[1] = {{.buffer = BUFFER(3), .count = 2500}};
    bloopcl_plan_limits lim = limits();
    lim.chunk_capacity = 1000;
    bloopcl_plan plan = plan_of(g, a, d, 1, lim);
    cr_assert_eq(plan.num_pieces, 3);
    cr_expect_eq(plan.num_launches, 3, "a launch never spans two state chunks");
    for (size_t p = 0; p < 3; ++p) {
        cr_expect_eq(plan.pieces[p].state_chunk, p);
        cr_expect_eq(plan.pieces[p].state_offset, 0);
        cr_expect_eq(plan.pieces[p].g_offset, p * 1000);
    }
    cr_expect_eq(plan.pieces[2].count, 500);
    free_plan(&plan);
}

Test(plan, clblast_offsets_past_int_are_rebased)
{
    size_t origin = 0, rebased = 0;
    cr_expect_not(bloopcl__clblast_rebase(1000, 1000, INT_MAX, 128, &origin, &rebased));
    cr_expect_not(bloopcl__clblast_rebase((size_t)INT_MAX - 10, 10, INT_MAX, 128, &origin, &rebased));
    /* an 8 GiB offset: 2^31 floats */
    size_t offset = (size_t)1 << 31, count = 12345;
    cr_assert(bloopcl__clblast_rebase(offset + 7, count, INT_MAX, 128, &origin, &rebased));
    cr_expect_eq(origin % 128, 0, "sub-buffer origins are aligned");
    cr_expect_eq(origin / sizeof(float) + rebased, offset + 7, "the same first element");
    cr_expect_leq(rebased + count, (size_t)INT_MAX);
    cr_assert(bloopcl__clblast_rebase(offset * 3 + 1, count, INT_MAX, 4096, &origin, &rebased));
    cr_expect_eq(origin % 4096, 0);
    cr_expect_eq(origin / sizeof(float) + rebased, offset * 3 + 1);
    cr_expect_lt(rebased, 1024);
}

/* The sub-buffer path on a real device: with CLBlast's limit lowered to 5000 elements, pieces
 * at offsets past it go through rebased sub-buffers and must still give the reference's step. */
Test(plan, clblast_sub_buffer_path_matches_reference)
{
    bloopcl_context *ctx = support_context();
    ctx->clblast_index_limit = 5000;
    enum { N = 3001, SPACE = 20000 };
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_PCGRAD);
    config.dots = BLOOPCL_DOTS_CLBLAST;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *host = support_alloc(SPACE), *g = support_alloc(N), *a = support_alloc(N);
    float *d = support_alloc(N), *d_ref = support_alloc(N);
    cl_mem space = support_buffer(ctx, NULL, SPACE);
    /* g and a at unaligned offsets past the limit, d below it: every operand case */
    const size_t g_at = 10007, a_at = 15003, d_at = 1;
    bloopcl_segment sg = {.buffer = space, .offset_bytes = g_at * sizeof(float), .count = N};
    bloopcl_segment sa = {.buffer = space, .offset_bytes = a_at * sizeof(float), .count = N};
    bloopcl_segment sd = {.buffer = space, .offset_bytes = d_at * sizeof(float), .count = N};
    bloopcl_tensor tg = {&sg, 1}, ta = {&sa, 1}, td = {&sd, 1};
    for (int step = 0; step < 3; ++step) {
        support_fill_normal(g, N, 100 + (uint64_t)step, 1.0f);
        support_fill_normal(a, N, 200 + (uint64_t)step, 0.5f);
        cl_command_queue queue = bloopcl_context_queue(ctx);
        cr_assert_eq(clEnqueueWriteBuffer(queue, space, CL_TRUE, g_at * sizeof(float),
                                          N * sizeof(float), g, 0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(clEnqueueWriteBuffer(queue, space, CL_TRUE, a_at * sizeof(float),
                                          N * sizeof(float), a, 0, NULL, NULL), CL_SUCCESS);
        cr_assert_eq(bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        support_read(ctx, space, host, SPACE);
        support_check_step(comb, &config, &ref, g, a, host + d_at, d_ref, step);
    }
    clReleaseMemObject(space);
    free(host);
    free(g);
    free(a);
    free(d);
    free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

Test(plan, slots_follow_the_device_limits)
{
    cr_expect_eq(bloopcl__slots_for("Apple", 4096, 64), 8, "Metal: at most 31 buffer arguments");
    cr_expect_eq(bloopcl__slots_for("NVIDIA Corporation", 4352, 64), 32);
    cr_expect_eq(bloopcl__slots_for("The pocl project", 1024, 64), 32, "the OpenCL minimum");
    cr_expect_eq(bloopcl__slots_for("x", 800, 64), 16);
    cr_expect_eq(bloopcl__slots_for("x", 300, 64), 8, "below 16's needs: the fewest");
    cr_expect_eq(bloopcl__slots_for("x", 512, 32), 32, "32-bit pointers take half");
}

/* The 8-slot kernels (Apple's GPUs) on PoCL: 40 separate segments are 5 launches per pass. */
Test(plan, eight_slots_match_reference)
{
    setenv("BLOOPCL_KERNEL_SLOTS", "8", 1);
    bloopcl_context *ctx = support_context();
    unsetenv("BLOOPCL_KERNEL_SLOTS");
    cr_assert_eq(ctx->kernels.slots, 8);
    enum { P = 40, EACH = 333, N = P * EACH };
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = BLOOPCL_DOTS_FUSED;
    bloopcl_combiner *comb = support_combiner(ctx, &config, N);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_ref = support_alloc(N);
    bloopcl_segment lists[3][P];
    for (int step = 0; step < 2; ++step) {
        support_fill_normal(g, N, 300 + (uint64_t)step, 1.0f);
        support_fill_normal(a, N, 400 + (uint64_t)step, 0.3f);
        for (size_t s = 0; s < P; ++s) {
            lists[0][s] = (bloopcl_segment){.buffer = support_buffer(ctx, g + s * EACH, EACH),
                                            .count = EACH};
            lists[1][s] = (bloopcl_segment){.buffer = support_buffer(ctx, a + s * EACH, EACH),
                                            .count = EACH};
            lists[2][s] = (bloopcl_segment){.buffer = support_buffer(ctx, NULL, EACH),
                                            .count = EACH};
        }
        bloopcl_tensor t[3] = {{lists[0], P}, {lists[1], P}, {lists[2], P}};
        cr_assert_eq(bloopcl_step(comb, &t[0], &t[1], &t[2], 0, NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        for (size_t s = 0; s < P; ++s)
            support_read(ctx, lists[2][s].buffer, d + s * EACH, EACH);
        support_check_step(comb, &config, &ref, g, a, d, d_ref, step);
        bloopcl_diagnostics diag = BLOOPCL_DIAGNOSTICS_INIT;
        cr_assert_eq(bloopcl_get_diagnostics(comb, &diag), BLOOPCL_OK);
        cr_expect_eq(diag.kernels, 2 * 5 + 1);
        for (int k = 0; k < 3; ++k)
            for (size_t s = 0; s < P; ++s)
                clReleaseMemObject(lists[k][s].buffer);
    }
    free(g);
    free(a);
    free(d);
    free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}
