// A library whose file is truncated while the process still has it mapped and a frame of it on the stack:
// outer() calls back into the program, which never returns into it.
__attribute__((noinline)) void outer(void (*callback)(void)) {
    callback();
    __asm__ volatile("" ::: "memory");
}
