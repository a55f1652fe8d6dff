/*
 * bloopcl-train — trains an MLP on Fashion-MNIST with bloopcl combining two losses on the device.
 *
 * The C counterpart of the MLP example of Hsieh et al. (ICML 2024):
 *
 *     model      784 -> 256 -> 128 -> 10, ReLU, parameters W1,b1,W2,b2,W3,b3
 *     main loss  L = mean cross-entropy of softmax(logits)
 *     aux loss   A = log prod_l ||W_l||_2^2 = sum_l 2 log sigma_l   (Lipschitz upper bound)
 *                dA/dW_l = 2 u_l v_l^T / sigma_l   (u_l, v_l: top singular pair, by power
 *                iteration with persistent vectors, a few iterations per step)
 *     update     d = bloopcl(g = dL/dtheta, a = dA/dtheta) in place over g, one segment per
 *                tensor (a = 0 on the biases), then Adam on d.
 *
 * Everything runs on the bloopcl context's device and queue: CLBlast GEMMs for the layers and
 * the small kernels of kTrainSource below for the rest; both gradients stay in cl_mem.
 * The sweep covers methods x lambdas; each run starts from the same initial weights and sees
 * the same batches. Progress goes to stderr, a final table to stdout, rows to --csv.
 * Under an MPI launcher (or --data-parallel) it runs data-parallel with sharded optimizer
 * state: train_data_parallel.h says how; the hooks here are the rows of a batch, the slice of
 * each tensor whose Adam state this process owns (own_offset, own_count), and the exchanges
 * around the bloopcl step.
 */
#include "bloopcl.h"
#include "tool_cli.h"
#include "tool_device.h"
#include "tool_json.h"
#include "tool_time.h"
#include "train_data_parallel.h"

#include <clblast_c.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define PROGRAM "bloopcl-train"
#define NUM_LAYERS 3
#define NUM_TENSORS (2 * NUM_LAYERS)
#define NUM_CLASSES 10
#define IMAGE_SIZE 784
#define MAX_LAMBDAS 32
#define NUM_METHODS 4
#define EVAL_CHUNK 1000

static const int kWidths[NUM_LAYERS + 1] = {IMAGE_SIZE, 256, 128, NUM_CLASSES};

/* ---------------------------------------------------------------------------------------------
 * Device kernels. Row-major throughout: activations are (rows x width), W_l is (in x out) so
 * that Z = X W + b.
 * ------------------------------------------------------------------------------------------- */
static const char kTrainSource[] =
    /* out[r, :] = data[idx[first + r], :] (mini-batch gather), labels likewise. */
    "__kernel void gather(__global const float *data, __global const int *labels,\n"
    "                     __global const int *idx, int first, int width,\n"
    "                     __global float *out, __global int *out_labels) {\n"
    "  int r = get_global_id(1), j = get_global_id(0), src = idx[first + r];\n"
    "  out[r * width + j] = data[src * width + j];\n"
    "  if (j == 0) out_labels[r] = labels[src];\n"
    "}\n"
    /* z[r, j] += b[j]; then z = max(z, 0) if relu. */
    "__kernel void bias_act(__global float *z, __global const float *b, int width, int relu) {\n"
    "  int r = get_global_id(1), j = get_global_id(0);\n"
    "  float v = z[r * width + j] + b[j];\n"
    "  z[r * width + j] = (relu && v < 0.0f) ? 0.0f : v;\n"
    "}\n"
    /* ReLU backward with h = relu(z): dz = dh * [h > 0]. */
    "__kernel void relu_back(__global float *dh, __global const float *h) {\n"
    "  int i = get_global_id(0);\n"
    "  if (!(h[i] > 0.0f)) dh[i] = 0.0f;\n"
    "}\n"
    /* db[j] = sum_r dz[r, j]. */
    "__kernel void colsum(__global const float *dz, int rows, int width, __global float *db) {\n"
    "  int j = get_global_id(0);\n"
    "  float s = 0.0f;\n"
    "  for (int r = 0; r < rows; ++r) s += dz[r * width + j];\n"
    "  db[j] = s;\n"
    "}\n"
    /* Per row: p = softmax(z), loss = logsumexp(z) - z[y], correct = [argmax z == y],
     * dz = (p - onehot(y)) * scale  (scale = 1/B gives the gradient of the mean loss). */
    "__kernel void softmax_xent(__global float *z, __global const int *labels, int first,\n"
    "                           int classes, float scale, __global float *loss,\n"
    "                           __global int *correct) {\n"
    "  int r = get_global_id(0), y = labels[first + r], arg = 0;\n"
    "  __global float *zr = z + r * classes;\n"
    "  float mx = zr[0];\n"
    "  for (int c = 1; c < classes; ++c) if (zr[c] > mx) { mx = zr[c]; arg = c; }\n"
    "  float s = 0.0f;\n"
    "  for (int c = 0; c < classes; ++c) s += exp(zr[c] - mx);\n"
    "  loss[r] = log(s) + mx - zr[y];\n"
    "  correct[r] = (arg == y);\n"
    "  for (int c = 0; c < classes; ++c)\n"
    "    zr[c] = (exp(zr[c] - mx) / s - (c == y ? 1.0f : 0.0f)) * scale;\n"
    "}\n"
    /* y = W x (trans = 0) or y = W^T x (trans = 1), W is (rows x cols) row-major. */
    "__kernel void matvec(__global const float *w, int rows, int cols, int trans,\n"
    "                     __global const float *x, __global float *y) {\n"
    "  int i = get_global_id(0);\n"
    "  float s = 0.0f;\n"
    "  if (trans) { for (int k = 0; k < rows; ++k) s += w[k * cols + i] * x[k]; }\n"
    "  else { for (int k = 0; k < cols; ++k) s += w[i * cols + k] * x[k]; }\n"
    "  y[i] = s;\n"
    "}\n"
    /* norm[slot] = |x|, x <- x / |x| (one work-item: the vectors have <= 784 entries). */
    "__kernel void unit_scale(__global float *x, int n, __global float *norm, int slot) {\n"
    "  float s = 0.0f;\n"
    "  for (int i = 0; i < n; ++i) s += x[i] * x[i];\n"
    "  float nr = sqrt(s), inv = nr > 0.0f ? 1.0f / nr : 0.0f;\n"
    "  for (int i = 0; i < n; ++i) x[i] *= inv;\n"
    "  norm[slot] = nr;\n"
    "}\n"
    /* a[i, j] = 2 u[i] v[j] / sigma: the gradient of log sigma^2 = 2 log(u^T W v). */
    "__kernel void aux_grad(__global const float *u, __global const float *v, int cols,\n"
    "                       __global const float *sigma, int slot, __global float *a) {\n"
    "  int i = get_global_id(1), j = get_global_id(0);\n"
    "  a[i * cols + j] = 2.0f * u[i] * v[j] / sigma[slot];\n"
    "}\n"
    /* Adam step t along d: m = b1 m + (1-b1) d, v = b2 v + (1-b2) d^2,
     * p -= lr (m/c1) / (sqrt(v/c2) + eps), with (c1, c2) = bias[t] = (1 - b1^t, 1 - b2^t).
     * When bloopcl skipped the step (out[OUTPUT_ACCEPTED] = 0: d is 0) nothing is written:
     * stepping along d = 0 would still move p by the momentum and decay m and v (AMP's
     * skipped-step semantics). The decision is read on the device, never on the host.
     * p and d are read from element `base` on (this process's slice of the tensor), m and v
     * hold that slice only. */
    "__kernel void adam(__global float *p, __global const float *d, __global float *m,\n"
    "                   __global float *v, float lr, float b1, float b2, float eps,\n"
    "                   __global const float *out, __global const int *t,\n"
    "                   __global const float2 *bias, int base) {\n"
    "  if (out[OUTPUT_ACCEPTED] == 0.0f) return;\n"
    "  int i = get_global_id(0), k = base + i;\n"
    "  float2 c = bias[t[0]];\n"
    "  float g = d[k];\n"
    "  float mi = b1 * m[i] + (1.0f - b1) * g, vi = b2 * v[i] + (1.0f - b2) * g * g;\n"
    "  m[i] = mi; v[i] = vi;\n"
    "  p[k] -= lr * (mi / c.x) / (sqrt(vi / c.y) + eps);\n"
    "}\n"
    /* t counts the applied steps: one more before the Adam launches of an accepted step. */
    "__kernel void adam_tick(__global int *t, __global const float *out) {\n"
    "  if (out[OUTPUT_ACCEPTED] != 0.0f) t[0] += 1;\n"
    "}\n";

enum kernel_id { K_GATHER, K_BIAS_ACT, K_RELU_BACK, K_COLSUM, K_XENT, K_MATVEC, K_NORMALIZE,
                 K_AUX_GRAD, K_ADAM, K_ADAM_TICK, NUM_KERNELS };
static const char *const kKernelNames[NUM_KERNELS] = {
    "gather", "bias_act", "relu_back", "colsum", "softmax_xent", "matvec", "unit_scale",
    "aux_grad", "adam", "adam_tick"};

/* ---------------------------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------------------------- */
typedef struct options {
    tool_common common;   /* --device, --json, --list, --verbose, BLOOPCL_LOG */
    const char *data_dir, *csv_path;
    size_t train_size, test_size, batch;
    int epochs, power_iters, quick, check, num_lambdas, num_methods;
    int data_parallel; /* running data-parallel (MPI), over `ranks` ranks; else ranks = 1 */
    int own_adam;      /* --optimizer trainer: the trainer's Adam kernel, not bloopcl's fused
                          AdamW (the default) */
    int ranks;
    long inject_step;  /* 0, or the optimizer step whose g gets a NaN (--inject-nonfinite) */
    double lr, bloop_ema, base_ema, min_accuracy;
    double lambdas[MAX_LAMBDAS];
    bloopcl_method methods[NUM_METHODS];
    uint64_t seed;
} options;

