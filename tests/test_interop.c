/* test_interop.c — bloopcl inside a caller's OpenCL program: contexts around the caller's
 * cl_context / queue / cl_mem (retained, never owned), steps ordered by the caller's events,
 * device selection by explicit spec over the environment, the log callback, and the promise
 * that the library itself never writes to stdout or stderr. */
#include "support.h"

#include <clblast_c.h>
#include <criterion/criterion.h>
#include <criterion/parameterized.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define N 4099   /* not a multiple of any work-group size */
#define STEPS 4

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

/* The device BLOOPCL_DEVICE selects (the default device of the other suites). */
static bloopcl_device_info default_device(void)
{
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    if (count == 0)
        cr_skip_test("no OpenCL device on this machine");
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    char message[4096];
    bloopcl_status status = bloopcl_select_device(NULL, &info, message, sizeof message);
    cr_assert_eq(status, BLOOPCL_OK, "%s", message);
    return info;
}

static cl_context make_cl_context(cl_device_id device)
{
    cl_int err;
    cl_context ctx = clCreateContext(NULL, 1, &device, NULL, NULL, &err);
    cr_assert_eq(err, CL_SUCCESS, "clCreateContext: %d", (int)err);
    return ctx;
}

static cl_uint context_refs(cl_context ctx)
{
    cl_uint refs = 0;
    cr_assert_eq(clGetContextInfo(ctx, CL_CONTEXT_REFERENCE_COUNT, sizeof refs, &refs, NULL),
                 CL_SUCCESS);
    return refs;
}

static cl_uint queue_refs(cl_command_queue queue)
{
    cl_uint refs = 0;
    cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_REFERENCE_COUNT, sizeof refs, &refs,
                                       NULL), CL_SUCCESS);
    return refs;
}

/* The caller's context holds as many references after bloopcl_context_destroy as before it.
 * On a mismatch, says whether CLBlast's program cache (which keeps a cl_program, hence a
 * reference, per context it has served) is what still holds it. */
/* PoCL frees finished commands, released queues and buffers on its own threads, and those
 * hold references meanwhile: under load a count may take a moment to come down, so wait up to
 * 2 s before calling it a leak. */
static void pause_10ms(void)
{
    nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
}

static cl_uint settled_queue_refs(cl_command_queue queue, cl_uint expected)
{
    cl_uint now = queue_refs(queue);
    for (int tries = 0; now != expected && tries < 200; ++tries, pause_10ms())
        now = queue_refs(queue);
    return now;
}

static void expect_context_refs_restored(cl_context cl_ctx, cl_uint before)
{
    cl_uint now = context_refs(cl_ctx);
    for (int tries = 0; now != before && tries < 200; ++tries, pause_10ms())
        now = context_refs(cl_ctx);
    if (now == before)
        return;
    CLBlastClearCache();
    cl_uint cleared = context_refs(cl_ctx);
    cr_expect_fail("the caller's cl_context has %u references after bloopcl_context_destroy, "
                   "%u before; %u after CLBlastClearCache()%s", now, before, cleared,
                   cleared == before ? ": CLBlast's program cache still retained it" : "");
}

static cl_mem make_buffer(cl_context ctx, cl_command_queue queue, const float *host, size_t n)
{
    cl_int err;
    cl_mem buffer = clCreateBuffer(ctx, CL_MEM_READ_WRITE, n * sizeof(float), NULL, &err);
    cr_assert_eq(err, CL_SUCCESS);
    if (host != NULL)
        cr_assert_eq(clEnqueueWriteBuffer(queue, buffer, CL_TRUE, 0, n * sizeof(float), host, 0,
                                          NULL, NULL), CL_SUCCESS);
    return buffer;
}

static void write_floats(cl_command_queue queue, cl_mem buffer, size_t offset, const float *host,
                         size_t n)
{
    cr_assert_eq(clEnqueueWriteBuffer(queue, buffer, CL_TRUE, offset * sizeof(float),
                                      n * sizeof(float), host, 0, NULL, NULL), CL_SUCCESS);
}

static void read_floats(cl_command_queue queue, cl_mem buffer, size_t offset, float *host,
                        size_t n)
{
    cr_assert_eq(clEnqueueReadBuffer(queue, buffer, CL_TRUE, offset * sizeof(float),
                                     n * sizeof(float), host, 0, NULL, NULL), CL_SUCCESS);
}

