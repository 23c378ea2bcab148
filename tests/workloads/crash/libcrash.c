/* Ways to crash, called through ctypes by the Python crash workloads next to this file.
 *
 * Every function is noinline, and a caller does work after its call, so caller and callee both stay on the stack
 * (no inlining, no tail call). The marked lines are the ones the tests expect at the top of the crash stack. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define CRASHER __attribute__((noinline, visibility("default")))

/* SIGSEGV: `p` comes from the caller (NULL from Python), so the compiler cannot see the fault coming. */
CRASHER int crash_here(int *p) {
    *p = 42; /* SEGV-LINE */
    return *p;
}

CRASHER int do_crash(int *p) {
    int stored = crash_here(p);
    return stored + 1;
}

/* SIGABRT: abort() raises it from inside libc. */
CRASHER void call_abort(void) {
    abort();
}

/* SIGFPE: volatile operands force a real idiv (no constant folding, no trap removed as undefined behaviour). */
CRASHER int divide(int a, int b) {
    volatile int dividend = a, divisor = b;
    return dividend / divisor; /* FPE-LINE */
}

/* SIGBUS: a shared mapping two pages long over a file truncated to nothing; the first page has no file behind it
 * any more. The address is printed first so the test can compare it with the report's fault address. */
CRASHER int touch_truncated(const char *path) {
    long page = sysconf(_SC_PAGESIZE);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, page) != 0)
        return -1;
    volatile char *map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED)
        return -2;
    if (ftruncate(fd, 0) != 0)
        return -3;
    fprintf(stderr, "touch_truncated: mapping at %p\n", (void *)map);
    fflush(stderr);
    map[0] = 1; /* BUS-LINE */
    return map[0];
}

/* A race over a buffer between two threads: `race_read` keeps reading it while `race_release` unmaps it, so the
 * next read faults at the buffer's address. The releasing thread then keeps running in C (race_after_release),
 * so the crash catches it there, in the middle of what it was doing to the reader. */
#define RACE_BYTES (1 << 16)
static volatile char *volatile race_buffer;

CRASHER int race_setup(void) {
    void *buffer = mmap(NULL, RACE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buffer == MAP_FAILED)
        return -1;
    race_buffer = buffer;
    return 0;
}

CRASHER long race_read(void) {
    long sum = 0;
    for (;;) {
        volatile char *buffer = race_buffer;
        for (int i = 0; i < RACE_BYTES; i += 64)
            sum += buffer[i]; /* RACE-READ-LINE */
    }
    return sum;
}

/* Never set: the spin cannot be proven endless, so its caller stays on the stack below it (no tail call). */
static volatile int race_stop;

CRASHER long race_after_release(void) {
    long spins = 0;
    while (!race_stop)
        spins++;
    return spins;
}

CRASHER long race_release(void) {
    /* ctypes let go of the GIL for this call; the wait lets the Python threads settle who holds it now. */
    usleep(50 * 1000);
    munmap((void *)race_buffer, RACE_BYTES);
    long spins = race_after_release();
    return spins + 1;
}

/* SIGSEGV at NULL + 0x18: a field 0x18 bytes into a struct read through a NULL pointer (the read is one
 * `mov eax, [rdi+0x18]`). */
struct record {
    long id;    /* 0x00 */
    long kind;  /* 0x08 */
    long flags; /* 0x10 */
    int count;  /* 0x18 */
};

CRASHER int read_count(const struct record *r) {
    return r->count; /* FIELD-LINE */
}

CRASHER int sum_counts(const struct record *r) {
    int count = read_count(r);
    return count + 1;
}

/* SIGSEGV by stack overflow: recursion that cannot become a loop (each frame's volatile buffer is used after the
 * call returns) and never ends (the volatile limit is never reached), until the thread's stack runs out. */
volatile long recursion_limit = -1;

CRASHER long recurse(long depth) {
    volatile char frame[256];
    frame[0] = (char)depth;
    if (depth == recursion_limit)
        return 0;
    long below = recurse(depth + 1); /* RECURSE-LINE */
    return below + frame[0];
}
