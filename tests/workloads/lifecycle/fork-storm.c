/* fork-storm: a parent that starts and reaps many short-lived children, each burning a little CPU, to check
 * that following them neither crashes nor leaks the profiler.
 *
 *     fork-storm OUT CHILDREN BURN_US WARMUP
 *
 * Each child burns BURN_US microseconds of its own CPU time and exits; the parent reaps each before it forks the
 * next. Driven by SIGUSR1: the first starts a warm-up of WARMUP children (so the profiler has seen this code and
 * its libraries before it is measured), after which the parent writes OUT.warm; the second starts the storm of
 * CHILDREN children, after which it writes OUT (`key value` lines: `children`, `failed`, `storm_ns` (wall),
 * `children_cpu_ns` (user + system of the storm's children)); the third (or SIGTERM) ends it.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FRAME __attribute__((noinline, noipa))

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

FRAME uint64_t child_burn(uint64_t until)
{
    uint64_t x = 88172645463325252ull;
    while (now_ns(CLOCK_PROCESS_CPUTIME_ID) < until) {
        for (int i = 0; i < 200; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            __asm__ volatile("" : "+r"(x));
        }
    }
    return x;
}

static volatile sig_atomic_t go;

static void on_usr1(int sig)
{
    (void)sig;
    go++;
}

static void wait_for_go(int count)
{
    sigset_t none;
    sigemptyset(&none);
    while (go < count)
        sigsuspend(&none);
}

static uint64_t timeval_ns(struct timeval tv)
{
    return (uint64_t)tv.tv_sec * 1000000000u + (uint64_t)tv.tv_usec * 1000u;
}

/* Forks and reaps `children` children one after the other; returns how many failed. */
static int storm(int children, uint64_t burn_ns)
{
    int failed = 0;
    for (int i = 0; i < children; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            child_burn(now_ns(CLOCK_PROCESS_CPUTIME_ID) + burn_ns);
            _exit(0);
        }
        int status;
        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    return failed;
}

static uint64_t children_cpu_ns(void)
{
    struct rusage usage;
    getrusage(RUSAGE_CHILDREN, &usage);
    return timeval_ns(usage.ru_utime) + timeval_ns(usage.ru_stime);
}

/* Writes `text` to `path` whole: into a temporary file renamed into place. */
static void publish(const char *path, const char *text)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out)
        exit(3);
    fputs(text, out);
    fclose(out);
    rename(tmp, path);
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s OUT CHILDREN BURN_US WARMUP\n", argv[0]);
        return 2;
    }
    int children = atoi(argv[2]), warmup = atoi(argv[4]);
    uint64_t burn_ns = (uint64_t)atoi(argv[3]) * 1000u;
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    /* Blocked outside sigsuspend, so a SIGUSR1 sent before the wait is not lost. */
    sigprocmask(SIG_BLOCK, &usr1, NULL);
    signal(SIGUSR1, on_usr1);
    char path[4096], text[1024];

    wait_for_go(1);
    int failed = storm(warmup, burn_ns);
    snprintf(path, sizeof path, "%s.warm", argv[1]);
    snprintf(text, sizeof text, "children %d\nfailed %d\n", warmup, failed);
    publish(path, text);

    wait_for_go(2);
    uint64_t cpu_before = children_cpu_ns(), started = now_ns(CLOCK_MONOTONIC);
    failed = storm(children, burn_ns);
    uint64_t storm_ns = now_ns(CLOCK_MONOTONIC) - started;
    snprintf(text, sizeof text, "children %d\nfailed %d\nstorm_ns %llu\nchildren_cpu_ns %llu\n", children, failed,
             (unsigned long long)storm_ns, (unsigned long long)(children_cpu_ns() - cpu_before));
    publish(argv[1], text);

    wait_for_go(3);
    return 0;
}
