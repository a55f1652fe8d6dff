/* aux_loss.cl - the auxiliary loss A = sum_l log sigma_l^2 (sigma_l = ||W_l||_2) and its
 * gradient, from the top singular pair (u_l, v_l) kept by power iteration. */

/* y = W x (trans = 0) or y = W^T x (trans = 1), W is (rows x cols) row-major. */
__kernel void matvec(__global const float *w, int rows, int cols, int trans,
                     __global const float *x, __global float *y) {
  int i = get_global_id(0);
  float s = 0.0f;
  if (trans) { for (int k = 0; k < rows; ++k) s += w[k * cols + i] * x[k]; }
  else { for (int k = 0; k < cols; ++k) s += w[i * cols + k] * x[k]; }
  y[i] = s;
}

/* norm[slot] = |x|, x <- x / |x| (one work-item: the vectors have <= 784 entries). */
__kernel void unit_scale(__global float *x, int n, __global float *norm, int slot) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += x[i] * x[i];
  float nr = sqrt(s), inv = nr > 0.0f ? 1.0f / nr : 0.0f;
  for (int i = 0; i < n; ++i) x[i] *= inv;
  norm[slot] = nr;
}

/* a[i, j] = 2 u[i] v[j] / sigma: the gradient of log sigma^2 = 2 log(u^T W v). */
__kernel void aux_grad(__global const float *u, __global const float *v, int cols,
                       __global const float *sigma, int slot, __global float *a) {
  int i = get_global_id(1), j = get_global_id(0);
  a[i * cols + j] = 2.0f * u[i] * v[j] / sigma[slot];
}
