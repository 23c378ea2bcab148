/* libburnlib.so: thread burn-a spends all of its time in lib_hot_x, called through lib_dispatch. */
#include "burnlib.h"

#include "burn.h"

static volatile uint64_t lib_sink;

BURN_FRAME uint64_t lib_hot_x(uint64_t x, unsigned units)
{
    BURN_UNITS(x, units);
    lib_sink = x;
    return x;
}

BURN_FRAME uint64_t lib_dispatch(uint64_t x, unsigned units)
{
    /* The addition after the call keeps it a call (not a jump), so lib_dispatch stays on the stack. */
    return lib_hot_x(x, units) + 1;
}
