/* train.h — what every part of bloopcl-train shares: the program's name and the shape of
 * the model.
 *
 *     model      784 -> 256 -> 128 -> 10, ReLU, parameters W1,b1,W2,b2,W3,b3
 *                tensor t: W_l for t = 2l (in x out, row-major, Z = X W + b), b_l for t = 2l+1
 */
#ifndef BLOOPCL_TRAIN_H
#define BLOOPCL_TRAIN_H

#define PROGRAM "bloopcl-train"
#define NUM_LAYERS 3
#define NUM_TENSORS (2 * NUM_LAYERS)
#define NUM_CLASSES 10
#define IMAGE_SIZE 784
#define EVAL_CHUNK 1000  /* rows per forward pass when evaluating */

/* Widths of the layers' inputs and of the output: train_widths[l] -> train_widths[l + 1]. */
extern const int train_widths[NUM_LAYERS + 1];

#endif
