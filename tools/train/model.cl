/* model.cl - what the MLP needs besides its GEMMs (CLBlast): bias and ReLU, their backward
 * passes, and the softmax cross-entropy. W_l is (in x out) row-major, so Z = X W + b. */

/* z[r, j] += b[j]; then z = max(z, 0) if relu. */
__kernel void bias_act(__global float *z, __global const float *b, int width, int relu) {
  int r = get_global_id(1), j = get_global_id(0);
  float v = z[r * width + j] + b[j];
  z[r * width + j] = (relu && v < 0.0f) ? 0.0f : v;
}

/* ReLU backward with h = relu(z): dz = dh * [h > 0]. */
__kernel void relu_back(__global float *dh, __global const float *h) {
  int i = get_global_id(0);
  if (!(h[i] > 0.0f)) dh[i] = 0.0f;
}

/* db[j] = sum_r dz[r, j] (rows in order: the sum is the same bits every run). */
__kernel void colsum(__global const float *dz, int rows, int width, __global float *db) {
  int j = get_global_id(0);
  float s = 0.0f;
  for (int r = 0; r < rows; ++r) s += dz[r * width + j];
  db[j] = s;
}

/* Per row: p = softmax(z), loss = logsumexp(z) - z[y], correct = [argmax z == y],
 * dz = (p - onehot(y)) * scale  (scale = 1/B gives the gradient of the mean loss). */
__kernel void softmax_xent(__global float *z, __global const int *labels, int first,
                           int classes, float scale, __global float *loss,
                           __global int *correct) {
  int r = get_global_id(0), y = labels[first + r], arg = 0;
  __global float *zr = z + r * classes;
  float mx = zr[0];
  for (int c = 1; c < classes; ++c) if (zr[c] > mx) { mx = zr[c]; arg = c; }
  float s = 0.0f;
  for (int c = 0; c < classes; ++c) s += exp(zr[c] - mx);
  loss[r] = log(s) + mx - zr[y];
  correct[r] = (arg == y);
  for (int c = 0; c < classes; ++c)
    zr[c] = (exp(zr[c] - mx) / s - (c == y ? 1.0f : 0.0f)) * scale;
}
