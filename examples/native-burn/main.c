/* native-burn: a native workload whose CPU profile is known by construction, for the profiler's demo and tests.
 *
 * Three threads spin until killed (or for argv[1] seconds, then exit 0):
 *   main thread  main → run_main_loop → level_1 → level_2 → level_3 → hot_main_a (60%) / hot_main_b (40%)
 *   "burn-a"     thread_a_entry → a_level_1 → lib_dispatch → lib_hot_x   (the last two in libburnlib.so)
 *   "burn-b"     thread_b_entry → b_level_1 → b_level_2 → hot_b
 * The 60/40 split is by construction: each round, level_3 gives hot_main_a 3 units and hot_main_b 2 units of the
 * same work (burn.h). Each caller uses its callee's result after the call, so no call becomes a tail jump and every
 * frame stays on the stack. Prints nothing unless something fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "burn.h"
#include "burnlib.h"

static volatile uint64_t sink;

BURN_FRAME uint64_t hot_main_a(uint64_t x, unsigned units)
{
    BURN_UNITS(x, units);
    sink = x;
    return x;
}

BURN_FRAME uint64_t hot_main_b(uint64_t x, unsigned units)
{
    BURN_UNITS(x, units);
    sink = x;
    return x;
}

BURN_FRAME uint64_t level_3(uint64_t x)
{
    x = hot_main_a(x, 3);
    x = hot_main_b(x, 2);
    return x + 1;
}

BURN_FRAME uint64_t level_2(uint64_t x) { return level_3(x) + 1; }

BURN_FRAME uint64_t level_1(uint64_t x) { return level_2(x) + 1; }

BURN_FRAME uint64_t run_main_loop(uint64_t x)
{
    for (;;)
        x = level_1(x);
    return x;
}

BURN_FRAME uint64_t a_level_1(uint64_t x) { return lib_dispatch(x, 1) + 1; }

BURN_FRAME void *thread_a_entry(void *arg)
{
    uint64_t x = (uintptr_t)arg;
    for (;;)
        x = a_level_1(x);
    return NULL;
}

BURN_FRAME uint64_t hot_b(uint64_t x, unsigned units)
{
    BURN_UNITS(x, units);
    sink = x;
    return x;
}

BURN_FRAME uint64_t b_level_2(uint64_t x) { return hot_b(x, 1) + 1; }

BURN_FRAME uint64_t b_level_1(uint64_t x) { return b_level_2(x) + 1; }

BURN_FRAME void *thread_b_entry(void *arg)
{
    uint64_t x = (uintptr_t)arg;
    for (;;)
        x = b_level_1(x);
    return NULL;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "native-burn: %s: %s\n", what, strerror(err));
    exit(1);
}

static void start_thread(const char *name, void *(*entry)(void *), uintptr_t seed)
{
    pthread_t thread;
    int err = pthread_create(&thread, NULL, entry, (void *)seed);
    if (err)
        die("pthread_create", err);
    /* Named by its creator, before main starts burning, so the name is there from the thread's first sample. */
    err = pthread_setname_np(thread, name);
    if (err)
        die("pthread_setname_np", err);
}

/* The time limit ends the process from a signal handler, so the hot loops need no clock reads or flag checks. */
static void on_alarm(int sig)
{
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc > 2) {
        fprintf(stderr, "usage: %s [SECONDS]\n", argv[0]);
        return 2;
    }
    if (argc == 2) {
        char *end;
        errno = 0;
        unsigned long seconds = strtoul(argv[1], &end, 10);
        if (errno || end == argv[1] || *end || seconds == 0 || seconds > 1000000) {
            fprintf(stderr, "native-burn: SECONDS must be a whole number from 1 to 1000000, got '%s'\n", argv[1]);
            return 2;
        }
        struct sigaction sa = { .sa_handler = on_alarm };
        if (sigaction(SIGALRM, &sa, NULL))
            die("sigaction", errno);
        alarm((unsigned)seconds);
    }
    start_thread("burn-a", thread_a_entry, 0x9e3779b97f4a7c15u);
    start_thread("burn-b", thread_b_entry, 0xd1b54a32d192ed03u);
    run_main_loop(0x2545f4914f6cdd1du);
    return 0;
}
