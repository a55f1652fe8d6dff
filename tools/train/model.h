/* model.h — the MLP 784-256-128-10 (ReLU) and its main loss, on the trainer's device:
 *
 *     forward    H_0 = X, H_{l+1} = act(H_l W_l + b_l), act = ReLU except on the logits
 *     main loss  L = mean over rows of the cross-entropy of softmax(logits)
 *     backward   dW_l = H_l^T dZ_l, db_l = sum_rows dZ_l, dZ_{l-1} = (dZ_l W_l^T) * [H_l > 0]
 *
 * GEMMs by CLBlast, the rest by the kernels of model.cl. */
#ifndef BLOOPCL_TRAIN_MODEL_H
#define BLOOPCL_TRAIN_MODEL_H

#include "trainer.h"

/* The tensors' sizes, and the host buffers for the initial values (trainer.h): 0 or -1. */
int model_alloc_initial_values(trainer *tr);

/* He-uniform weights W ~ U(-sqrt(6/in), sqrt(6/in)), zero biases, and random starts of the
 * power iteration u, v, all drawn from `seed` into the host copies. */
void model_initial_values(trainer *tr, uint64_t seed);

/* act[l+1] = act(act[l] W_l + b_l) for `rows` rows; layer 0 reads `input` at row `first`. */
int model_forward(trainer *tr, cl_mem input, size_t first, size_t rows);

/* Cross-entropy on the logits in act[L] against labels[first ...]: loss[r], correct[r], and
 * the logits replaced by scale dL/dlogits (scale 1/B: the mean loss's gradient). */
int model_cross_entropy(trainer *tr, cl_mem labels, size_t first, size_t rows, float scale);

/* grad[] = the gradient of the loss whose dL/dlogits cross_entropy left in act[L]. */
int model_backward(trainer *tr, size_t rows);

typedef struct eval_result {
    double loss, accuracy;
} eval_result;

/* Mean loss and accuracy over `count` rows of (x, y), EVAL_CHUNK rows at a time. */
int model_evaluate(trainer *tr, cl_mem x, cl_mem y, size_t count, eval_result *out);

#endif