static void help(FILE *to)
{
    fprintf(to,
        "Trains an MLP 784-256-128-10 (ReLU) on Fashion-MNIST: main loss cross-entropy, aux\n"
        "loss log prod_l ||W_l||_2^2, combined by each bloopcl method over a lambda grid, then\n"
        "Adam. Forward, backward, power iteration and Adam run on the bloopcl device.\n"
        "The combiner keeps bloopcl's defaults otherwise (eps 1e-7, no rescale, EMA from 0).\n"
        "\n"
        "Options:\n"
        "  --data DIR          IDX .gz files (default /usr/share/datasets/fashion-mnist;\n"
        "                      missing files are an environment error, exit 2)\n"
        "  --train-size N      first N training images (default 10000; 1..60000)\n"
        "  --test-size N       first N test images (default 10000; 1..10000)\n"
        "  --epochs N          epochs per run (default 3)\n"
        "  --batch B           mini-batch size (default 256)\n"
        "  --lr LR             Adam learning rate (default 3e-4)\n"
        "  --optimizer O       fused (default): Adam runs inside bloopcl's step (its AdamW\n"
        "                      with no weight decay, update_parameters: d is never\n"
        "                      written); trainer: the trainer's own Adam kernel after the\n"
        "                      step, reading d (the same losses within fp32 rounding)\n"
        "  --lambdas SPEC      comma list (0.01,0.1) or logspace A:B:N (default -4:0:9)\n"
        "  --methods LIST      comma list of bloop,mixed,pcgrad,dynamic_barrier (default all)\n"
        "  --bloop-ema W       EMA weight of Bloop (default 0.01)\n"
        "  --base-ema W        EMA weight of the baselines (default 1)\n"
        "  --power-iters K     power iterations per step (default 1)\n"
        "  --seed S            initial weights and batch order (default 1)\n"
        "  --min-accuracy A    fail (exit 1) if a method's smallest-lambda run ends below\n"
        "                      this test accuracy (default 0.5)\n"
        "  --csv PATH          write one row per method, lambda and epoch\n"
        "  --check             first compare the device gradients with finite differences\n"
        "  --inject-nonfinite T  put a NaN into g at optimizer step T (1-based) of every run;\n"
        "                      fail unless bloopcl skips it and Adam leaves the parameters,\n"
        "                      its moments and its step count bit-identical, and every\n"
        "                      other step of the run is applied\n"
        "  --data-parallel     data-parallel over MPI, implied when an MPI launcher (mpirun)\n"
        "                      starts the program (a plain run never initialises MPI):\n"
        "                      rank r of R takes part r of every batch (sizes differ by at\n"
        "                      most one row, each weighted 1/B of the whole batch),\n"
        "                      the gradients are summed over the ranks (MPI_Allreduce),\n"
        "                      bloopcl-mpi combines each rank's shard of the flattened\n"
        "                      parameters, Adam updates that shard, the parameters are\n"
        "                      all-gathered. Losses match one process with the same --batch\n"
        "                      within fp32 rounding. Rank 0 writes the table, CSV and JSON.\n"
        "                      %s\n"
        "  --quick             8192 images, 2 epochs, lambdas 1e-4,1e-2,1, all methods,\n"
        "                      --check\n"
        "  --json              stdout is one JSON document: device, settings, results[]\n"
        "                      (method, lambda, ema_weight, losses, accuracy, seconds,\n"
        "                      diverged) and passed; progress stays on stderr\n"
        "\n"
        "Plot: gnuplot -e \"csv='run.csv'; png='pareto.png'\" %s/plot_pareto.gp\n"
        "(tools/plot_pareto.gp in the source tree).\n",
        TRAIN_DP_AVAILABLE ? "Example: mpirun -np 2 bloopcl-train --batch 256"
                           : "Not in this build (no MPI at build time): refused.",
        BLOOPCL_DATADIR);
}

static bool parse_lambda(const char *text, size_t index, void *lambdas)
{
    return tool_parse_double(text, 0.0, 1e6, &((double *)lambdas)[index]);
}

/* "A:B:N" is 10^A .. 10^B in N log-spaced points; otherwise a comma list of values >= 0. */
static int parse_lambdas(const char *text, options *opt)
{
    double a, b;
    int n, used = 0;
    if (sscanf(text, "%lf:%lf:%d%n", &a, &b, &n, &used) == 3 && text[used] == '\0') {
        if (n < 1 || n > MAX_LAMBDAS || !isfinite(a) || !isfinite(b) || a < -30 || b > 30)
            return -1;
        for (int i = 0; i < n; ++i)
            opt->lambdas[i] = pow(10.0, n == 1 ? a : a + (b - a) * i / (n - 1));
        opt->num_lambdas = n;
        return 0;
    }
    size_t count = 0;
    bool ok = tool_split_list(text, MAX_LAMBDAS, &count, parse_lambda, opt->lambdas);
    opt->num_lambdas = (int)count;
    return ok ? 0 : -1;
}

static bool parse_method(const char *name, size_t index, void *methods)
{
    static const struct { const char *name; bloopcl_method method; } table[] = {
        {"bloop", BLOOPCL_METHOD_BLOOP}, {"mixed", BLOOPCL_METHOD_MIXED},
        {"pcgrad", BLOOPCL_METHOD_PCGRAD}, {"dynamic_barrier", BLOOPCL_METHOD_DYNAMIC_BARRIER}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; ++i)
        if (strcmp(name, table[i].name) == 0) {
            ((bloopcl_method *)methods)[index] = table[i].method;
            return true;
        }
    return false;
}

static int parse_methods(const char *text, options *opt)
{
    size_t count = 0;
    bool ok = tool_split_list(text, NUM_METHODS, &count, parse_method, opt->methods);
    opt->num_methods = (int)count;
    return ok ? 0 : -1;
}

static void default_options(options *opt)
{
    *opt = (options){.data_dir = "/usr/share/datasets/fashion-mnist", .train_size = 10000,
                     .test_size = 10000, .batch = 256, .epochs = 3, .power_iters = 1,
                     .lr = 3e-4, .bloop_ema = 0.01, .base_ema = 1.0, .min_accuracy = 0.5,
                     .seed = 1, .ranks = 1};
    parse_lambdas("-4:0:9", opt);
    parse_methods("bloop,mixed,pcgrad,dynamic_barrier", opt);
}

/* --quick sets its values first so that explicit options given with it still win. */
static void apply_quick(int argc, char **argv, options *opt)
{
    for (int i = 1; i < argc; ++i)
        if (strcmp(argv[i], "--quick") == 0) {
            opt->quick = 1;
            opt->check = 1;
            opt->train_size = 8192;
            opt->epochs = 2;
            parse_lambdas("1e-4,1e-2,1", opt);
        }
}

/* Applies option `c` (its short letter); returns false if its value is out of range. */
static bool parse_one(int c, const char *arg, options *opt)
{
    unsigned long long n = 0;
    bool ok = true;
    switch (c) {
    case 'D': opt->data_dir = arg; break;
    case 'c': opt->csv_path = arg; break;
    case 'q': break;   /* applied first, by apply_quick */
    case 'g': opt->check = 1; break;
    case 'P': ok = TRAIN_DP_AVAILABLE; break;   /* applied first, by main (MPI_Init) */
    case 'n': ok = tool_parse_unsigned(arg, 1, 60000, &n), opt->train_size = (size_t)n; break;
    case 't': ok = tool_parse_unsigned(arg, 1, 10000, &n), opt->test_size = (size_t)n; break;
    case 'b': ok = tool_parse_unsigned(arg, 1, 8192, &n), opt->batch = (size_t)n; break;
    case 'e': ok = tool_parse_unsigned(arg, 1, 1000, &n), opt->epochs = (int)n; break;
    case 'p': ok = tool_parse_unsigned(arg, 1, 100, &n), opt->power_iters = (int)n; break;
    case 's': ok = tool_parse_unsigned(arg, 0, UINT64_MAX, &n), opt->seed = n; break;
    case 'i': ok = tool_parse_unsigned(arg, 1, 100000000, &n), opt->inject_step = (long)n; break;
    case 'r': ok = tool_parse_double(arg, 1e-12, 10.0, &opt->lr); break;
    case 'w': ok = tool_parse_double(arg, 1e-9, 1.0, &opt->bloop_ema); break;
    case 'W': ok = tool_parse_double(arg, 1e-9, 1.0, &opt->base_ema); break;
    case 'a': ok = tool_parse_double(arg, 0.0, 1.0, &opt->min_accuracy); break;
    case 'o':
        ok = strcmp(arg, "fused") == 0 || strcmp(arg, "trainer") == 0;
        opt->own_adam = strcmp(arg, "trainer") == 0;
        break;
    case 'l': ok = parse_lambdas(arg, opt) == 0; break;
    default: ok = parse_methods(arg, opt) == 0; break;   /* 'm' */
    }
    return ok;
}

static const tool_option TRAIN_OPTIONS[] = {
    {"data", true, 'D'},         {"csv", true, 'c'},          {"quick", false, 'q'},
    {"train-size", true, 'n'},   {"test-size", true, 't'},    {"batch", true, 'b'},
    {"epochs", true, 'e'},       {"power-iters", true, 'p'},  {"seed", true, 's'},
    {"lr", true, 'r'},           {"bloop-ema", true, 'w'},    {"base-ema", true, 'W'},
    {"lambdas", true, 'l'},      {"methods", true, 'm'},      {"min-accuracy", true, 'a'},
    {"check", false, 'g'},       {"inject-nonfinite", true, 'i'},
    {"data-parallel", false, 'P'},  {"optimizer", true, 'o'},
};
#define NUM_TRAIN_OPTIONS (sizeof TRAIN_OPTIONS / sizeof TRAIN_OPTIONS[0])

static const tool_spec TRAIN_TOOL;

static bool apply_option(int id, const char *value, void *user)
{
    if (parse_one(id, value, user))
        return true;
    if (id == 'P')
        return tool_usage_error(&TRAIN_TOOL, "--data-parallel: this bloopcl-train was built "
                                "without MPI");
    const char *name = "";
    for (size_t k = 0; k < NUM_TRAIN_OPTIONS; ++k)
        if (TRAIN_OPTIONS[k].id == id)
            name = TRAIN_OPTIONS[k].name;
    return tool_usage_error(&TRAIN_TOOL, "invalid value for --%s: \"%s\"", name, value);
}

/* The options that bound each other. */
static bool check_options(void *user)
{
    const options *opt = user;
    if (opt->batch > opt->train_size)
        return tool_usage_error(&TRAIN_TOOL, "--batch %zu exceeds --train-size %zu", opt->batch,
                                opt->train_size);
    if (opt->batch < (size_t)opt->ranks)
        return tool_usage_error(&TRAIN_TOOL, "--batch %zu: each of the %d ranks needs a row",
                                opt->batch, opt->ranks);
    long steps = (long)opt->epochs * (long)(opt->train_size / opt->batch);
    if (opt->inject_step > steps)
        return tool_usage_error(&TRAIN_TOOL, "--inject-nonfinite %ld: a run has only %ld steps",
                                opt->inject_step, steps);
    return true;
}