static void make_inputs(float *g, float *a, size_t n, uint64_t seed)
{
    support_fill_normal(g, n, seed, 1.0f);
    support_fill_normal(a, n, seed + 7919u, 1.0f);
    for (size_t i = 0; i < n; ++i)
        a[i] += ((seed % 2) ? -0.6f : 0.4f) * g[i];
}

static bloopcl_segment segment(cl_mem buffer, size_t offset_floats, size_t count)
{
    return (bloopcl_segment){.buffer = buffer, .offset_bytes = offset_floats * sizeof(float),
                             .count = count, .dtype = BLOOPCL_DTYPE_F32, .reserved = 0};
}

/* STEPS steps of bloop on `ctx` through bloopcl_step with two-segment tensors (buffers made in
 * the context's cl_context, written and read on the context's queue), each checked against
 * the CPU reference; then the state, exactly. */
static void expect_steps_match_reference(bloopcl_context *ctx, bloopcl_dot_backend dots)
{
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = dots;
    config.lambda = 0.5;
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK, "%s",
                 bloopcl_context_last_error(ctx));
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    cl_context cl_ctx = bloopcl_context_cl_context(ctx);
    cl_command_queue queue = bloopcl_context_queue(ctx);
    cl_mem gb = make_buffer(cl_ctx, queue, NULL, N), ab = make_buffer(cl_ctx, queue, NULL, N);
    cl_mem db = make_buffer(cl_ctx, queue, NULL, N);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_ref = support_alloc(N);
    const size_t split = 1000;
    bloopcl_segment gs[2] = {segment(gb, 0, split), segment(gb, split, N - split)};
    bloopcl_segment as[2] = {segment(ab, 0, split), segment(ab, split, N - split)};
    bloopcl_segment ds[2] = {segment(db, 0, split), segment(db, split, N - split)};
    bloopcl_tensor tg = {gs, 2}, ta = {as, 2}, td = {ds, 2};
    for (int t = 0; t < STEPS; ++t) {
        make_inputs(g, a, N, 10 + (uint64_t)t);
        write_floats(queue, gb, 0, g, N);
        write_floats(queue, ab, 0, a, N);
        cr_assert_eq(bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        read_floats(queue, db, 0, d, N);
        support_check_step(comb, &config, &ref, g, a, d, d_ref, t);
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(g), free(a), free(d), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
}

/* ---------------------------------------------------------------------------------------------
 * bloopcl_context_create_from_cl
 * ------------------------------------------------------------------------------------------- */

ParameterizedTestParameters(interop, create_from_cl_with_callers_queue)
{
    static bloopcl_dot_backend backends[] = {BLOOPCL_DOTS_CLBLAST, BLOOPCL_DOTS_FUSED};
    return cr_make_param_array(bloopcl_dot_backend, backends, 2);
}

/* The caller's context, device and in-order queue: the steps run there and are right, and
 * afterwards the caller's objects hold exactly the references they held before (retained
 * while in use, never owned) and still work. Per dot backend, so that a reference kept by
 * CLBlast shows up on its own. */
ParameterizedTest(bloopcl_dot_backend *dots, interop, create_from_cl_with_callers_queue)
{
    bloopcl_device_info info = default_device();
    cl_context cl_ctx = make_cl_context(info.device);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cl_ctx, info.device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_uint ctx_refs_before = context_refs(cl_ctx), queue_refs_before = queue_refs(queue);

    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_cl(cl_ctx, info.device, queue, NULL, &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_expect_eq(bloopcl_context_cl_context(ctx), cl_ctx, "the caller's cl_context is used");
    cr_expect_eq(bloopcl_context_queue(ctx), queue, "the caller's queue is used");
    cr_expect_gt(context_refs(cl_ctx), ctx_refs_before, "the context is retained");
    cr_expect_gt(queue_refs(queue), queue_refs_before, "the queue is retained");
    bloopcl_device_info got = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &got), BLOOPCL_OK);
    cr_expect_eq(got.device, info.device);
    cr_expect_eq(got.flat_index, info.flat_index, "the flat index comes from the full list");
    cr_expect_str_eq(got.device_name, info.device_name);

    expect_steps_match_reference(ctx, *dots);
    cr_expect_eq(bloopcl_context_finish(ctx), BLOOPCL_OK);
    bloopcl_context_destroy(ctx);

    cr_expect_eq(settled_queue_refs(queue, queue_refs_before), queue_refs_before,
                 "queue references after destroy");
    /* CLBlast's process-wide cache is the caller's to clear for its own cl_context (bloopcl.h,
     * bloopcl_context_destroy; test_driver.c checks it survives); every other reference
     * bloopcl took is gone. */
    if (*dots == BLOOPCL_DOTS_CLBLAST)
        CLBlastClearCache();
    expect_context_refs_restored(cl_ctx, ctx_refs_before);
    /* The queue still works: a round trip through a new buffer. */
    float out[16], back[16];
    for (int i = 0; i < 16; ++i)
        out[i] = (float)i * 0.5f;
    cl_mem buffer = make_buffer(cl_ctx, queue, out, 16);
    read_floats(queue, buffer, 0, back, 16);
    cr_expect(memcmp(out, back, sizeof out) == 0);
    cr_expect_eq(clFinish(queue), CL_SUCCESS);
    clReleaseMemObject(buffer);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl_ctx);
}

