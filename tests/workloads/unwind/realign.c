/* realign: a hot leaf reached through a function whose CFA is a DWARF expression.
 *
 * realigned() keeps a 64-byte-aligned array and passes arguments on the stack to the leaf it calls, so GCC
 * realigns its stack through a DRAP register: the prologue saves the caller's stack pointer (in r10, pushed below
 * rbp) and the CFI says `DW_CFA_def_cfa_expression (DW_OP_breg6 (rbp): -8; DW_OP_deref)`. An unwinder that cannot
 * evaluate that expression falls back to frame pointers there, gets the caller's stack pointer wrong, and loses
 * run_loop and main, which (built with -fomit-frame-pointer) can only be unwound from the right stack pointer.
 *
 * Most of the time goes to hot_leaf (a caller frame through realigned), some to realigned's own loop (realigned as
 * the sampled frame). Ends by itself after argv[1] seconds (default 600), so it cannot outlive a test run that was
 * killed before it could kill it. */
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

/* Eight arguments: the last two go on the stack, which is what makes GCC realign realigned()'s frame with DRAP
 * rather than with a plain frame pointer. */
FRAME uint64_t hot_leaf(const uint64_t *v, uint64_t a, uint64_t b, uint64_t c, uint64_t d, uint64_t e, uint64_t f,
                        uint64_t g)
{
    uint64_t x = v[0] ^ a ^ b ^ c ^ d ^ e ^ f ^ g;
    for (long i = 0; i < 4000000; i++)
        STEP(x);
    return x;
}

FRAME uint64_t realigned(uint64_t seed)
{
    _Alignas(64) uint64_t v[16];
    for (int i = 0; i < 16; i++)
        v[i] = seed + (uint64_t)i;
    /* Some work in this frame itself, so samples also land here with the CFA defined by the expression. */
    for (long i = 0; i < 1000000; i++)
        STEP(v[i & 15]);
    __asm__ volatile("" : : "r"(v) : "memory");
    return hot_leaf(v, v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
}

/* A frame with its own locals and no frame pointer between realigned and main. */
FRAME uint64_t run_loop(uint64_t seed)
{
    volatile uint64_t sums[8] = { 0 };
    for (;;) {
        seed = realigned(seed);
        sums[seed & 7] += seed;
    }
}

static void on_alarm(int sig)
{
    (void)sig;
    _exit(0);
}

int main(int argc, char **argv)
{
    unsigned seconds = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 600;
    struct sigaction alrm = { .sa_handler = on_alarm };
    sigaction(SIGALRM, &alrm, NULL);
    alarm(seconds ? seconds : 600);
    return (int)run_loop(0x2545f4914f6cdd1du);
}