static const tool_spec TRAIN_TOOL = {
    .name = PROGRAM,
    .usage = "usage: bloopcl-train [--quick] [--data DIR] [--train-size N] [--test-size N]\n"
             "                     [--epochs N] [--batch B] [--lambdas SPEC] [--methods LIST]\n"
             "                     [--csv PATH] [--json] [--device SPEC] [options below]\n",
    .failure = "the training failed (OpenCL, divergence, accuracy below --min-accuracy, a\n"
               "gradient or skipped-step check)",
    .schema = "bloopcl-train/1",
    .help = help,
    .options = TRAIN_OPTIONS,
    .num_options = NUM_TRAIN_OPTIONS,
    .apply = apply_option,
    .check = check_options,
};

/* ---------------------------------------------------------------------------------------------
 * Fashion-MNIST (IDX files, gzip-compressed)
 * ------------------------------------------------------------------------------------------- */
typedef struct dataset {
    size_t count;
    float *images; /* count x 784, (pixel/255 - mean) / std */
    int *labels;   /* count */
} dataset;

static int read_exact(gzFile f, void *buf, size_t bytes, const char *path)
{
    unsigned char *p = buf;
    while (bytes > 0) {
        unsigned chunk = bytes > (1u << 30) ? (1u << 30) : (unsigned)bytes;
        int got = gzread(f, p, chunk);
        if (got <= 0) {
            fprintf(stderr, "%s: %s: truncated or unreadable\n", PROGRAM, path);
            return -1;
        }
        p += got;
        bytes -= (size_t)got;
    }
    return 0;
}

/* Reads the big-endian header magic, dims[] and then `want` items of item_bytes each. */
static unsigned char *read_idx(const char *dir, const char *name, uint32_t magic, int ndims,
                               size_t want, size_t item_bytes)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gzFile f = gzopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot open %s (install dataset-fashion-mnist or use --data)\n",
                PROGRAM, path);
        return NULL;
    }
    unsigned char head[16], *data = NULL;
    int ok = read_exact(f, head, 4 + 4 * (size_t)ndims, path) == 0;
    uint32_t got = ok ? ((uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 |
                         (uint32_t)head[2] << 8 | head[3]) : 0;
    uint32_t count = ok ? ((uint32_t)head[4] << 24 | (uint32_t)head[5] << 16 |
                           (uint32_t)head[6] << 8 | head[7]) : 0;
    if (ok && (got != magic || count < want)) {
        fprintf(stderr, "%s: %s: not an IDX file with %zu items\n", PROGRAM, path, want);
        ok = 0;
    }
    if (ok && (data = malloc(want * item_bytes)) == NULL)
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
    if (data && read_exact(f, data, want * item_bytes, path) != 0) {
        free(data);
        data = NULL;
    }
    gzclose(f);
    return data;
}

static void free_dataset(dataset *ds)
{
    free(ds->images);
    free(ds->labels);
    ds->images = NULL;
    ds->labels = NULL;
}

