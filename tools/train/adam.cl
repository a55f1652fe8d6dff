/* adam.cl - Adam along bloopcl's direction d, skipping what bloopcl skipped.
 * OUTPUT_ACCEPTED (a build option) is the index of bloopcl's "step accepted" flag in its
 * output buffer (BLOOPCL_OUTPUT_ACCEPTED). */

/* Adam step t along d: m = b1 m + (1-b1) d, v = b2 v + (1-b2) d^2,
 * p -= lr (m/c1) / (sqrt(v/c2) + eps), with (c1, c2) = bias[t] = (1 - b1^t, 1 - b2^t).
 * When bloopcl skipped the step (out[OUTPUT_ACCEPTED] = 0: d is 0) nothing is written:
 * stepping along d = 0 would still move p by the momentum and decay m and v (AMP's
 * skipped-step semantics). The decision is read on the device, never on the host.
 * p and d are read from element `base` on (this process's slice of the tensor), m and v
 * hold that slice only. */
__kernel void adam(__global float *p, __global const float *d, __global float *m,
                   __global float *v, float lr, float b1, float b2, float eps,
                   __global const float *out, __global const int *t,
                   __global const float2 *bias, int base) {
  if (out[OUTPUT_ACCEPTED] == 0.0f) return;
  int i = get_global_id(0), k = base + i;
  float2 c = bias[t[0]];
  float g = d[k];
  float mi = b1 * m[i] + (1.0f - b1) * g, vi = b2 * v[i] + (1.0f - b2) * g * g;
  m[i] = mi; v[i] = vi;
  p[k] -= lr * (mi / c.x) / (sqrt(vi / c.y) + eps);
}

/* t counts the applied steps: one more before the Adam launches of an accepted step. */
__kernel void adam_tick(__global int *t, __global const float *out) {
  if (out[OUTPUT_ACCEPTED] != 0.0f) t[0] += 1;
}
