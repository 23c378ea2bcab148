/* The shared-library part of the workload (libburnlib.so): frames the profiler must resolve in a .so. */
#ifndef NATIVE_BURN_BURNLIB_H
#define NATIVE_BURN_BURNLIB_H

#include <stdint.h>

uint64_t lib_dispatch(uint64_t x, unsigned units);
uint64_t lib_hot_x(uint64_t x, unsigned units);

#endif
