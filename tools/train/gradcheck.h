/* gradcheck.h — the gradient check (--check, and --quick): the device's dL/dtheta on a few
 * rows against central differences of a double-precision host forward pass, and the device's
 * sigma_l (power iteration) against the host's. */
#ifndef BLOOPCL_TRAIN_GRADCHECK_H
#define BLOOPCL_TRAIN_GRADCHECK_H

#include "trainer.h"

/* At the initial weights of `seed`. 0 if every coordinate and norm agrees, else -1 with one
 * line per mismatch on stderr. */
int gradcheck_run(trainer *tr, const dataset *train, uint64_t seed);

#endif
