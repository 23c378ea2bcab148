/* one-busy-thread: a process of a single thread that does nothing but burn user-mode CPU, so the samples the
 * profiler takes of it measure the sampling rate itself.
 *
 * The test marks its measuring window with two SIGUSR1s: the thread spins in before_window until the first, in
 * in_window until the second, then in after_window. Counting the samples whose leaf is in_window, against the CPU
 * time the thread had between the two signals, needs no knowledge of when the profiler started or stopped sampling.
 * Ends by itself after argv[1] seconds (default 600), so it cannot outlive a test run that was killed before it
 * could kill it. */
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

/* Every function is a real frame, as the test expects it by name. */
#define FRAME __attribute__((noinline, noipa))

/* One xorshift step, opaque to the optimiser so the loop is neither removed nor folded. */
#define STEP(x)                                                                                                    \
    do {                                                                                                           \
        (x) ^= (x) << 13;                                                                                          \
        (x) ^= (x) >> 7;                                                                                           \
        (x) ^= (x) << 17;                                                                                          \
        __asm__ volatile("" : "+r"(x));                                                                            \
    } while (0)

static volatile sig_atomic_t phase;

static void next_phase(int sig)
{
    (void)sig;
    phase++;
}

static void on_alarm(int sig)
{
    (void)sig;
    _exit(0);
}

FRAME uint64_t before_window(uint64_t x)
{
    while (phase == 0)
        STEP(x);
    return x;
}

FRAME uint64_t in_window(uint64_t x)
{
    while (phase == 1)
        STEP(x);
    return x;
}

FRAME uint64_t after_window(uint64_t x)
{
    for (;;)
        STEP(x);
    return x;
}

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 600;
    struct sigaction usr1 = { .sa_handler = next_phase };
    struct sigaction alrm = { .sa_handler = on_alarm };
    sigaction(SIGUSR1, &usr1, NULL);
    sigaction(SIGALRM, &alrm, NULL);
    alarm(seconds ? seconds : 600);
    uint64_t x = before_window(0x2545f4914f6cdd1du);
    x = in_window(x);
    return (int)after_window(x);
}
