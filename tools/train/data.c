/* data.c — see data.h. An IDX file is a big-endian header (magic, then one 32-bit size per
 * dimension) followed by the items, one unsigned byte per pixel or label. */
#include "data.h"
#include "train.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <zlib.h>

#define IDX_IMAGES_MAGIC 2051  /* 3 dimensions: count, rows, columns */
#define IDX_LABELS_MAGIC 2049  /* 1 dimension: count */

/* Standardisation with the Fashion-MNIST training set's mean and standard deviation. */
#define PIXEL_MEAN 0.2860f
#define PIXEL_STD 0.3530f

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

static uint32_t big_endian32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads the header (magic, dims[]) and then `want` items of item_bytes each. */
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
    if (ok && (big_endian32(head) != magic || big_endian32(head + 4) < want)) {
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

void data_free(dataset *ds)
{
    free(ds->images);
    free(ds->labels);
    ds->images = NULL;
    ds->labels = NULL;
}

/* One part ("train" or "t10k") of the dataset. */
static int load_part(const char *dir, const char *prefix, size_t count, dataset *ds)
{
    char images_name[64], labels_name[64];
    snprintf(images_name, sizeof images_name, "%s-images-idx3-ubyte.gz", prefix);
    snprintf(labels_name, sizeof labels_name, "%s-labels-idx1-ubyte.gz", prefix);
    unsigned char *pix = read_idx(dir, images_name, IDX_IMAGES_MAGIC, 3, count, IMAGE_SIZE);
    unsigned char *lab = pix ? read_idx(dir, labels_name, IDX_LABELS_MAGIC, 1, count, 1) : NULL;
    ds->count = count;
    ds->images = malloc(count * IMAGE_SIZE * sizeof(float));
    ds->labels = malloc(count * sizeof(int));
    int ok = pix && lab && ds->images && ds->labels;
    for (size_t i = 0; ok && i < count * IMAGE_SIZE; ++i)
        ds->images[i] = ((float)pix[i] / 255.0f - PIXEL_MEAN) / PIXEL_STD;
    for (size_t i = 0; ok && i < count; ++i)
        ok = lab[i] < NUM_CLASSES ? (ds->labels[i] = lab[i], 1) : 0;
    free(pix);
    free(lab);
    if (!ok)
        data_free(ds);
    return ok ? 0 : -1;
}

bool data_load(const char *dir, size_t train_size, size_t test_size, dataset *train,
               dataset *test)
{
    if (load_part(dir, "train", train_size, train) == 0 &&
        load_part(dir, "t10k", test_size, test) == 0)
        return true;
    data_free(train);
    return false;
}
