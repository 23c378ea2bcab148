// Not a Python, though it looks like one: its file is named python3.13, it exports _PyRuntime starting with the
// "xdebugpy" cookie of CPython 3.13 and the version 3.13.5, and it spins in a function named
// _PyEval_EvalFrameDefault. Everything after the version is garbage: pseudo-random words, some of them pointers
// into its own memory, so that a reader trusting the offsets finds readable memory and nonsense in it.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct runtime {
    char cookie[8];
    uint64_t version;
    uint64_t garbage[1022];
};

struct runtime _PyRuntime = {"xdebugpy", 0x030D05F0, {0}};
static uint64_t heap_words[4096];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void _PyEval_EvalFrameDefault(double end) {
    volatile unsigned long x = 0;
    while (now() < end) x++;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    uint64_t *targets[] = {_PyRuntime.garbage, heap_words};
    for (int i = 0; i < 1022; i++) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        // A third are pointers into the garbage itself or the other garbage array, the rest small or wild numbers.
        switch (state % 3) {
        case 0: _PyRuntime.garbage[i] = (uint64_t)(targets[state & 1] + (state >> 8) % 1000); break;
        case 1: _PyRuntime.garbage[i] = (state >> 40) % 4096; break;
        default: _PyRuntime.garbage[i] = state; break;
        }
    }
    for (int i = 0; i < 4096; i++) {
        state ^= state << 13, state ^= state >> 7, state ^= state << 17;
        heap_words[i] = state % 2 ? (uint64_t)(heap_words + state % 4096) : state;
    }
    _PyEval_EvalFrameDefault(now() + seconds);
    return 0;
}
