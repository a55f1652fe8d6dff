/* batch.cl - the mini-batch: rows of the training set in the epoch's shuffled order.
 * Row-major throughout the trainer: activations are (rows x width). */

/* out[r, :] = data[idx[first + r], :], out_labels[r] = labels[idx[first + r]]. */
__kernel void gather(__global const float *data, __global const int *labels,
                     __global const int *idx, int first, int width,
                     __global float *out, __global int *out_labels) {
  int r = get_global_id(1), j = get_global_id(0), src = idx[first + r];
  out[r * width + j] = data[src * width + j];
  if (j == 0) out_labels[r] = labels[src];
}
