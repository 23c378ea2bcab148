// Calls the stripped library's entry point in a loop for SECONDS. Usage: calls_hidden SECONDS
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

uint64_t hidden_entry(uint64_t n);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    double end = now() + atof(argv[1]);
    uint64_t sink = 0;
    while (now() < end) sink += hidden_entry(1000000);
    printf("%llu\n", (unsigned long long)sink);
    return 0;
}
