// Two functions that spin for a while, far apart in the library, for truncsym.c.
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void first_hot(double seconds) {
    volatile unsigned long x = 0;
    double end = now() + seconds;
    while (now() < end) x++;
}

__attribute__((noinline, aligned(8192))) void second_hot(double seconds) {
    volatile unsigned long x = 0;
    double end = now() + seconds;
    while (now() < end) x += 3;
}