/* queue = NULL: the library makes its own in-order queue in the caller's context, and releases
 * it (and its reference on the context) at destruction. (Fused backend: CLBlast's cache is
 * the subject of create_from_cl_with_callers_queue.) */
Test(interop, create_from_cl_makes_its_own_queue)
{
    bloopcl_device_info info = default_device();
    cl_context cl_ctx = make_cl_context(info.device);
    cl_uint refs_before = context_refs(cl_ctx);
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_cl(cl_ctx, info.device, NULL, NULL, &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cl_command_queue queue = bloopcl_context_queue(ctx);
    cr_assert_not_null(queue);
    cl_context queue_ctx = NULL;
    cl_device_id queue_device = NULL;
    cl_command_queue_properties properties = 0;
    cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_CONTEXT, sizeof queue_ctx, &queue_ctx,
                                       NULL), CL_SUCCESS);
    cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_DEVICE, sizeof queue_device,
                                       &queue_device, NULL), CL_SUCCESS);
    cr_assert_eq(clGetCommandQueueInfo(queue, CL_QUEUE_PROPERTIES, sizeof properties,
                                       &properties, NULL), CL_SUCCESS);
    cr_expect_eq(queue_ctx, cl_ctx);
    cr_expect_eq(queue_device, info.device);
    cr_expect_eq(properties & CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, 0, "in-order queue");
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_FUSED);
    bloopcl_context_destroy(ctx);
    expect_context_refs_restored(cl_ctx, refs_before);
    clReleaseContext(cl_ctx);
}

/* The steps rely on in-order execution (CLBlast takes no wait list): an out-of-order queue is
 * refused, and the refusal leaves the caller's reference counts as they were. */
Test(interop, out_of_order_queue_is_refused)
{
    bloopcl_device_info info = default_device();
    cl_context cl_ctx = make_cl_context(info.device);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cl_ctx, info.device,
                                                  CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE, &err);
    if (err == CL_INVALID_QUEUE_PROPERTIES || err == CL_INVALID_VALUE) {
        /* The device cannot make one, so no caller can hand one over: nothing to check. */
        clReleaseContext(cl_ctx);
        cr_skip_test("the device does not support out-of-order queues");
    }
    cr_assert_eq(err, CL_SUCCESS, "clCreateCommandQueue(out of order): %d", (int)err);
    cl_uint ctx_refs_before = context_refs(cl_ctx), queue_refs_before = queue_refs(queue);
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_cl(cl_ctx, info.device, queue, NULL, &ctx);
    cr_expect_eq(status, BLOOPCL_ERR_INVALID_ARGUMENT, "status %d: %s", (int)status,
                 bloopcl_context_last_error(ctx));
    cr_assert_not_null(ctx, "an error-only context carries the message");
    cr_expect(strstr(bloopcl_context_last_error(ctx), "out of order") != NULL, "%s",
              bloopcl_context_last_error(ctx));
    cr_expect_null(bloopcl_context_queue(ctx));
    bloopcl_context_destroy(ctx);
    cr_expect_eq(context_refs(cl_ctx), ctx_refs_before);
    cr_expect_eq(queue_refs(queue), queue_refs_before);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl_ctx);
}

