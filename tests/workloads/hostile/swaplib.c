// One of two libraries with the same code at the same offsets and different names (built with -DHOT=hot_in_a
// or -DHOT=hot_in_b): churn.c loads them in turn, usually at the same address, so that an address sampled in one
// belongs to the other a moment later.
#include <stdint.h>

__attribute__((noinline)) uint64_t HOT(uint64_t n) {
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < n; i++) x += i * 7;
    return x;
}
