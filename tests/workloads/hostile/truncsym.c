// Runs one function of a library, then cuts the library's file down to its loaded segments (its symbol tables
// and debug information are past them) and runs another: the program still runs, every page it executes is
// there, but a symbolizer that mapped the file and reads the second function's name past the new end gets
// SIGBUS. Usage: truncsym LIBRARY SECONDS_EACH
#include <dlfcn.h>
#include <elf.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    void *handle = dlopen(argv[1], RTLD_NOW);
    if (!handle) return 3;
    void (*first)(double) = (void (*)(double))dlsym(handle, "first_hot");
    void (*second)(double) = (void (*)(double))dlsym(handle, "second_hot");
    if (!first || !second) return 4;
    double seconds = atof(argv[2]);
    first(seconds);
    // The end of the last loaded segment, from the file's own headers.
    FILE *file = fopen(argv[1], "rb");
    Elf64_Ehdr header;
    if (!file || fread(&header, sizeof header, 1, file) != 1) return 5;
    unsigned long end = 0;
    for (int i = 0; i < header.e_phnum; i++) {
        Elf64_Phdr segment;
        fseek(file, header.e_phoff + i * sizeof segment, SEEK_SET);
        if (fread(&segment, sizeof segment, 1, file) != 1) return 6;
        if (segment.p_type == PT_LOAD && segment.p_offset + segment.p_filesz > end) end = segment.p_offset + segment.p_filesz;
    }
    fclose(file);
    end = (end + 4095) & ~4095UL;
    if (truncate(argv[1], end) != 0) return 7;
    fprintf(stderr, "truncated to %lu\n", end);
    second(seconds);
    return 0;
}
