/* run.h — bloopcl-compare over its devices: each device's context, then every selected case
 * size by size and input by input, reported as it goes. */
#ifndef BLOOPCL_COMPARE_RUN_H
#define BLOOPCL_COMPARE_RUN_H

#include "options.h"

/* Runs every selected case on the device of --device (or BLOOPCL_DEVICE), or on every device
 * with --all. Returns the exit status. */
int run_devices(const options *opt);

#endif
