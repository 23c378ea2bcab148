/* A native program that burns CPU, then dereferences NULL: for following a process by name (its name is the name
 * it is built under). It spins for at least `min_ms` and until `go_file` exists, so a profiler that follows new
 * processes by name has time to start profiling it, and a test decides when an already running one crashes.
 *
 * Usage: crash-by-name GO_FILE MIN_MS */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Read at run time, so the compiler cannot see the NULL coming. */
static int *volatile nowhere;
static volatile unsigned long sink;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin_a_little(void) {
    for (unsigned long i = 0; i < 1000000; i++)
        sink += i * 31;
}

__attribute__((noinline)) int crash_here(int *p) {
    *p = 42; /* SEGV-LINE */
    return *p;
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    double until = now() + atoi(argv[2]) / 1000.0;
    /* Never longer than a minute, whatever happens to the test. */
    double give_up = now() + 60;
    while (now() < until || access(argv[1], F_OK) != 0) {
        if (now() > give_up)
            return 3;
        spin_a_little();
    }
    return crash_here(nowhere) + 1;
}
