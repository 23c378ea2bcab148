// A target that maps code as fast as it can: its own executable, mapped PROT_EXEC and unmapped in a loop for
// SECONDS. Every such mmap is an event for the profiler; re-reading the whole maps file for each one would make
// the agent burn a CPU at the target's command. Usage: mapstorm SECONDS
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int fd = open("/proc/self/exe", O_RDONLY);
    if (fd < 0) return 3;
    double end = now() + atof(argv[1]);
    unsigned long maps = 0;
    while (now() < end) {
        void *code = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
        if (code == MAP_FAILED) return 4;
        munmap(code, 4096);
        maps++;
    }
    printf("%lu\n", maps);
    return 0;
}
