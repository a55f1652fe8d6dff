/* data.h — Fashion-MNIST from its IDX files (gzip-compressed, as Debian's
 * dataset-fashion-mnist installs them), standardised on the host. */
#ifndef BLOOPCL_TRAIN_DATA_H
#define BLOOPCL_TRAIN_DATA_H

#include <stdbool.h>
#include <stddef.h>

typedef struct dataset {
    size_t count;
    float *images; /* count x 784, (pixel/255 - mean) / std */
    int *labels;   /* count, each in 0..9 */
} dataset;

/* The first train_size training and test_size test images of the files in `dir`; on failure
 * (said on stderr) returns false with nothing held. */
bool data_load(const char *dir, size_t train_size, size_t test_size, dataset *train,
               dataset *test);

/* Frees what a dataset holds; it may be empty. */
void data_free(dataset *ds);

#endif