Test(interop, queue_of_another_context_is_refused)
{
    bloopcl_device_info info = default_device();
    cl_context mine = make_cl_context(info.device), other = make_cl_context(info.device);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(other, info.device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);
    cl_uint mine_refs = context_refs(mine), other_refs = context_refs(other);
    cl_uint queue_refs_before = queue_refs(queue);
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_cl(mine, info.device, queue, NULL, &ctx);
    cr_expect_eq(status, BLOOPCL_ERR_WRONG_CONTEXT, "status %d: %s", (int)status,
                 bloopcl_context_last_error(ctx));
    cr_assert_not_null(ctx);
    cr_expect(strstr(bloopcl_context_last_error(ctx), "another context") != NULL, "%s",
              bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
    cr_expect_eq(context_refs(mine), mine_refs);
    cr_expect_eq(context_refs(other), other_refs);
    cr_expect_eq(queue_refs(queue), queue_refs_before);
    clReleaseCommandQueue(queue);
    clReleaseContext(other);
    clReleaseContext(mine);
}

/* ---------------------------------------------------------------------------------------------
 * bloopcl_context_create_from_mem
 * ------------------------------------------------------------------------------------------- */

/* From a tensor's cl_mem: the same cl_context is used, and a step can work in place on that
 * buffer: one buffer holds [g | a] and d is written over g (aliasing is allowed). */
Test(interop, create_from_mem_steps_in_place)
{
    bloopcl_device_info info = default_device();
    cl_context cl_ctx = make_cl_context(info.device);
    cl_int err;
    cl_command_queue queue = clCreateCommandQueue(cl_ctx, info.device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);
    float *ga = support_alloc(2 * N), *after = support_alloc(2 * N), *d_ref = support_alloc(N);
    cl_mem both = make_buffer(cl_ctx, queue, NULL, 2 * N);

    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create_from_mem(both, NULL, &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_expect_eq(bloopcl_context_cl_context(ctx), cl_ctx, "the buffer's cl_context is used");
    cr_expect_neq(bloopcl_context_queue(ctx), queue, "a new queue of the library's own");
    bloopcl_device_info got = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &got), BLOOPCL_OK);
    cr_expect_eq(got.device, info.device, "the first (only) device of the buffer's context");

    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.lambda = 1.0;
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    bloopcl_segment gs = segment(both, 0, N), as = segment(both, N, N), ds = segment(both, 0, N);
    bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
    for (int t = 0; t < STEPS; ++t) {
        make_inputs(ga, ga + N, N, 20 + (uint64_t)t);
        /* Written on the caller's queue, which is finished before the library's starts. */
        write_floats(queue, both, 0, ga, 2 * N);
        cr_assert_eq(bloopcl_step(comb, &tg, &ta, &td, 0, NULL, NULL), BLOOPCL_OK, "%s",
                     bloopcl_context_last_error(ctx));
        cr_assert_eq(bloopcl_context_finish(ctx), BLOOPCL_OK);
        read_floats(queue, both, 0, after, 2 * N);
        support_check_step(comb, &config, &ref, ga, ga + N, after, d_ref, t);
        cr_expect(memcmp(after + N, ga + N, N * sizeof(float)) == 0,
                  "step %d: a (the second half of the buffer) is never written", t);
    }
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
    bloopcl_reference_free(&ref);
    free(ga), free(after), free(d_ref);
    clReleaseMemObject(both);
    clReleaseCommandQueue(queue);
    clReleaseContext(cl_ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Wait lists and completion events
 * ------------------------------------------------------------------------------------------- */

static cl_int execution_status(cl_event event)
{
    cl_int status = 0;
    cr_assert_eq(clGetEventInfo(event, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status,
                                &status, NULL), CL_SUCCESS);
    return status;
}

static void sleep_ms(long ms)
{
    struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&pause, NULL);
}

ParameterizedTestParameters(interop, step_waits_for_user_event)
{
    static bloopcl_dot_backend backends[] = {BLOOPCL_DOTS_CLBLAST, BLOOPCL_DOTS_FUSED};
    return cr_make_param_array(bloopcl_dot_backend, backends, 2);
}

/* A step behind a user event: bloopcl_step returns at once (it must not block on the event —
 * a blocking call would hang this test until its timeout), its done event stays incomplete
 * while the user event is, and completes once it is set; the result is then right. The
 * inputs are written by writes on a second queue that the same user event gates (the step
 * waits on them too), so a step that did not wait would read zeros. */
ParameterizedTest(bloopcl_dot_backend *dots, interop, step_waits_for_user_event, .timeout = 30)
{
    bloopcl_context *ctx = support_context();
    cl_context cl_ctx = bloopcl_context_cl_context(ctx);
    cl_command_queue queue = bloopcl_context_queue(ctx);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cl_int err;
    cl_command_queue side = clCreateCommandQueue(cl_ctx, info.device, 0, &err);
    cr_assert_eq(err, CL_SUCCESS);

    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    config.dots = *dots;
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK);
    bloopcl_reference_state ref;
    cr_assert_eq(bloopcl_reference_init(&config, N, &ref), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    float *d_ref = support_alloc(N);
    make_inputs(g, a, N, 30);
    cl_mem gb = make_buffer(cl_ctx, queue, NULL, N), ab = make_buffer(cl_ctx, queue, NULL, N);
    cl_mem db = make_buffer(cl_ctx, queue, NULL, N);
    const float zero = 0.0f;
    cr_assert_eq(clEnqueueFillBuffer(queue, gb, &zero, sizeof zero, 0, N * sizeof(float), 0,
                                     NULL, NULL), CL_SUCCESS);
    cr_assert_eq(clEnqueueFillBuffer(queue, ab, &zero, sizeof zero, 0, N * sizeof(float), 0,
                                     NULL, NULL), CL_SUCCESS);
    cr_assert_eq(clFinish(queue), CL_SUCCESS);

    cl_event gate = clCreateUserEvent(cl_ctx, &err);
    cr_assert_eq(err, CL_SUCCESS);
    /* wait[0]: the user event itself; wait[1], wait[2]: the writes it gates. */
    cl_event wait[3] = {gate, NULL, NULL};
    cr_assert_eq(clEnqueueWriteBuffer(side, gb, CL_FALSE, 0, N * sizeof(float), g, 1, &gate,
                                      &wait[1]), CL_SUCCESS);
    cr_assert_eq(clEnqueueWriteBuffer(side, ab, CL_FALSE, 0, N * sizeof(float), a, 1, &gate,
                                      &wait[2]), CL_SUCCESS);
    clFlush(side);

    bloopcl_segment gs = segment(gb, 0, N), as = segment(ab, 0, N), ds = segment(db, 0, N);
    bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
    cl_event done = NULL;
    bloopcl_status status = bloopcl_step(comb, &tg, &ta, &td, 3, wait, &done);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    cr_assert_not_null(done, "a completion event was asked for");
    clFlush(queue);
    sleep_ms(200);
    cr_expect_neq(execution_status(done), CL_COMPLETE,
                  "the step completed before the user event it waits on");

    cr_assert_eq(clSetUserEventStatus(gate, CL_COMPLETE), CL_SUCCESS);
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    cr_expect_eq(execution_status(done), CL_COMPLETE);
    read_floats(queue, db, 0, d, N);
    support_check_step(comb, &config, &ref, g, a, d, d_ref, 0);
    support_expect_state(comb, BLOOPCL_STATE_EMA, ref.ema, N);

    clReleaseEvent(done);
    clReleaseEvent(wait[1]);
    clReleaseEvent(wait[2]);
    clReleaseEvent(gate);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    clReleaseCommandQueue(side);
    free(g), free(a), free(d), free(d_ref);
    bloopcl_reference_free(&ref);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* Without a wait list, the done event completes with the step (and by then d is written). */
Test(interop, done_event_completes)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_PCGRAD);
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, N, &comb), BLOOPCL_OK);
    float *g = support_alloc(N), *a = support_alloc(N), *d = support_alloc(N);
    make_inputs(g, a, N, 40);
    cl_mem gb = support_buffer(ctx, g, N), ab = support_buffer(ctx, a, N);
    cl_mem db = support_buffer(ctx, NULL, N);
    bloopcl_segment gs = segment(gb, 0, N), as = segment(ab, 0, N), ds = segment(db, 0, N);
    bloopcl_tensor tg = {&gs, 1}, ta = {&as, 1}, td = {&ds, 1};
    cl_event done = NULL;
    cr_assert_eq(bloopcl_step(comb, &tg, &ta, &td, 0, NULL, &done), BLOOPCL_OK);
    cr_assert_not_null(done);
    cr_assert_eq(clWaitForEvents(1, &done), CL_SUCCESS);
    cr_expect_eq(execution_status(done), CL_COMPLETE);
    cl_command_type type = 0;
    cr_assert_eq(clGetEventInfo(done, CL_EVENT_COMMAND_TYPE, sizeof type, &type, NULL),
                 CL_SUCCESS);
    cl_command_queue event_queue = NULL;
    cr_assert_eq(clGetEventInfo(done, CL_EVENT_COMMAND_QUEUE, sizeof event_queue, &event_queue,
                                NULL), CL_SUCCESS);
    cr_expect_eq(event_queue, bloopcl_context_queue(ctx), "the event belongs to the queue");
    /* d was written by the time the event completed: with lambda = 0.1, d != 0. */
    cr_assert_eq(clEnqueueReadBuffer(bloopcl_context_queue(ctx), db, CL_TRUE, 0,
                                     N * sizeof(float), d, 0, NULL, NULL), CL_SUCCESS);
    size_t zeros = 0;
    for (size_t i = 0; i < N; ++i)
        zeros += d[i] == 0.0f;
    cr_expect_lt(zeros, N / 100, "d looks unwritten (%zu zeros)", zeros);
    clReleaseEvent(done);
    clReleaseMemObject(gb);
    clReleaseMemObject(ab);
    clReleaseMemObject(db);
    free(g), free(a), free(d);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
}

