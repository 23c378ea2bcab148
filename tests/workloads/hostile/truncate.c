// Truncates a library it has mapped, while a frame of it is on the stack, so that every unwind through that frame
// meets a file that ended: spins 1.5 s (the profiler loads the library's unwind tables), truncates the file,
// spins 3 s more, and leaves with _exit (returning into the library, or its destructors, would fault).
// Usage: truncate LIBRARY
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static const char *library;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin_until(double end) {
    volatile unsigned long x = 0;
    while (now() < end) x++;
}

__attribute__((noinline)) void cut_and_spin(void) {
    spin_until(now() + 1.5);
    if (truncate(library, 0) != 0) abort();
    fprintf(stderr, "truncated\n");
    spin_until(now() + 3.0);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    library = argv[1];
    void *handle = dlopen(library, RTLD_NOW);
    if (!handle) abort();
    void (*outer)(void (*)(void)) = (void (*)(void (*)(void)))dlsym(handle, "outer");
    outer(cut_and_spin);
    return 1;
}