/* Pixels are standardised with the Fashion-MNIST training mean 0.2860 and std 0.3530. */
static int load_dataset(const char *dir, const char *prefix, size_t count, dataset *ds)
{
    char images_name[64], labels_name[64];
    snprintf(images_name, sizeof images_name, "%s-images-idx3-ubyte.gz", prefix);
    snprintf(labels_name, sizeof labels_name, "%s-labels-idx1-ubyte.gz", prefix);
    unsigned char *pix = read_idx(dir, images_name, 2051, 3, count, IMAGE_SIZE);
    unsigned char *lab = pix ? read_idx(dir, labels_name, 2049, 1, count, 1) : NULL;
    ds->count = count;
    ds->images = malloc(count * IMAGE_SIZE * sizeof(float));
    ds->labels = malloc(count * sizeof(int));
    int ok = pix && lab && ds->images && ds->labels;
    for (size_t i = 0; ok && i < count * IMAGE_SIZE; ++i)
        ds->images[i] = ((float)pix[i] / 255.0f - 0.2860f) / 0.3530f;
    for (size_t i = 0; ok && i < count; ++i)
        ok = lab[i] < NUM_CLASSES ? (ds->labels[i] = lab[i], 1) : 0;
    free(pix);
    free(lab);
    if (!ok)
        free_dataset(ds);
    return ok ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * Host random numbers (splitmix64): weights, power-iteration starts, batch order.
 * ------------------------------------------------------------------------------------------- */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [-1, 1). */
static float uniform_pm1(uint64_t *state)
{
    return (float)((double)(splitmix64(state) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
}

/* Fisher-Yates permutation of 0..n-1. */
static void permutation(uint64_t seed, int *perm, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        perm[i] = (int)i;
    for (size_t i = n; i > 1; --i) {
        size_t j = (size_t)(splitmix64(&seed) % i);
        int t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Trainer: device buffers and kernels
 * ------------------------------------------------------------------------------------------- */
typedef struct trainer {
    bloopcl_context *ctx;
    cl_context cl;
    cl_command_queue queue;
    cl_device_id device;
    cl_program program;
    cl_kernel k[NUM_KERNELS];
    size_t rows;                   /* capacity of the activation buffers */
    size_t tensor_size[NUM_TENSORS];
    /* tensor t: W_l for t = 2l (in x out), b_l for t = 2l+1 */
    cl_mem param[NUM_TENSORS], grad[NUM_TENSORS], aux[NUM_TENSORS];
    /* The slice of each tensor whose optimizer state this process owns: elements
     * [own_offset, own_offset + own_count) (the whole tensor unless data-parallel). The
     * combiner and the Adam moments cover exactly these slices. */
    size_t own_offset[NUM_TENSORS], own_count[NUM_TENSORS];
    cl_mem adam_m[NUM_TENSORS], adam_v[NUM_TENSORS]; /* own_count floats each (NULL if 0) */
    cl_mem adam_t;                 /* int: Adam steps applied in this run */
    cl_mem adam_bias;              /* float2 per t: (1 - b1^t, 1 - b2^t), t = 0 .. max steps */
    cl_mem act[NUM_LAYERS + 1];    /* act[0]: input batch, act[l]: output of layer l */
    cl_mem dact[NUM_LAYERS + 1];   /* gradients w.r.t. act[l] (dact[0] unused) */
    cl_mem u[NUM_LAYERS], v[NUM_LAYERS], tmp_u[NUM_LAYERS], tmp_v[NUM_LAYERS], sigma;
    cl_mem train_x, train_y, test_x, test_y, perm, batch_y, loss, correct;
    float *init_param[NUM_TENSORS]; /* host copy of the initial weights (same for all runs) */
    float *init_u[NUM_LAYERS], *init_v[NUM_LAYERS];
    size_t train_count, test_count;
    train_dp *dp;                  /* NULL: a single process */
} trainer;

static int cl_check(cl_int err, const char *what)
{
    if (err == CL_SUCCESS)
        return 0;
    fprintf(stderr, "%s: %s failed (OpenCL error %d)\n", PROGRAM, what, (int)err);
    return -1;
}

static int blast_check(CLBlastStatusCode code, const char *what)
{
    if (code == CLBlastSuccess)
        return 0;
    fprintf(stderr, "%s: %s failed (CLBlast status %d)\n", PROGRAM, what, (int)code);
    return -1;
}

static cl_mem make_buffer(trainer *tr, size_t bytes, const void *init)
{
    cl_int err;
    cl_mem m = clCreateBuffer(tr->cl, CL_MEM_READ_WRITE | (init ? CL_MEM_COPY_HOST_PTR : 0),
                              bytes, (void *)(uintptr_t)init, &err);
    if (cl_check(err, "clCreateBuffer") != 0)
        return NULL;
    return m;
}

static int build_kernels(trainer *tr)
{
    const char *src = kTrainSource;
    cl_int err;
    tr->program = clCreateProgramWithSource(tr->cl, 1, &src, NULL, &err);
    if (cl_check(err, "clCreateProgramWithSource") != 0)
        return -1;
    char build_options[64];
    snprintf(build_options, sizeof build_options, "-cl-std=CL1.2 -DOUTPUT_ACCEPTED=%d",
             (int)BLOOPCL_OUTPUT_ACCEPTED);
    err = clBuildProgram(tr->program, 1, &tr->device, build_options, NULL, NULL);
    if (err != CL_SUCCESS) {
        char log[4096] = "";
        clGetProgramBuildInfo(tr->program, tr->device, CL_PROGRAM_BUILD_LOG, sizeof log - 1,
                              log, NULL);
        fprintf(stderr, "%s: kernel build failed:\n%s\n", PROGRAM, log);
        return -1;
    }
    for (int i = 0; i < NUM_KERNELS; ++i) {
        tr->k[i] = clCreateKernel(tr->program, kKernelNames[i], &err);
        if (cl_check(err, kKernelNames[i]) != 0)
            return -1;
    }
    return 0;
}

typedef struct karg {
    size_t size;
    const void *value;
} karg;
#define KARG(x) {sizeof(x), &(x)}

/* Sets the arguments and enqueues kernel `id` over gx (x gy when gy > 0) work-items. */
static int launch(trainer *tr, int id, size_t gx, size_t gy, const karg *args, size_t nargs)
{
    for (size_t i = 0; i < nargs; ++i)
        if (cl_check(clSetKernelArg(tr->k[id], (cl_uint)i, args[i].size, args[i].value),
                     kKernelNames[id]) != 0)
            return -1;
    size_t global[2] = {gx, gy};
    return cl_check(clEnqueueNDRangeKernel(tr->queue, tr->k[id], gy ? 2 : 1, NULL, global, NULL,
                                           0, NULL, NULL), kKernelNames[id]);
}

/* He-uniform weights W ~ U(-sqrt(6/in), sqrt(6/in)), zero biases; random unit u, v. */
static int make_initial_values(trainer *tr, uint64_t seed)
{
    uint64_t state = seed * 0x2545F4914F6CDD1Dull + 7;
    for (int l = 0; l < NUM_LAYERS; ++l) {
        size_t in = (size_t)kWidths[l], out = (size_t)kWidths[l + 1];
        tr->tensor_size[2 * l] = in * out;
        tr->tensor_size[2 * l + 1] = out;
        tr->init_param[2 * l] = malloc(in * out * sizeof(float));
        tr->init_param[2 * l + 1] = calloc(out, sizeof(float));
        tr->init_u[l] = malloc(in * sizeof(float));
        tr->init_v[l] = malloc(out * sizeof(float));
        if (!tr->init_param[2 * l] || !tr->init_param[2 * l + 1] || !tr->init_u[l] ||
            !tr->init_v[l])
            return -1;
        float bound = sqrtf(6.0f / (float)in);
        for (size_t i = 0; i < in * out; ++i)
            tr->init_param[2 * l][i] = bound * uniform_pm1(&state);
        for (size_t i = 0; i < in; ++i)
            tr->init_u[l][i] = uniform_pm1(&state);
        for (size_t i = 0; i < out; ++i)
            tr->init_v[l][i] = uniform_pm1(&state);
    }
    return 0;
}

static int alloc_tensors(trainer *tr)
{
    for (int t = 0; t < NUM_TENSORS; ++t) {
        size_t bytes = tr->tensor_size[t] * sizeof(float);
        float *zeros = calloc(tr->tensor_size[t], sizeof(float));
        int ok = zeros != NULL;
        ok = ok && (tr->param[t] = make_buffer(tr, bytes, NULL)) != NULL;
        ok = ok && (tr->grad[t] = make_buffer(tr, bytes, NULL)) != NULL;
        ok = ok && (tr->aux[t] = make_buffer(tr, bytes, zeros)) != NULL; /* biases: a = 0 */
        size_t own = tr->own_count[t] * sizeof(float);
        ok = ok && (!own || (tr->adam_m[t] = make_buffer(tr, own, NULL)) != NULL);
        ok = ok && (!own || (tr->adam_v[t] = make_buffer(tr, own, NULL)) != NULL);
        free(zeros);
        if (!ok)
            return -1;
    }
    return 0;
}

#define ADAM_BETA1 0.9
#define ADAM_BETA2 0.999

/* The Adam step counter and its bias-correction table for up to `steps` steps, computed in
 * double on the host and rounded to float once (the factors the host used to pass). */
static int alloc_adam(trainer *tr, long steps)
{
    size_t entries = (size_t)steps + 1;
    float *bias = malloc(2 * entries * sizeof *bias);
    cl_int zero = 0;
    for (size_t t = 0; bias != NULL && t < entries; ++t) {
        bias[2 * t] = (float)(1.0 - pow(ADAM_BETA1, (double)t));
        bias[2 * t + 1] = (float)(1.0 - pow(ADAM_BETA2, (double)t));
    }
    int ok = bias && (tr->adam_bias = make_buffer(tr, 2 * entries * sizeof *bias, bias)) &&
             (tr->adam_t = make_buffer(tr, sizeof zero, &zero));
    free(bias);
    return ok ? 0 : -1;
}

static int alloc_work(trainer *tr)
{
    for (int l = 0; l <= NUM_LAYERS; ++l) {
        size_t bytes = tr->rows * (size_t)kWidths[l] * sizeof(float);
        if (!(tr->act[l] = make_buffer(tr, bytes, NULL)) ||
            !(tr->dact[l] = make_buffer(tr, bytes, NULL)))
            return -1;
    }
    for (int l = 0; l < NUM_LAYERS; ++l) {
        size_t in = (size_t)kWidths[l] * sizeof(float);
        size_t out = (size_t)kWidths[l + 1] * sizeof(float);
        if (!(tr->u[l] = make_buffer(tr, in, NULL)) || !(tr->v[l] = make_buffer(tr, out, NULL)) ||
            !(tr->tmp_u[l] = make_buffer(tr, in, NULL)) ||
            !(tr->tmp_v[l] = make_buffer(tr, out, NULL)))
            return -1;
    }
    return (tr->sigma = make_buffer(tr, 2 * NUM_LAYERS * sizeof(float), NULL)) &&
                   (tr->batch_y = make_buffer(tr, tr->rows * sizeof(int), NULL)) &&
                   (tr->loss = make_buffer(tr, tr->rows * sizeof(float), NULL)) &&
                   (tr->correct = make_buffer(tr, tr->rows * sizeof(int), NULL))
               ? 0 : -1;
}

static int upload_data(trainer *tr, const dataset *train, const dataset *test)
{
    tr->train_count = train->count;
    tr->test_count = test->count;
    size_t image_bytes = IMAGE_SIZE * sizeof(float);
    return (tr->train_x = make_buffer(tr, train->count * image_bytes, train->images)) &&
                   (tr->train_y = make_buffer(tr, train->count * sizeof(int), train->labels)) &&
                   (tr->test_x = make_buffer(tr, test->count * image_bytes, test->images)) &&
                   (tr->test_y = make_buffer(tr, test->count * sizeof(int), test->labels)) &&
                   (tr->perm = make_buffer(tr, train->count * sizeof(int), NULL))
               ? 0 : -1;
}

static void release_mems(cl_mem *mems, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if (mems[i])
            clReleaseMemObject(mems[i]);
}

static void trainer_destroy(trainer *tr)
{
    if (tr->queue)
        clFinish(tr->queue);
    cl_mem *groups[] = {tr->param, tr->grad, tr->aux, tr->adam_m, tr->adam_v};
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; ++g)
        release_mems(groups[g], NUM_TENSORS);
    release_mems(tr->act, NUM_LAYERS + 1);
    release_mems(tr->dact, NUM_LAYERS + 1);
    cl_mem *vecs[] = {tr->u, tr->v, tr->tmp_u, tr->tmp_v};
    for (size_t g = 0; g < sizeof vecs / sizeof vecs[0]; ++g)
        release_mems(vecs[g], NUM_LAYERS);
    cl_mem singles[] = {tr->sigma, tr->train_x, tr->train_y, tr->test_x, tr->test_y, tr->perm,
                        tr->batch_y, tr->loss, tr->correct, tr->adam_t, tr->adam_bias};
    release_mems(singles, sizeof singles / sizeof singles[0]);
    for (int i = 0; i < NUM_KERNELS; ++i)
        if (tr->k[i])
            clReleaseKernel(tr->k[i]);
    if (tr->program)
        clReleaseProgram(tr->program);
    for (int t = 0; t < NUM_TENSORS; ++t)
        free(tr->init_param[t]);
    for (int l = 0; l < NUM_LAYERS; ++l)
        free(tr->init_u[l]), free(tr->init_v[l]);
}

static int trainer_init(trainer *tr, bloopcl_context *ctx, train_dp *dp, const options *opt,
                        const dataset *train, const dataset *test)
{
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    memset(tr, 0, sizeof *tr);
    tr->ctx = ctx;
    tr->dp = dp;
    tr->cl = bloopcl_context_cl_context(ctx);
    tr->queue = bloopcl_context_queue(ctx);
    if (bloopcl_context_device_info(ctx, &info) != BLOOPCL_OK)
        return -1;
    tr->device = info.device;
    tr->rows = opt->batch > EVAL_CHUNK ? opt->batch : EVAL_CHUNK;
    long steps = (long)opt->epochs * (long)(train->count / opt->batch);
    if (build_kernels(tr) != 0 || make_initial_values(tr, opt->seed) != 0 ||
        train_dp_plan(dp, tr->tensor_size, NUM_TENSORS, tr->own_offset, tr->own_count) != 0 ||
        alloc_tensors(tr) != 0 || alloc_adam(tr, steps) != 0 || alloc_work(tr) != 0 ||
        upload_data(tr, train, test) != 0) {
        fprintf(stderr, "%s: could not set up the trainer on the device\n", PROGRAM);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Forward and backward passes
 * ------------------------------------------------------------------------------------------- */

/* C (m x n) = alpha op(A) op(B) + beta C, row-major, offsets in elements. */
static int gemm(trainer *tr, int ta, int tb, size_t m, size_t n, size_t k, cl_mem a,
                size_t a_off, size_t lda, cl_mem b, size_t ldb, cl_mem c, size_t ldc)
{
    return blast_check(CLBlastSgemm(CLBlastLayoutRowMajor,
                                    ta ? CLBlastTransposeYes : CLBlastTransposeNo,
                                    tb ? CLBlastTransposeYes : CLBlastTransposeNo, m, n, k, 1.0f,
                                    a, a_off, lda, b, 0, ldb, 0.0f, c, 0, ldc, &tr->queue, NULL),
                       "CLBlastSgemm");
}

/* act[l+1] = act(act[l] W_l + b_l) for `rows` rows; layer 0 reads `input` at row `first`. */
static int forward(trainer *tr, cl_mem input, size_t first, size_t rows)
{
    for (int l = 0; l < NUM_LAYERS; ++l) {
        cl_int in = kWidths[l], out = kWidths[l + 1], relu = l + 1 < NUM_LAYERS;
        cl_mem x = l == 0 ? input : tr->act[l];
        size_t off = l == 0 ? first * IMAGE_SIZE : 0;
        if (gemm(tr, 0, 0, rows, (size_t)out, (size_t)in, x, off, (size_t)in, tr->param[2 * l],
                 (size_t)out, tr->act[l + 1], (size_t)out) != 0)
            return -1;
        karg args[] = {KARG(tr->act[l + 1]), KARG(tr->param[2 * l + 1]), KARG(out), KARG(relu)};
        if (launch(tr, K_BIAS_ACT, (size_t)out, rows, args, 4) != 0)
            return -1;
    }
    return 0;
}

/* Cross-entropy on the logits in act[L]: loss[r], correct[r], and logits <- scale dL/dlogits. */
static int cross_entropy(trainer *tr, cl_mem labels, size_t first, size_t rows, float scale)
{
    cl_int classes = NUM_CLASSES, off = (cl_int)first;
    karg args[] = {KARG(tr->act[NUM_LAYERS]), KARG(labels), KARG(off), KARG(classes),
                   KARG(scale), KARG(tr->loss), KARG(tr->correct)};
    return launch(tr, K_XENT, rows, 0, args, 7);
}

/* With dZ_l the gradient at layer l's pre-activation (in place in act[l+1] for the last layer,
 * dact[l+1] otherwise): dW_l = X_l^T dZ_l, db_l = sum_rows dZ_l, dX_l = dZ_l W_l^T, and
 * dZ_{l-1} = dX_l * [X_l > 0]. */
static int backward(trainer *tr, size_t rows)
{
    for (int l = NUM_LAYERS - 1; l >= 0; --l) {
        cl_int in = kWidths[l], out = kWidths[l + 1], r = (cl_int)rows;
        cl_mem dz = l == NUM_LAYERS - 1 ? tr->act[NUM_LAYERS] : tr->dact[l + 1];
        if (gemm(tr, 1, 0, (size_t)in, (size_t)out, rows, tr->act[l], 0, (size_t)in, dz,
                 (size_t)out, tr->grad[2 * l], (size_t)out) != 0)
            return -1;
        karg cs[] = {KARG(dz), KARG(r), KARG(out), KARG(tr->grad[2 * l + 1])};
        if (launch(tr, K_COLSUM, (size_t)out, 0, cs, 4) != 0)
            return -1;
        if (l == 0)
            break;
        if (gemm(tr, 0, 1, rows, (size_t)in, (size_t)out, dz, 0, (size_t)out, tr->param[2 * l],
                 (size_t)out, tr->dact[l], (size_t)in) != 0)
            return -1;
        karg rb[] = {KARG(tr->dact[l]), KARG(tr->act[l])};
        if (launch(tr, K_RELU_BACK, rows * (size_t)in, 0, rb, 2) != 0)
            return -1;
    }
    return 0;
}

/* One power iteration on W_l (in x out): u = W v / |W v|, v = W^T u / |W^T u|; then
 * sigma_l = |W^T u| (stored in sigma[l]). */
static int power_iteration(trainer *tr, int l)
{
    cl_int in = kWidths[l], out = kWidths[l + 1], no = 0, yes = 1, slot_u = NUM_LAYERS + l,
           slot_v = l;
    karg mv1[] = {KARG(tr->param[2 * l]), KARG(in), KARG(out), KARG(no), KARG(tr->v[l]),
                  KARG(tr->u[l])};
    karg n1[] = {KARG(tr->u[l]), KARG(in), KARG(tr->sigma), KARG(slot_u)};
    karg mv2[] = {KARG(tr->param[2 * l]), KARG(in), KARG(out), KARG(yes), KARG(tr->u[l]),
                  KARG(tr->v[l])};
    karg n2[] = {KARG(tr->v[l]), KARG(out), KARG(tr->sigma), KARG(slot_v)};
    if (launch(tr, K_MATVEC, (size_t)in, 0, mv1, 6) != 0 ||
        launch(tr, K_NORMALIZE, 1, 0, n1, 4) != 0 ||
        launch(tr, K_MATVEC, (size_t)out, 0, mv2, 6) != 0)
        return -1;
    return launch(tr, K_NORMALIZE, 1, 0, n2, 4);
}

/* aux[W_l] = d/dW_l sum_k log sigma_k^2 = 2 u_l v_l^T / sigma_l (aux[b_l] stays 0). */
static int aux_gradient(trainer *tr, int iterations)
{
    for (int l = 0; l < NUM_LAYERS; ++l) {
        for (int i = 0; i < iterations; ++i)
            if (power_iteration(tr, l) != 0)
                return -1;
        cl_int out = kWidths[l + 1], slot = l;
        karg args[] = {KARG(tr->u[l]), KARG(tr->v[l]), KARG(out), KARG(tr->sigma), KARG(slot),
                       KARG(tr->aux[2 * l])};
        if (launch(tr, K_AUX_GRAD, (size_t)out, (size_t)kWidths[l], args, 6) != 0)
            return -1;
    }
    return 0;
}

/* Adam on the own slice of every tensor along d (held in grad[]), or nothing where bloopcl's
 * output buffer `outputs` says the step was skipped: the counter and the kernels read it on
 * the device. */
static int adam_step(trainer *tr, const options *opt, cl_mem outputs)
{
    float lr = (float)opt->lr, b1 = (float)ADAM_BETA1, b2 = (float)ADAM_BETA2, eps = 1e-8f;
    karg tick[] = {KARG(tr->adam_t), KARG(outputs)};
    if (launch(tr, K_ADAM_TICK, 1, 0, tick, 2) != 0)
        return -1;
    for (int k = 0; k < NUM_TENSORS; ++k) {
        cl_int base = (cl_int)tr->own_offset[k];
        karg args[] = {KARG(tr->param[k]), KARG(tr->grad[k]), KARG(tr->adam_m[k]),
                       KARG(tr->adam_v[k]), KARG(lr), KARG(b1), KARG(b2), KARG(eps),
                       KARG(outputs), KARG(tr->adam_t), KARG(tr->adam_bias), KARG(base)};
        if (tr->own_count[k] > 0 && launch(tr, K_ADAM, tr->own_count[k], 0, args, 12) != 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * One run: reset, epochs of steps, evaluation
 * ------------------------------------------------------------------------------------------- */
typedef struct eval_result {
    double loss, accuracy;
} eval_result;

typedef struct run_result {
    bloopcl_method method;
    double lambda, ema_weight;
    double train_loss, test_loss, test_accuracy, aux_loss, seconds;
    int diverged;
} run_result;

static int write_buffer(trainer *tr, cl_mem m, const void *host, size_t bytes)
{
    return cl_check(clEnqueueWriteBuffer(tr->queue, m, CL_TRUE, 0, bytes, host, 0, NULL, NULL),
                    "clEnqueueWriteBuffer");
}

/* Same initial weights, zero Adam moments and step count and the same power-iteration start
 * for every run. */
static int reset_run(trainer *tr)
{
    cl_int zero_steps = 0;
    if (write_buffer(tr, tr->adam_t, &zero_steps, sizeof zero_steps) != 0)
        return -1;
    for (int t = 0; t < NUM_TENSORS; ++t) {
        size_t bytes = tr->tensor_size[t] * sizeof(float);
        size_t own = tr->own_count[t] * sizeof(float);
        float zero = 0.0f;
        if (write_buffer(tr, tr->param[t], tr->init_param[t], bytes) != 0 ||
            (own && cl_check(clEnqueueFillBuffer(tr->queue, tr->adam_m[t], &zero, sizeof zero,
                                                 0, own, 0, NULL, NULL), "clEnqueueFillBuffer")) ||
            (own && cl_check(clEnqueueFillBuffer(tr->queue, tr->adam_v[t], &zero, sizeof zero,
                                                 0, own, 0, NULL, NULL), "clEnqueueFillBuffer")))
            return -1;
    }
    for (int l = 0; l < NUM_LAYERS; ++l)
        if (write_buffer(tr, tr->u[l], tr->init_u[l], (size_t)kWidths[l] * sizeof(float)) != 0 ||
            write_buffer(tr, tr->v[l], tr->init_v[l], (size_t)kWidths[l + 1] * sizeof(float)) != 0)
            return -1;
    return 0;
}

/* Mean loss and accuracy over `count` rows of (x, y), EVAL_CHUNK rows at a time. */
static int evaluate(trainer *tr, cl_mem x, cl_mem y, size_t count, eval_result *out)
{
    static float loss[EVAL_CHUNK];
    static int correct[EVAL_CHUNK];
    double sum_loss = 0.0, sum_correct = 0.0;
    for (size_t first = 0; first < count; first += EVAL_CHUNK) {
        size_t rows = count - first < EVAL_CHUNK ? count - first : EVAL_CHUNK;
        int ok = forward(tr, x, first, rows) == 0 &&
                 cross_entropy(tr, y, first, rows, 0.0f) == 0 &&
                 cl_check(clEnqueueReadBuffer(tr->queue, tr->loss, CL_TRUE, 0, rows * 4, loss,
                                              0, NULL, NULL), "read loss") == 0 &&
                 cl_check(clEnqueueReadBuffer(tr->queue, tr->correct, CL_TRUE, 0, rows * 4,
                                              correct, 0, NULL, NULL), "read accuracy") == 0;
        if (!ok)
            return -1;
        for (size_t r = 0; r < rows; ++r)
            sum_loss += loss[r], sum_correct += correct[r];
    }
    out->loss = sum_loss / (double)count;
    out->accuracy = sum_correct / (double)count;
    return 0;
}

/* aux = sum_l log sigma_l^2, after `iterations` extra power iterations per layer. */
static int aux_loss(trainer *tr, int iterations, double *out)
{
    float sigma[2 * NUM_LAYERS];
    for (int l = 0; l < NUM_LAYERS; ++l)
        for (int i = 0; i < iterations; ++i)
            if (power_iteration(tr, l) != 0)
                return -1;
    if (cl_check(clEnqueueReadBuffer(tr->queue, tr->sigma, CL_TRUE, 0, sizeof sigma, sigma, 0,
                                     NULL, NULL), "read sigma") != 0)
        return -1;
    *out = 0.0;
    for (int l = 0; l < NUM_LAYERS; ++l)
        *out += 2.0 * log((double)sigma[l]);
    return 0;
}

/* One segment per tensor over the given buffers: its own slice (empty when it has none). */
static void make_tensor(const trainer *tr, cl_mem *bufs, bloopcl_segment *segs,
                        bloopcl_tensor *t)
{
    for (int k = 0; k < NUM_TENSORS; ++k)
        segs[k] = (bloopcl_segment){.buffer = bufs[k],
                                    .offset_bytes = tr->own_offset[k] * sizeof(float),
                                    .count = tr->own_count[k], .dtype = BLOOPCL_DTYPE_F32};
    *t = (bloopcl_tensor){segs, NUM_TENSORS};
}

/* g[0] <- NaN, as an overflowing loss would leave it (--inject-nonfinite). */
static int inject_nonfinite(trainer *tr)
{
    const float nan_value = NAN;
    return cl_check(clEnqueueFillBuffer(tr->queue, tr->grad[0], &nan_value, sizeof nan_value, 0,
                                        sizeof nan_value, 0, NULL, NULL), "clEnqueueFillBuffer");
}

/* gather batch -> forward -> cross-entropy -> backward (g) -> aux gradient (a)
 * -> bloopcl: d = combine(g, a) in place over g -> Adam on d unless bloopcl skipped.
 * Data-parallel: this rank's rows of the batch only, each weighted 1/B of the global batch;
 * g summed over the ranks before the step, which runs on the own slices; the parameters
 * gathered after Adam. */
static int train_step(trainer *tr, bloopcl_combiner *comb, const options *opt, size_t first,
                      long t)
{
    size_t lo, rows;
    train_dp_rows(tr->dp, opt->batch, &lo, &rows);
    cl_int width = IMAGE_SIZE, off = (cl_int)(first + lo);
    karg ga[] = {KARG(tr->train_x), KARG(tr->train_y), KARG(tr->perm), KARG(off), KARG(width),
                 KARG(tr->act[0]), KARG(tr->batch_y)};
    int rc = launch(tr, K_GATHER, IMAGE_SIZE, rows, ga, 7);
    bloopcl_segment gs[NUM_TENSORS], as[NUM_TENSORS];
    bloopcl_tensor g, a;
    make_tensor(tr, tr->grad, gs, &g);
    make_tensor(tr, tr->aux, as, &a);
    if (rc != 0 || forward(tr, tr->act[0], 0, rows) != 0 ||
        cross_entropy(tr, tr->batch_y, 0, rows, 1.0f / (float)opt->batch) != 0 ||
        backward(tr, rows) != 0 || aux_gradient(tr, opt->power_iters) != 0 ||
        (t == opt->inject_step && inject_nonfinite(tr) != 0) ||
        train_dp_sum_gradients(tr->dp, tr->queue, tr->grad) != 0)
        return -1;
    /* fused: the parameters take d's place and bloopcl's AdamW updates them in pass 2;
     * else d overwrites g and the trainer's Adam follows */
    bloopcl_segment ps[NUM_TENSORS];
    bloopcl_tensor params;
    make_tensor(tr, tr->param, ps, &params);
    bloopcl_step_options step_options = BLOOPCL_STEP_OPTIONS_INIT;
    step_options.update_parameters = !opt->own_adam;
    cl_mem outputs = NULL;
    bloopcl_status st = train_dp_step(tr->dp, comb, &g, &a, opt->own_adam ? &g : &params,
                                      &step_options);
    if (st == BLOOPCL_OK)
        st = bloopcl_combiner_outputs(comb, &outputs);
    if (st != BLOOPCL_OK) {
        if (tr->dp == NULL)  /* train_dp_step reports its own failures */
            fprintf(stderr, "%s: bloopcl_step: %s: %s\n", PROGRAM, bloopcl_status_string(st),
                    bloopcl_context_last_error(tr->ctx));
        return -1;
    }
    if (opt->own_adam && adam_step(tr, opt, outputs) != 0)
        return -1;
    return train_dp_gather_parameters(tr->dp, tr->queue, tr->param);
}

/* ---------------------------------------------------------------------------------------------
 * The skipped-step check (--inject-nonfinite): what Adam owns, before and after the step.
 * ------------------------------------------------------------------------------------------- */
typedef struct optimizer_snapshot {
    float *tensor[3][NUM_TENSORS];  /* parameters, first and second moments (trainer's Adam) */
    float *fused[2];                /* bloopcl's AdamW moments over the own slices (fused) */
    cl_int steps;                   /* Adam's step count */
} optimizer_snapshot;

static void free_snapshot(optimizer_snapshot *s)
{
    for (int k = 0; k < 3; ++k)
        for (int t = 0; t < NUM_TENSORS; ++t)
            free(s->tensor[k][t]);
    free(s->fused[0]);
    free(s->fused[1]);
}

/* Adam's step count: the trainer's counter, or bloopcl's t (comb not NULL: fused). */
static int read_steps(trainer *tr, bloopcl_combiner *comb, cl_int *steps)
{
    if (comb == NULL)
        return cl_check(clEnqueueReadBuffer(tr->queue, tr->adam_t, CL_TRUE, 0, sizeof *steps,
                                            steps, 0, NULL, NULL), "read Adam step count");
    uint64_t t = 0;
    bloopcl_status st = bloopcl_optimizer_steps(comb, &t);
    *steps = (cl_int)t;
    return st == BLOOPCL_OK ? 0 : -1;
}

/* bloopcl's moments (fused): n floats each, the combiner's slice order. */
static int read_fused_moments(bloopcl_combiner *comb, optimizer_snapshot *s)
{
    size_t n = bloopcl_combiner_size(comb);
    const bloopcl_state_kind kinds[2] = {BLOOPCL_STATE_MOMENT1, BLOOPCL_STATE_MOMENT2};
    for (int k = 0; k < 2; ++k)
        if ((s->fused[k] = malloc(n * sizeof(float))) == NULL ||
            bloopcl_read_state(comb, kinds[k], s->fused[k], n) != BLOOPCL_OK)
            return -1;
    return 0;
}

/* Bytes of part k of a snapshot (parameters: whole tensors; moments: the own slices). */
static size_t snapshot_bytes(const trainer *tr, int k, int t)
{
    return (k == 0 ? tr->tensor_size[t] : tr->own_count[t]) * sizeof(float);
}

static int take_snapshot(trainer *tr, bloopcl_combiner *fused, optimizer_snapshot *s)
{
    cl_mem *groups[3] = {tr->param, tr->adam_m, tr->adam_v};
    *s = (optimizer_snapshot){0};
    for (int k = 0; k < 3; ++k)
        for (int t = 0; t < NUM_TENSORS; ++t) {
            size_t bytes = snapshot_bytes(tr, k, t);
            if (bytes == 0)
                continue;
            if ((s->tensor[k][t] = malloc(bytes)) == NULL ||
                cl_check(clEnqueueReadBuffer(tr->queue, groups[k][t], CL_TRUE, 0, bytes,
                                             s->tensor[k][t], 0, NULL, NULL), "snapshot") != 0)
                return -1;
        }
    if (fused != NULL && read_fused_moments(fused, s) != 0)
        return -1;
    return read_steps(tr, fused, &s->steps);
}

/* Bit for bit (memcmp: a NaN that crept in or a -0 for a +0 counts as a change). */
static int same_snapshot(const trainer *tr, bloopcl_combiner *fused,
                         const optimizer_snapshot *x, const optimizer_snapshot *y)
{
    int same = x->steps == y->steps;
    size_t n = fused != NULL ? bloopcl_combiner_size(fused) : 0;
    for (int k = 0; k < 2 && n > 0; ++k)
        same = same && memcmp(x->fused[k], y->fused[k], n * sizeof(float)) == 0;
    for (int k = 0; k < 3; ++k)
        for (int t = 0; t < NUM_TENSORS; ++t)
            same = same && (snapshot_bytes(tr, k, t) == 0 ||
                            memcmp(x->tensor[k][t], y->tensor[k][t],
                                   snapshot_bytes(tr, k, t)) == 0);
    return same;
}

/* Step t with a NaN in g: bloopcl must report it skipped in its output buffer and Adam must
 * leave everything it owns as it was. */
static int checked_skip_step(trainer *tr, bloopcl_combiner *comb, const options *opt,
                             size_t first, long t)
{
    optimizer_snapshot before, after;
    float accepted = -1.0f;
    cl_mem outputs = NULL;
    bloopcl_combiner *fused = opt->own_adam ? NULL : comb;
    int rc = take_snapshot(tr, fused, &before);
    if (rc == 0 && (rc = train_step(tr, comb, opt, first, t)) == 0)
        rc = take_snapshot(tr, fused, &after);
    if (rc == 0 && bloopcl_combiner_outputs(comb, &outputs) == BLOOPCL_OK)
        rc = cl_check(clEnqueueReadBuffer(tr->queue, outputs, CL_TRUE,
                                          BLOOPCL_OUTPUT_ACCEPTED * sizeof(float), sizeof accepted,
                                          &accepted, 0, NULL, NULL), "read accepted");
    if (rc == 0 && (accepted != 0.0f || !same_snapshot(tr, fused, &before, &after))) {
        fprintf(stderr, "%s: FAIL: NaN in g at step %ld: accepted %g; parameters, Adam moments "
                "or step count changed\n", PROGRAM, t, (double)accepted);
        rc = -1;
    } else if (rc == 0 && train_dp_rank(tr->dp) == 0) {
        fprintf(stderr, "%s: NaN in g at step %ld: skipped (accepted 0); parameters, Adam "
                "moments and step count (%d) bit-identical\n", PROGRAM, t, (int)after.steps);
    }
    free_snapshot(&before);
    free_snapshot(&after);
    return rc;
}

/* After a run with one injected NaN, Adam must have applied every other step. */
static int check_steps_applied(trainer *tr, bloopcl_combiner *fused, long steps_run)
{
    cl_int applied = 0;
    if (read_steps(tr, fused, &applied) != 0)
        return -1;
    if (applied != steps_run - 1) {
        fprintf(stderr, "%s: FAIL: Adam applied %d of %ld steps, expected %ld\n", PROGRAM,
                (int)applied, steps_run, steps_run - 1);
        return -1;
    }
    return 0;
}

static int shuffle_epoch(trainer *tr, const options *opt, int epoch, int *perm)
{
    permutation(opt->seed * 1000003ull + (uint64_t)epoch, perm, tr->train_count);
    return write_buffer(tr, tr->perm, perm, tr->train_count * sizeof(int));
}

/* Losses after an epoch; writes the CSV row and a progress line. */
static int end_epoch(trainer *tr, const options *opt, FILE *csv, int epoch, run_result *res)
{
    eval_result train, test;
    if (evaluate(tr, tr->train_x, tr->train_y, tr->train_count, &train) != 0 ||
        evaluate(tr, tr->test_x, tr->test_y, tr->test_count, &test) != 0 ||
        aux_loss(tr, 10, &res->aux_loss) != 0)
        return -1;
    res->train_loss = train.loss;
    res->test_loss = test.loss;
    res->test_accuracy = test.accuracy;
    res->diverged = !isfinite(train.loss) || !isfinite(test.loss) || !isfinite(res->aux_loss);
    const char *name = bloopcl_method_name(res->method);
    if (train_dp_rank(tr->dp) == 0)  /* every rank holds the same model and losses */
        fprintf(stderr, "%s: %-16s lambda %-8.3g epoch %d/%d  train %.4f  test %.4f  acc %.4f  "
                "aux %.4f  (%.1f s)\n", PROGRAM, name, res->lambda, epoch, opt->epochs,
                train.loss, test.loss, test.accuracy, res->aux_loss, res->seconds);
    if (csv)
        fprintf(csv, "%s,%.9g,%.9g,%d,%.9g,%.9g,%.9g,%.9g,%.3f\n", name, res->lambda,
                res->ema_weight, epoch, train.loss, test.loss, test.accuracy, res->aux_loss,
                res->seconds);
    return 0;
}

static int run_one(trainer *tr, bloopcl_combiner *comb, const options *opt, FILE *csv,
                   int *perm, run_result *res)
{
    double start = tool_seconds();
    long t = 0;
    size_t steps = tr->train_count / opt->batch; /* the last partial batch is dropped */
    if (reset_run(tr) != 0)
        return -1;
    for (int epoch = 1; epoch <= opt->epochs && !res->diverged; ++epoch) {
        if (shuffle_epoch(tr, opt, epoch, perm) != 0)
            return -1;
        for (size_t s = 0; s < steps; ++s) {
            ++t;
            int rc = t == opt->inject_step
                         ? checked_skip_step(tr, comb, opt, s * opt->batch, t)
                         : train_step(tr, comb, opt, s * opt->batch, t);
            if (rc != 0)
                return -1;
        }
        if (cl_check(clFinish(tr->queue), "clFinish") != 0)
            return -1;
        res->seconds = tool_seconds() - start;
        if (end_epoch(tr, opt, csv, epoch, res) != 0)
            return -1;
    }
    return opt->inject_step && !res->diverged
               ? check_steps_applied(tr, opt->own_adam ? NULL : comb, t) : 0;
}

static int run_config(trainer *tr, const options *opt, FILE *csv, int *perm, run_result *res)
{
    bloopcl_config config;
    bloopcl_config_default(&config, res->method);
    config.ema_weight = res->ema_weight;
    config.lambda = res->lambda;
    bloopcl_combiner *comb = NULL;
    size_t n = 0;  /* the own slices: every parameter unless data-parallel (a shard then) */
    for (int k = 0; k < NUM_TENSORS; ++k)
        n += tr->own_count[k];
    bloopcl_status st = bloopcl_combiner_create(tr->ctx, &config, n, &comb);
    /* the trainer's Adam (no weight decay, bias-corrected) as bloopcl's AdamW */
    bloopcl_optimizer adam;
    bloopcl_optimizer_default(&adam, BLOOPCL_OPTIMIZER_ADAMW);
    adam.lr = opt->lr;
    adam.weight_decay = 0.0;
    adam.beta1 = ADAM_BETA1;
    adam.beta2 = ADAM_BETA2;
    if (st == BLOOPCL_OK && !opt->own_adam)
        st = bloopcl_combiner_set_optimizer(comb, &adam);
    if (st != BLOOPCL_OK) {
        fprintf(stderr, "%s: bloopcl_combiner_create: %s: %s\n", PROGRAM,
                bloopcl_status_string(st), bloopcl_context_last_error(tr->ctx));
        bloopcl_combiner_destroy(comb);
        return -1;
    }
    int rc = run_one(tr, comb, opt, csv, perm, res);
    bloopcl_combiner_destroy(comb);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Gradient check: the device's dL/dtheta on a few rows against central differences of a
 * double-precision host forward pass, and the device's sigma_l against host power iteration.
 * ------------------------------------------------------------------------------------------- */
#define CHECK_ROWS 16
#define CHECK_COORDS 4

/* Mean cross-entropy of rows 0..rows-1 of the training set under host parameters p. */
static double host_loss(float *const p[NUM_TENSORS], const dataset *ds, size_t rows)
{
    double act[2][256], total = 0.0;
    for (size_t r = 0; r < rows; ++r) {
        const float *x = ds->images + r * IMAGE_SIZE;
        for (int l = 0; l < NUM_LAYERS; ++l) {
            int in = kWidths[l], out = kWidths[l + 1];
            double *dst = act[(l + 1) % 2];
            const double *src = act[l % 2];
            for (int j = 0; j < out; ++j) {
                double z = p[2 * l + 1][j];
                for (int i = 0; i < in; ++i)
                    z += (l == 0 ? (double)x[i] : src[i]) * p[2 * l][(size_t)i * out + j];
                dst[j] = (l + 1 < NUM_LAYERS && z < 0.0) ? 0.0 : z;
            }
        }
        const double *z = act[NUM_LAYERS % 2];
        double mx = z[0], s = 0.0;
        for (int c = 1; c < NUM_CLASSES; ++c)
            mx = z[c] > mx ? z[c] : mx;
        for (int c = 0; c < NUM_CLASSES; ++c)
            s += exp(z[c] - mx);
        total += log(s) + mx - z[ds->labels[r]];
    }
    return total / (double)rows;
}

/* Largest singular value of W (in x out) by 300 power iterations in double. */
static double host_sigma(const float *w, int in, int out)
{
    double u[IMAGE_SIZE], v[256], nv = 0.0;
    for (int j = 0; j < out; ++j)
        v[j] = 1.0 + 0.01 * j;
    for (int it = 0; it < 300; ++it) {
        double nu = 0.0;
        for (int i = 0; i < in; ++i) {
            u[i] = 0.0;
            for (int j = 0; j < out; ++j)
                u[i] += (double)w[(size_t)i * out + j] * v[j];
            nu += u[i] * u[i];
        }
        nv = 0.0;
        for (int j = 0; j < out; ++j) {
            v[j] = 0.0;
            for (int i = 0; i < in; ++i)
                v[j] += (double)w[(size_t)i * out + j] * u[i] / sqrt(nu);
            nv += v[j] * v[j];
        }
        for (int j = 0; j < out; ++j)
            v[j] /= sqrt(nv);
    }
    return sqrt(nv);
}

static int read_tensors(trainer *tr, cl_mem *bufs, float *host[NUM_TENSORS])
{
    for (int t = 0; t < NUM_TENSORS; ++t)
        if (cl_check(clEnqueueReadBuffer(tr->queue, bufs[t], CL_TRUE, 0,
                                         tr->tensor_size[t] * sizeof(float), host[t], 0, NULL,
                                         NULL), "clEnqueueReadBuffer") != 0)
            return -1;
    return 0;
}

/* Compares CHECK_COORDS coordinates of every tensor; returns the number of mismatches. */
static int compare_coordinates(trainer *tr, float *p[NUM_TENSORS], float *g[NUM_TENSORS],
                               const dataset *ds)
{
    uint64_t state = 12345;
    int bad = 0;
    for (int t = 0; t < NUM_TENSORS; ++t)
        for (int c = 0; c < CHECK_COORDS; ++c) {
            size_t i = (size_t)(splitmix64(&state) % tr->tensor_size[t]);
            float saved = p[t][i], h = 1e-2f;
            p[t][i] = saved + h;
            double up = host_loss(p, ds, CHECK_ROWS);
            p[t][i] = saved - h;
            double down = host_loss(p, ds, CHECK_ROWS);
            p[t][i] = saved;
            double numeric = (up - down) / (2.0 * (double)h), err = fabs(numeric - g[t][i]);
            if (err > 1e-4 + 2e-2 * fabs(numeric)) {
                fprintf(stderr, "%s: gradient check: tensor %d [%zu]: device %.6g, finite "
                        "difference %.6g\n", PROGRAM, t, i, (double)g[t][i], numeric);
                ++bad;
            }
        }
    return bad;
}

static int compare_sigmas(trainer *tr, float *p[NUM_TENSORS])
{
    float sigma[2 * NUM_LAYERS];
    int bad = 0;
    if (cl_check(clEnqueueReadBuffer(tr->queue, tr->sigma, CL_TRUE, 0, sizeof sigma, sigma, 0,
                                     NULL, NULL), "read sigma") != 0)
        return 1;
    for (int l = 0; l < NUM_LAYERS; ++l) {
        double ref = host_sigma(p[2 * l], kWidths[l], kWidths[l + 1]);
        if (fabs(sigma[l] - ref) > 1e-2 * ref) {
            fprintf(stderr, "%s: sigma check: layer %d: device %.6g, host %.6g\n", PROGRAM,
                    l + 1, (double)sigma[l], ref);
            ++bad;
        }
    }
    return bad;
}

static int check_gradients(trainer *tr, const dataset *train)
{
    float *p[NUM_TENSORS] = {NULL}, *g[NUM_TENSORS] = {NULL};
    int ok = 1, bad = -1;
    for (int t = 0; t < NUM_TENSORS; ++t)
        ok = ok && (p[t] = malloc(tr->tensor_size[t] * sizeof(float))) &&
             (g[t] = malloc(tr->tensor_size[t] * sizeof(float)));
    ok = ok && cl_check(clEnqueueCopyBuffer(tr->queue, tr->train_x, tr->act[0], 0, 0,
                                            CHECK_ROWS * IMAGE_SIZE * sizeof(float), 0, NULL,
                                            NULL), "clEnqueueCopyBuffer") == 0;
    if (ok && reset_run(tr) == 0 && forward(tr, tr->act[0], 0, CHECK_ROWS) == 0 &&
        cross_entropy(tr, tr->train_y, 0, CHECK_ROWS, 1.0f / CHECK_ROWS) == 0 &&
        backward(tr, CHECK_ROWS) == 0 && aux_gradient(tr, 100) == 0 &&
        read_tensors(tr, tr->param, p) == 0 && read_tensors(tr, tr->grad, g) == 0)
        bad = compare_coordinates(tr, p, g, train) + compare_sigmas(tr, p);
    for (int t = 0; t < NUM_TENSORS; ++t)
        free(p[t]), free(g[t]);
    if (bad == 0 && train_dp_rank(tr->dp) == 0)
        fprintf(stderr, "%s: gradient check passed (%d coordinates, %d spectral norms)\n",
                PROGRAM, NUM_TENSORS * CHECK_COORDS, NUM_LAYERS);
    return bad == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * Sweep, report, checks
 * ------------------------------------------------------------------------------------------- */
static void print_table(const run_result *res, size_t n)
{
    printf("%-16s %10s %6s %11s %11s %9s %11s %8s\n", "method", "lambda", "w", "train_loss",
           "test_loss", "test_acc", "aux_loss", "seconds");
    for (size_t i = 0; i < n; ++i)
        printf("%-16s %10.4g %6g %11.5f %11.5f %9.4f %11.5f %8.1f\n",
               bloopcl_method_name(res[i].method), res[i].lambda, res[i].ema_weight,
               res[i].train_loss, res[i].test_loss, res[i].test_accuracy, res[i].aux_loss,
               res[i].seconds);
}

/* Bloop's front: its (aux, train, test) points sorted by aux loss. Returns the count. */
static size_t bloop_front(const run_result *res, size_t n, const run_result **front)
{
    size_t k = 0;
    for (size_t i = 0; i < n; ++i) {
        if (res[i].method != BLOOPCL_METHOD_BLOOP)
            continue;
        size_t j = k++;
        for (; j > 0 && front[j - 1]->aux_loss > res[i].aux_loss; --j)
            front[j] = front[j - 1];
        front[j] = &res[i];
    }
    return k;
}

/* Linear interpolation of the front's losses at aux loss x; 0 when x is outside its range. */
static int front_at(const run_result *const *front, size_t k, double x, double *train,
                    double *test)
{
    for (size_t j = 0; j + 1 < k; ++j) {
        double x0 = front[j]->aux_loss, x1 = front[j + 1]->aux_loss;
        if (x < x0 || x > x1)
            continue;
        double t = x1 > x0 ? (x - x0) / (x1 - x0) : 0.0;
        *train = front[j]->train_loss + t * (front[j + 1]->train_loss - front[j]->train_loss);
        *test = front[j]->test_loss + t * (front[j + 1]->test_loss - front[j]->test_loss);
        return 1;
    }
    return 0;
}

/* At each point of method `other` inside Bloop's aux range, the gap other - bloop of the train
 * and test losses of Bloop's front interpolated at the same aux loss (> 0: Bloop is better). */
static void print_front_gap(const run_result *res, size_t n, bloopcl_method other)
{
    const run_result **front = malloc(n * sizeof *front);
    size_t k = front ? bloop_front(res, n, front) : 0;
    int matched = 0, train_wins = 0, test_wins = 0;
    double train_gap = 0.0, test_gap = 0.0, tr, te;
    for (size_t i = 0; i < n; ++i)
        if (res[i].method == other && front_at(front, k, res[i].aux_loss, &tr, &te)) {
            ++matched;
            train_gap += res[i].train_loss - tr, test_gap += res[i].test_loss - te;
            train_wins += tr < res[i].train_loss, test_wins += te < res[i].test_loss;
        }
    if (matched)
        printf("%-16s vs bloop at matched aux loss (%d points): bloop lower train loss %d, "
               "lower test loss %d; mean gap train %+.5f, test %+.5f\n",
               bloopcl_method_name(other), matched, train_wins, test_wins,
               train_gap / matched, test_gap / matched);
    free(front);
}

/* Fails on divergence, or when a method's smallest-lambda run misses --min-accuracy; says so
 * on stderr when `say`. */
static int check_results(const run_result *res, size_t n, const options *opt, bool say)
{
    double smallest = opt->lambdas[0];
    int failures = 0;
    for (int i = 0; i < opt->num_lambdas; ++i)
        smallest = opt->lambdas[i] < smallest ? opt->lambdas[i] : smallest;
    for (size_t i = 0; i < n; ++i) {
        const char *name = bloopcl_method_name(res[i].method);
        if (res[i].diverged) {
            if (say)
                fprintf(stderr, "%s: FAIL: %s lambda %g diverged (non-finite loss)\n", PROGRAM,
                        name, res[i].lambda);
            ++failures;
        } else if (res[i].lambda == smallest && res[i].test_accuracy < opt->min_accuracy) {
            if (say)
                fprintf(stderr, "%s: FAIL: %s lambda %g test accuracy %.4f < %.4f\n", PROGRAM,
                        name, res[i].lambda, res[i].test_accuracy, opt->min_accuracy);
            ++failures;
        }
    }
    return failures ? -1 : 0;
}

static int sweep(trainer *tr, const options *opt, FILE *csv, run_result *res)
{
    int *perm = malloc(tr->train_count * sizeof(int));
    if (perm == NULL)
        return -1;
    size_t k = 0;
    int rc = 0;
    for (int m = 0; m < opt->num_methods && rc == 0; ++m)
        for (int i = 0; i < opt->num_lambdas && rc == 0; ++i, ++k) {
            res[k] = (run_result){.method = opt->methods[m], .lambda = opt->lambdas[i]};
            res[k].ema_weight = res[k].method == BLOOPCL_METHOD_BLOOP ? opt->bloop_ema
                                                                      : opt->base_ema;
            rc = run_config(tr, opt, csv, perm, &res[k]);
        }
    free(perm);
    return rc;
}

static FILE *open_csv(const char *path)
{
    if (path == NULL)
        return NULL;
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    fprintf(f, "method,lambda,ema_weight,epoch,train_loss,test_loss,test_accuracy,aux_loss,"
               "wall_seconds\n");
    return f;
}

static void print_report_table(const options *opt, const run_result *res, size_t n,
                               double seconds)
{
    printf("\nFashion-MNIST MLP 784-256-128-10: %zu train / %zu test images, %d epoch(s), "
           "batch %zu, Adam lr %g %s (%.1f s)", opt->train_size, opt->test_size, opt->epochs,
           opt->batch, opt->lr,
           opt->own_adam ? "(the trainer's Adam kernel)" : "(fused in bloopcl's step)",
           seconds);
    if (opt->data_parallel)
        printf(", data-parallel over %d rank%s", opt->ranks, opt->ranks == 1 ? "" : "s");
    printf("\n");
    print_table(res, n);
    print_front_gap(res, n, BLOOPCL_METHOD_MIXED);
    print_front_gap(res, n, BLOOPCL_METHOD_PCGRAD);
    print_front_gap(res, n, BLOOPCL_METHOD_DYNAMIC_BARRIER);
}

/* The JSON document (schema "bloopcl-train/1"). */
static void print_report_json(const options *opt, const bloopcl_device_info *info,
                              const run_result *res, size_t n, double seconds, bool passed)
{
    tool_json json;
    tool_json_init(&json, stdout);
    tool_json_document_begin(&json, &TRAIN_TOOL);
    tool_json_device(&json, "device", info);
    tool_json_object_begin(&json, "settings");
    tool_json_unsigned(&json, "train_size", opt->train_size);
    tool_json_unsigned(&json, "test_size", opt->test_size);
    tool_json_integer(&json, "epochs", opt->epochs);
    tool_json_unsigned(&json, "batch", opt->batch);
    tool_json_number(&json, "lr", opt->lr);
    tool_json_unsigned(&json, "seed", opt->seed);
    if (opt->data_parallel)
        tool_json_integer(&json, "ranks", opt->ranks);
    tool_json_object_end(&json);
    tool_json_array_begin(&json, "results");
    for (size_t i = 0; i < n; ++i) {
        tool_json_object_begin(&json, NULL);
        tool_json_string(&json, "method", bloopcl_method_name(res[i].method));
        tool_json_number(&json, "lambda", res[i].lambda);
        tool_json_number(&json, "ema_weight", res[i].ema_weight);
        tool_json_number(&json, "train_loss", res[i].train_loss);
        tool_json_number(&json, "test_loss", res[i].test_loss);
        tool_json_number(&json, "test_accuracy", res[i].test_accuracy);
        tool_json_number(&json, "aux_loss", res[i].aux_loss);
        tool_json_number(&json, "seconds", res[i].seconds);
        tool_json_bool(&json, "diverged", res[i].diverged != 0);
        tool_json_object_end(&json);
    }
    tool_json_array_end(&json);
    tool_json_number(&json, "seconds", seconds);
    tool_json_bool(&json, "passed", passed);
    tool_json_document_end(&json);
}

/* The verdict (the same on every rank: they hold the same results); the output only where
 * `writer` (rank 0). */
static int report(bloopcl_context *ctx, const options *opt, const run_result *res, size_t n,
                  double seconds, bool writer)
{
    int rc = check_results(res, n, opt, writer);
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    if (!writer)
        return rc;
    if (!opt->common.json)
        print_report_table(opt, res, n, seconds);
    else if (bloopcl_context_device_info(ctx, &info) == BLOOPCL_OK)
        print_report_json(opt, &info, res, n, seconds, rc == 0);
    return rc;
}

/* The whole sweep on the context's device; returns the exit status. Data-parallel: every rank
 * runs it, rank 0 writes the outputs, and a rank that fails ends the job. */
static int run_all(bloopcl_context *ctx, train_dp *dp, const options *opt, const dataset *train,
                   const dataset *test)
{
    trainer tr;
    size_t n = (size_t)opt->num_methods * (size_t)opt->num_lambdas;
    run_result *res = calloc(n, sizeof *res);
    bool writer = train_dp_rank(dp) == 0;
    FILE *csv = writer ? open_csv(opt->csv_path) : NULL;
    double start = tool_seconds();
    if (res == NULL)
        fprintf(stderr, "%s: out of memory\n", PROGRAM);
    int rc = (res && (csv || !opt->csv_path || !writer))
                 ? trainer_init(&tr, ctx, dp, opt, train, test) : -2;
    if (rc == 0 && opt->check)
        rc = check_gradients(&tr, train);
    if (rc == 0)
        rc = sweep(&tr, opt, csv, res);
    if (rc != 0)
        train_dp_abort(dp, TOOL_EXIT_FAILED);
    if (rc == 0)
        rc = report(ctx, opt, res, n, tool_seconds() - start, writer);
    if (rc != -2)
        trainer_destroy(&tr);
    if (csv && fclose(csv) != 0) {
        perror(opt->csv_path);
        rc = -1;
    }
    free(res);
    return rc == 0 ? TOOL_EXIT_OK : TOOL_EXIT_FAILED;
}

/* Both parts of the dataset; on failure (said on stderr) returns false with nothing held. */
static bool load_data(const options *opt, dataset *train, dataset *test)
{
    if (load_dataset(opt->data_dir, "train", opt->train_size, train) == 0 &&
        load_dataset(opt->data_dir, "t10k", opt->test_size, test) == 0)
        return true;
    free_dataset(train);
    return false;
}

static int train_main(int argc, char **argv, train_dp *dp)
{
    options opt;
    default_options(&opt);
    apply_quick(argc, argv, &opt);
    opt.data_parallel = dp != NULL;
    opt.ranks = train_dp_ranks(dp);
    bloopcl_context *ctx = NULL;
    int rc = tool_setup(&TRAIN_TOOL, argc, argv, &opt.common, &opt, &ctx);
    if (rc != TOOL_CONTINUE)
        return rc;
    bloopcl_device_info info = BLOOPCL_DEVICE_INFO_INIT;
    if (bloopcl_context_device_info(ctx, &info) == BLOOPCL_OK && dp == NULL)
        fprintf(stderr, "%s: bloopcl %s on %s / %s\n", PROGRAM, bloopcl_version_string(),
                info.platform_name, info.device_name);
    else if (dp != NULL && info.device != NULL)  /* each rank names its device */
        fprintf(stderr, "%s: rank %d of %d: bloopcl %s on %s / %s\n", PROGRAM,
                train_dp_rank(dp), opt.ranks, bloopcl_version_string(), info.platform_name,
                info.device_name);
    dataset train = {0}, test = {0};
    if (!load_data(&opt, &train, &test)) {
        bloopcl_context_destroy(ctx);
        return TOOL_EXIT_USAGE;   /* the data are part of the environment */
    }
    rc = run_all(ctx, dp, &opt, &train, &test);
    /* CLBlast's program cache holds references to our cl_context: drop them first. */
    CLBlastClearCache();
    bloopcl_context_destroy(ctx);
    free_dataset(&train);
    free_dataset(&test);
    return rc;
}

/* MPI only when asked (an MPI launcher or --data-parallel): a plain run never initialises it. */
int main(int argc, char **argv)
{
    train_dp *dp = NULL;
    if (train_dp_requested(argc, argv) && (dp = train_dp_start(&argc, &argv)) == NULL)
        return TOOL_EXIT_USAGE;
    int rc = train_main(argc, argv, dp);
    train_dp_finish(dp);
    return rc;
}