/* ---------------------------------------------------------------------------------------------
 * Device selection
 * ------------------------------------------------------------------------------------------- */

static bool machine_has_cpu_device(void)
{
    bloopcl_device_info list[64] = {BLOOPCL_DEVICE_INFO_INIT};
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(list, 64, &count), BLOOPCL_OK);
    for (size_t i = 0; i < count && i < 64; ++i)
        if (list[i].type & CL_DEVICE_TYPE_CPU)
            return true;
    return false;
}

/* params.device_spec wins over BLOOPCL_DEVICE; with no explicit spec the (garbage) variable
 * decides and creation fails, naming it. */
Test(interop, explicit_spec_overrides_environment)
{
    if (!machine_has_cpu_device())
        cr_skip_test("no CPU device to select with \"cpu\"");
    cr_assert_eq(setenv("BLOOPCL_DEVICE", "zzz:", 1), 0);
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.device_spec = "cpu";
    bloopcl_context *ctx = NULL;
    bloopcl_status status = bloopcl_context_create(&params, &ctx);
    cr_assert_eq(status, BLOOPCL_OK, "%s", bloopcl_context_last_error(ctx));
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    cr_expect(info.type & CL_DEVICE_TYPE_CPU, "\"cpu\" selected a non-CPU device");
    bloopcl_context_destroy(ctx);

    /* An explicit empty spec is explicit too: the default device, not the variable. */
    params.device_spec = "";
    ctx = NULL;
    status = bloopcl_context_create(&params, &ctx);
    cr_expect_eq(status, BLOOPCL_OK, "explicit \"\": %s", bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);

    params.device_spec = NULL;
    ctx = NULL;
    status = bloopcl_context_create(&params, &ctx);
    cr_expect_eq(status, BLOOPCL_ERR_DEVICE_NOT_FOUND, "status %d: %s", (int)status,
                 bloopcl_context_last_error(ctx));
    cr_assert_not_null(ctx);
    cr_expect(strstr(bloopcl_context_last_error(ctx), "zzz:") != NULL, "%s",
              bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
    ctx = NULL;
    cr_expect_eq(bloopcl_context_create(NULL, &ctx), BLOOPCL_ERR_DEVICE_NOT_FOUND,
                 "NULL params read the variable too");
    bloopcl_context_destroy(ctx);
}

/* Every listed device can be selected by its flat index, and the context reports that very
 * device; "cpu" gives the first CPU of the list. */
Test(interop, device_info_is_the_selected_device)
{
    size_t count = 0;
    cr_assert_eq(bloopcl_list_devices(NULL, 0, &count), BLOOPCL_OK);
    if (count == 0)
        cr_skip_test("no OpenCL device on this machine");
    cr_expect_geq(count, 1);
    bloopcl_device_info *list = calloc(count, sizeof *list);
    cr_assert_not_null(list);
    list[0].struct_size = sizeof *list;
    size_t again = 0;
    cr_assert_eq(bloopcl_list_devices(list, count, &again), BLOOPCL_OK);
    cr_expect_eq(again, count);
    /* A short array still gets the total. */
    bloopcl_device_info one = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_list_devices(&one, 1, &again), BLOOPCL_OK);
    cr_expect_eq(again, count);
    cr_expect_eq(one.device, list[0].device);

    for (size_t i = 0; i < count; ++i) {
        char spec[32];
        snprintf(spec, sizeof spec, "%zu", i);
        bloopcl_context_params params;
        bloopcl_context_params_default(&params);
        params.device_spec = spec;
        bloopcl_context *ctx = NULL;
        bloopcl_status status = bloopcl_context_create(&params, &ctx);
        cr_assert_eq(status, BLOOPCL_OK, "spec %s: %s", spec, bloopcl_context_last_error(ctx));
        bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
        cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
        cr_expect_eq(info.device, list[i].device, "spec %s", spec);
        cr_expect_eq(info.platform, list[i].platform, "spec %s", spec);
        cr_expect_eq(info.flat_index, i, "spec %s", spec);
        cr_expect_str_eq(info.device_name, list[i].device_name, "spec %s", spec);
        cr_expect_str_eq(info.platform_name, list[i].platform_name, "spec %s", spec);
        /* The context's cl_context holds exactly that device. */
        cl_device_id device = NULL;
        cr_assert_eq(clGetContextInfo(bloopcl_context_cl_context(ctx), CL_CONTEXT_DEVICES,
                                      sizeof device, &device, NULL), CL_SUCCESS);
        cr_expect_eq(device, list[i].device, "spec %s", spec);
        bloopcl_context_destroy(ctx);
    }
    for (size_t i = 0; i < count; ++i) {
        if (!(list[i].type & CL_DEVICE_TYPE_CPU))
            continue;
        bloopcl_context_params params;
        bloopcl_context_params_default(&params);
        params.device_spec = "cpu";
        bloopcl_context *ctx = NULL;
        cr_assert_eq(bloopcl_context_create(&params, &ctx), BLOOPCL_OK);
        bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
        cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
        cr_expect_eq(info.device, list[i].device, "\"cpu\" is the first CPU device");
        bloopcl_context_destroy(ctx);
        break;
    }
    free(list);
}

