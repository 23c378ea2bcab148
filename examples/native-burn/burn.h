/* The unit of CPU work shared by every hot function of the workload. */
#ifndef NATIVE_BURN_BURN_H
#define NATIVE_BURN_BURN_H

#include <stdint.h>

/* Every function of the workload is a real frame on the stack: never inlined, never cloned, never merged with
 * an identical twin (noipa implies noinline, noclone and no_icf), so the profiler sees exactly these names. */
#define BURN_FRAME __attribute__((noinline, noipa))

/* About 2 ms of work per unit here: small next to the 10 ms between samples at 100 Hz, so the split between
 * functions is set by how many units each one burns, not by where a sample happens to fall. */
#define BURN_ITERS_PER_UNIT (1UL << 20)

/* A macro rather than an inline function, so the work is the hot function's own code: no inlined-function
 * entry in the debug info that a symbolizer could report as the leaf instead. The empty asm makes each step
 * opaque: the loop can be neither folded into a closed form nor vectorised, so one unit costs the same in every
 * hot function. No syscalls: the loop is pure user-mode CPU. */
#define BURN_UNITS(x, units)                                                          \
    do {                                                                              \
        for (unsigned long burn_i_ = 0; burn_i_ < (units) * BURN_ITERS_PER_UNIT; burn_i_++) { \
            (x) ^= (x) << 13;                                                         \
            (x) ^= (x) >> 7;                                                          \
            (x) ^= (x) << 17;                                                         \
            __asm__ volatile("" : "+r"(x));                                           \
        }                                                                             \
    } while (0)

#endif
