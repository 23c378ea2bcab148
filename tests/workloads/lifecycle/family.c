/* family: a parent that forks one child and exits before it, for `record --pid PARENT` without --duration, which
 * must end only once both are gone.
 *
 *     family OUT PARENT_MS CHILD_MS
 *
 * Waits until the file OUT.go exists (so the profiler records before the child is forked), then forks. The parent
 * burns CPU in parent_burn for PARENT_MS milliseconds (wall) and exits without waiting for the child;
 * the child burns in child_burn for CHILD_MS milliseconds and, just before it exits, writes OUT: `key value`
 * lines `parent`, `child`, `child_exit_ns` (CLOCK_MONOTONIC). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#define FRAME __attribute__((noinline, noipa))

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t spin_until(uint64_t until)
{
    uint64_t x = 88172645463325252ull;
    while (now_ns() < until) {
        for (int i = 0; i < 1000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            __asm__ volatile("" : "+r"(x));
        }
    }
    return x;
}

FRAME uint64_t parent_burn(uint64_t until) { return spin_until(until); }
FRAME uint64_t child_burn(uint64_t until) { return spin_until(until); }

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s OUT PARENT_MS CHILD_MS\n", argv[0]);
        return 2;
    }
    char go[4096];
    snprintf(go, sizeof go, "%s.go", argv[1]);
    struct stat st;
    while (stat(go, &st) != 0)
        usleep(10000);
    uint64_t start = now_ns();
    uint64_t parent_ms = (uint64_t)atoi(argv[2]), child_ms = (uint64_t)atoi(argv[3]);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0)
        return 3;
    if (child == 0) {
        uint64_t x = child_burn(start + child_ms * 1000000u);
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
        FILE *out = fopen(tmp, "w");
        if (!out)
            _exit(3);
        fprintf(out, "parent %d\nchild %d\nchild_exit_ns %llu\n", (int)parent, (int)getpid(),
                (unsigned long long)now_ns());
        fclose(out);
        rename(tmp, argv[1]);
        _exit((int)(x & 0));
    }
    return (int)(parent_burn(start + parent_ms * 1000000u) & 0);
}
