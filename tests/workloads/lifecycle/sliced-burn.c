/* sliced-burn: burns user-mode CPU in numbered slices, so a profile tells how early in the process's life the
 * profiler started sampling it: slice i runs in its own function slice_NN, for SLICE_MS milliseconds of the
 * process's CPU time, and the first slice with samples bounds the delay.
 *
 *     sliced-burn OUT SLICES SLICE_MS
 *
 * Writes to OUT (when done, or on SIGTERM) one line per fact, `key value`, all times CLOCK_MONOTONIC in ns:
 * `pid`, `start_ns` (main entered), `cpu_ns` (CPU time used), and per finished slice `slice I START_NS END_NS`.
 * Slices past the 32nd all run in slice_rest. The restart test starts it under a unique name (its file name), so
 * `--name` finds exactly these processes. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define FRAME __attribute__((noinline, noipa))

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins until the process has used `until` ns of CPU. */
FRAME uint64_t spin(uint64_t until, uint64_t x)
{
    while (now_ns(CLOCK_PROCESS_CPUTIME_ID) < until) {
        for (int i = 0; i < 1000; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            __asm__ volatile("" : "+r"(x));
        }
    }
    return x;
}

/* `salt` keeps the bodies different, so the compiler cannot fold the functions into one. */
#define SLICE(n, salt)                                                                                             \
    FRAME uint64_t slice_##n(uint64_t until, uint64_t x)                                                           \
    {                                                                                                              \
        x = spin(until, x + salt);                                                                                 \
        __asm__ volatile("" : "+r"(x));                                                                            \
        return x;                                                                                                  \
    }
SLICE(00, 1) SLICE(01, 2) SLICE(02, 3) SLICE(03, 4) SLICE(04, 5) SLICE(05, 6) SLICE(06, 7) SLICE(07, 8)
SLICE(08, 9) SLICE(09, 10) SLICE(10, 11) SLICE(11, 12) SLICE(12, 13) SLICE(13, 14) SLICE(14, 15) SLICE(15, 16)
SLICE(16, 17) SLICE(17, 18) SLICE(18, 19) SLICE(19, 20) SLICE(20, 21) SLICE(21, 22) SLICE(22, 23) SLICE(23, 24)
SLICE(24, 25) SLICE(25, 26) SLICE(26, 27) SLICE(27, 28) SLICE(28, 29) SLICE(29, 30) SLICE(30, 31) SLICE(31, 32)
SLICE(rest, 33)

typedef uint64_t (*slice_fn)(uint64_t, uint64_t);
static const slice_fn SLICES[32] = {
    slice_00, slice_01, slice_02, slice_03, slice_04, slice_05, slice_06, slice_07,
    slice_08, slice_09, slice_10, slice_11, slice_12, slice_13, slice_14, slice_15,
    slice_16, slice_17, slice_18, slice_19, slice_20, slice_21, slice_22, slice_23,
    slice_24, slice_25, slice_26, slice_27, slice_28, slice_29, slice_30, slice_31,
};

static const char *out_path;
static uint64_t start_ns;
static uint64_t (*spans)[2];
static volatile sig_atomic_t finished;

static void report(void)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *out = fopen(tmp, "w");
    if (!out)
        _exit(3);
    fprintf(out, "pid %d\nstart_ns %llu\ncpu_ns %llu\n", (int)getpid(), (unsigned long long)start_ns,
            (unsigned long long)now_ns(CLOCK_PROCESS_CPUTIME_ID));
    for (int i = 0; i < finished; i++)
        fprintf(out, "slice %d %llu %llu\n", i, (unsigned long long)spans[i][0], (unsigned long long)spans[i][1]);
    fclose(out);
    rename(tmp, out_path);
}

static void on_term(int sig)
{
    (void)sig;
    report();
    _exit(0);
}

int main(int argc, char **argv)
{
    start_ns = now_ns(CLOCK_MONOTONIC);
    if (argc != 4) {
        fprintf(stderr, "usage: %s OUT SLICES SLICE_MS\n", argv[0]);
        return 2;
    }
    out_path = argv[1];
    int slices = atoi(argv[2]);
    uint64_t slice_ns = (uint64_t)atoi(argv[3]) * 1000000u;
    spans = calloc((size_t)slices, sizeof *spans);
    signal(SIGTERM, on_term);
    uint64_t x = 88172645463325252ull, cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < slices; i++) {
        spans[i][0] = now_ns(CLOCK_MONOTONIC);
        cpu += slice_ns;
        x = i < 32 ? SLICES[i](cpu, x) : slice_rest(cpu, x);
        spans[i][1] = now_ns(CLOCK_MONOTONIC);
        finished = i + 1;
    }
    report();
    return (int)(x & 0);
}