/* ---------------------------------------------------------------------------------------------
 * Logging and silence
 * ------------------------------------------------------------------------------------------- */

typedef struct log_capture {
    char text[16384];
    int messages;
    int bad_levels;
} log_capture;

static void capture_log(void *user, bloopcl_log_level level, const char *message)
{
    log_capture *log = user;
    size_t used = strlen(log->text);
    snprintf(log->text + used, sizeof log->text - used, "[%d] %s\n", (int)level, message);
    log->messages++;
    log->bad_levels += !(level == BLOOPCL_LOG_DEBUG || level == BLOOPCL_LOG_INFO ||
                         level == BLOOPCL_LOG_WARNING);
}

static long file_size(FILE *file)
{
    struct stat st;
    cr_assert_eq(fstat(fileno(file), &st), 0);
    return (long)st.st_size;
}

static void dump(FILE *file, char *text, size_t size)
{
    text[0] = '\0';
    rewind(file);
    size_t length = fread(text, 1, size - 1, file);
    text[length] = '\0';
}

/* The log callback hears about the device at creation; meanwhile nothing at all reaches file
 * descriptors 1 and 2 during creation, good and bad steps (a rejected argument, a skipped
 * non-finite step), state reads and destruction. (A kernel build that fails is left out: the
 * OpenCL compiler of PoCL prints its own diagnostics, e.g. "1 error generated.", on stderr —
 * that is the driver, not bloopcl.) Nothing is asserted while the descriptors are redirected;
 * the outcomes are recorded and checked afterwards. */
