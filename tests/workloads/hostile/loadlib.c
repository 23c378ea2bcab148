// Loads a library and spins in it (through victim.c's outer(), which calls back into the program), with a way to
// turn its file against a reader. Usage: loadlib LIBRARY SECONDS [fifo]
//   fifo: once loaded, the library's file is deleted and a FIFO is made at "LIBRARY (deleted)", the path the
//         kernel then shows in /proc/PID/maps: a reader that opens the mapped path waits for a writer forever.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double deadline;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void spin(void) {
    volatile unsigned long x = 0;
    while (now() < deadline) x++;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    void *handle = dlopen(argv[1], RTLD_NOW);
    if (!handle) {
        fprintf(stderr, "%s\n", dlerror());
        return 3;
    }
    if (argc > 3 && strcmp(argv[3], "fifo") == 0) {
        char fifo[4096];
        snprintf(fifo, sizeof fifo, "%s (deleted)", argv[1]);
        if (unlink(argv[1]) != 0 || mkfifo(fifo, 0644) != 0) return 4;
    }
    void (*outer)(void (*)(void)) = (void (*)(void (*)(void)))dlsym(handle, "outer");
    if (!outer) return 5;
    deadline = now() + atof(argv[2]);
    outer(spin);
    return 0;
}
