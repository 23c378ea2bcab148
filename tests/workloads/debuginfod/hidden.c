// A library whose hot code is in static functions, as in CPython's extension modules and lxml's wheel: once
// stripped, only its exported entry point keeps a name on the machine; the static functions are named only by its
// split debug file, which the test serves from elfutils' debuginfod.
#include <stdint.h>

static __attribute__((noinline)) uint64_t hidden_inner_loop(uint64_t n) {
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < n; i++) x += i * 3;
    return x;
}

static __attribute__((noinline)) uint64_t hidden_middle(uint64_t n) {
    uint64_t r = hidden_inner_loop(n);
    __asm__ volatile("" ::: "memory");
    return r + 1;
}

uint64_t hidden_entry(uint64_t n) {
    uint64_t r = hidden_middle(n);
    __asm__ volatile("" ::: "memory");
    return r + 2;
}