Test(interop, log_callback_and_silence)
{
    bloopcl_device_info device = default_device();
    log_capture log;
    memset(&log, 0, sizeof log);
    bloopcl_context_params params;
    bloopcl_context_params_default(&params);
    params.log_fn = capture_log;
    params.log_user = &log;

    FILE *out = tmpfile(), *err = tmpfile();
    cr_assert_not_null(out);
    cr_assert_not_null(err);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    cr_assert(saved_out >= 0 && saved_err >= 0);
    cr_assert_geq(dup2(fileno(out), 1), 0);
    cr_assert_geq(dup2(fileno(err), 2), 0);

    bloopcl_status created, combined = BLOOPCL_ERR_STATE, good = BLOOPCL_ERR_STATE;
    bloopcl_status rejected = BLOOPCL_OK, skipped = BLOOPCL_OK, read = BLOOPCL_ERR_STATE;
    bloopcl_context *ctx = NULL;
    created = bloopcl_context_create(&params, &ctx);
    if (created == BLOOPCL_OK) {
        bloopcl_config config;
        bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
        bloopcl_combiner *comb = NULL;
        combined = bloopcl_combiner_create(ctx, &config, N, &comb);
        if (combined == BLOOPCL_OK) {
            float *g = malloc(N * sizeof *g), *a = malloc(N * sizeof *a);
            float *d = malloc(N * sizeof *d);
            if (g != NULL && a != NULL && d != NULL) {
                bloopcl_reference_normal(1, 0, N, g);
                bloopcl_reference_normal(2, 0, N, a);
                good = bloopcl_step_host(comb, g, a, d);
                rejected = bloopcl_combiner_set_hyperparameters(comb, -1.0, 0.1, 0.0);
                g[5] = 0.0f / 0.0f;
                skipped = bloopcl_step_host(comb, g, a, d);
                read = bloopcl_read_state(comb, BLOOPCL_STATE_EMA, d, N);
            }
            free(g), free(a), free(d);
        }
        bloopcl_combiner_destroy(comb);
    }
    bloopcl_context_destroy(ctx);

    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);

    cr_assert_eq(created, BLOOPCL_OK);
    cr_expect_eq(combined, BLOOPCL_OK);
    cr_expect_eq(good, BLOOPCL_OK);
    cr_expect_eq(rejected, BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect_eq(skipped, BLOOPCL_ERR_NONFINITE_INPUT);
    cr_expect_eq(read, BLOOPCL_OK);
    char text[2048];
    dump(out, text, sizeof text);
    cr_expect_eq(file_size(out), 0, "bloopcl wrote to stdout: %s", text);
    dump(err, text, sizeof text);
    cr_expect_eq(file_size(err), 0, "bloopcl wrote to stderr: %s", text);
    fclose(out);
    fclose(err);

    cr_expect_geq(log.messages, 1, "the log callback heard nothing");
    cr_expect_eq(log.bad_levels, 0, "log levels outside the enum: %s", log.text);
    cr_expect(strstr(log.text, device.device_name) != NULL,
              "no log message names the device \"%s\": %s", device.device_name, log.text);
    cr_expect(strstr(log.text, BLOOPCL_VERSION_STRING) != NULL, "log: %s", log.text);
}

