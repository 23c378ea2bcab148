// A target that rewrites its address space while it is sampled: the main thread loads a library, runs it for
// ~20 ms, unloads it and loads its twin (same code, other names) in the same place, over and over; a second
// thread writes machine code into fresh anonymous memory, runs it and unmaps it. Usage: churn LIB_A LIB_B SECONDS
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

typedef uint64_t (*hot_fn)(uint64_t);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) uint64_t run_a(hot_fn f, uint64_t n) {
    uint64_t r = f(n);
    __asm__ volatile("" ::: "memory");
    return r + 1;
}

__attribute__((noinline)) uint64_t run_b(hot_fn f, uint64_t n) {
    uint64_t r = f(n);
    __asm__ volatile("" ::: "memory");
    return r + 2;
}

// Never runs: a frame naming it is a wrong frame.
__attribute__((noinline)) uint64_t never_called(uint64_t n) {
    return n * 3 + 1;
}

static double deadline;

// mov rcx, imm64; l: dec rcx; jnz l; ret
static const unsigned char LOOP[] = {0x48, 0xb9, 0, 0, 0, 0, 0, 0, 0, 0, 0x48, 0xff, 0xc9, 0x75, 0xfb, 0xc3};

__attribute__((noinline)) void run_jit(void (*code)(void)) {
    code();
    __asm__ volatile("" ::: "memory");
}

static void *jitter(void *unused) {
    (void)unused;
    pthread_setname_np(pthread_self(), "jitter");
    while (now() < deadline) {
        unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) abort();
        memcpy(page, LOOP, sizeof LOOP);
        uint64_t count = 5000000;
        memcpy(page + 2, &count, sizeof count);
        mprotect(page, 4096, PROT_READ | PROT_EXEC);
        run_jit((void (*)(void))page);
        munmap(page, 4096);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: churn LIB_A LIB_B SECONDS\n");
        return 2;
    }
    deadline = now() + atof(argv[3]);
    pthread_t thread;
    pthread_create(&thread, NULL, jitter, NULL);
    uint64_t sink = never_called(0) == 1 ? 0 : 1;
    while (now() < deadline) {
        void *a = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!a) abort();
        sink += run_a((hot_fn)dlsym(a, "hot_in_a"), 15000000);
        dlclose(a);
        void *b = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
        if (!b) abort();
        sink += run_b((hot_fn)dlsym(b, "hot_in_b"), 15000000);
        dlclose(b);
    }
    pthread_join(thread, NULL);
    printf("%llu\n", (unsigned long long)sink);
    return 0;
}
