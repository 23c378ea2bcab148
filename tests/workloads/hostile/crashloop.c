// A target that faults in a loop and survives every fault: handlers for SIGSEGV, SIGFPE and SIGILL jump back
// into the loop, and the faults alternate, so that no two in a row are the same signal. Each one is a crash the
// kernel reports; a profiler that writes a report for each is a file and log flood at the target's command.
// Spins until GO exists, then faults for SECONDS. Usage: crashloop GO SECONDS
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static sigjmp_buf back;
static int *volatile nowhere;
static volatile int zero;

static void handler(int signal) {
    (void)signal;
    siglongjmp(back, 1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void fault(int which) {
    switch (which % 3) {
    case 0: *nowhere = 1; break;
    case 1: zero = 1 / zero; break;
    default: __builtin_trap();
    }
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    struct sigaction action = {0};
    action.sa_handler = handler;
    action.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &action, NULL);
    sigaction(SIGFPE, &action, NULL);
    sigaction(SIGILL, &action, NULL);
    double give_up = now() + 60;
    while (access(argv[1], F_OK) != 0 && now() < give_up) {
    }
    double end = now() + atof(argv[2]);
    volatile int faults = 0;
    while (now() < end) {
        if (sigsetjmp(back, 1) == 0) fault(faults);
        faults++;
        usleep(1000);
    }
    return 0;
}