/* BLOOPCL_DOTS_AUTO resolves at creation: BLOOPCL_DOTS when set, else fused on every device
 * type (the rule itself is unit-tested with other device types in test_driver.c). */
static bloopcl_dot_backend resolved_backend(void)
{
    bloopcl_context *ctx = support_context();
    bloopcl_config config;
    bloopcl_config_default(&config, BLOOPCL_METHOD_BLOOP);
    bloopcl_combiner *comb = NULL;
    cr_assert_eq(bloopcl_combiner_create(ctx, &config, 16, &comb), BLOOPCL_OK);
    bloopcl_config resolved = {.struct_size = sizeof(bloopcl_config)};
    cr_assert_eq(bloopcl_combiner_config(comb, &resolved), BLOOPCL_OK);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    cr_assert_eq(bloopcl_context_device_info(ctx, &info), BLOOPCL_OK);
    bloopcl_combiner_destroy(comb);
    bloopcl_context_destroy(ctx);
    if (getenv("BLOOPCL_DOTS") == NULL)
        cr_expect_eq(resolved.dots, BLOOPCL_DOTS_FUSED, "device type %#lx",
                     (unsigned long)info.type);
    return resolved.dots;
}

Test(interop, auto_backend_follows_device_type_and_environment)
{
    unsetenv("BLOOPCL_DOTS");
    cr_expect_neq(resolved_backend(), BLOOPCL_DOTS_AUTO);
    cr_assert_eq(setenv("BLOOPCL_DOTS", "clblast", 1), 0);
    cr_expect_eq(resolved_backend(), BLOOPCL_DOTS_CLBLAST);
    cr_assert_eq(setenv("BLOOPCL_DOTS", "fused", 1), 0);
    cr_expect_eq(resolved_backend(), BLOOPCL_DOTS_FUSED);
}

/* BLOOPCL_CLBLAST_XDOT hands tuned Xdot parameters to CLBlast: the CLBlast backend still agrees
 * with the reference under them, and a malformed value is refused at context creation. */
Test(interop, clblast_xdot_override)
{
    cr_assert_eq(setenv("BLOOPCL_CLBLAST_XDOT", "1024,64", 1), 0);
    bloopcl_context *ctx = support_context();
    expect_steps_match_reference(ctx, BLOOPCL_DOTS_CLBLAST);
    bloopcl_context_destroy(ctx);
    cr_assert_eq(setenv("BLOOPCL_CLBLAST_XDOT", "1000,64", 1), 0);
    ctx = NULL;
    cr_expect_eq(bloopcl_context_create(NULL, &ctx), BLOOPCL_ERR_INVALID_ARGUMENT);
    cr_expect(strstr(bloopcl_context_last_error(ctx), "BLOOPCL_CLBLAST_XDOT") != NULL, "%s",
              bloopcl_context_last_error(ctx));
    bloopcl_context_destroy(ctx);
}
