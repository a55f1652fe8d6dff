/* aux_loss.h — the auxiliary loss, an upper bound of the network's Lipschitz constant:
 *
 *     A = log prod_l ||W_l||_2^2 = sum_l 2 log sigma_l
 *     dA/dW_l = 2 u_l v_l^T / sigma_l     (dA/db_l = 0)
 *
 * with (u_l, v_l) the top singular pair of W_l, kept across steps by power iteration (a few
 * iterations per step suffice: the weights move little between steps). */
#ifndef BLOOPCL_TRAIN_AUX_LOSS_H
#define BLOOPCL_TRAIN_AUX_LOSS_H

#include "trainer.h"

/* One power iteration on W_l: u = W v / |W v|, v = W^T u / |W^T u|; sigma_l = |W^T u| goes
 * to sigma[l] (and |W v| to sigma[L + l]). */
int aux_power_iteration(trainer *tr, int l);

/* aux[W_l] = dA/dW_l after `iterations` power iterations per layer (aux[b_l] stays 0). */
int aux_gradient(trainer *tr, int iterations);

/* A on the host, after `iterations` more power iterations per layer. */
int aux_loss(trainer *tr, int iterations, double *out);

#endif
