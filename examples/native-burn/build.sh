#!/usr/bin/env bash
# Builds the native workload: OUTDIR/native-burn and OUTDIR/libburnlib.so, which the binary finds through an
# $ORIGIN rpath, so OUTDIR can be anywhere. No frame pointers on purpose: the profiler must unwind with DWARF CFI.
set -euo pipefail

out=${1:?usage: build.sh OUTDIR}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cc=${CC:-gcc}
cflags=(-O2 -g -fomit-frame-pointer -Wall -Wextra -Wl,--build-id)

mkdir -p "$out"
# Link under temporary names and rename, so a process still running the previous build is never disturbed.
"$cc" "${cflags[@]}" -fPIC -shared -o "$out/libburnlib.so.tmp" "$src/burnlib.c"
mv -f "$out/libburnlib.so.tmp" "$out/libburnlib.so"
"$cc" "${cflags[@]}" -pthread -o "$out/native-burn.tmp" "$src/main.c" \
    -L"$out" -lburnlib -Wl,-rpath,'$ORIGIN'
mv -f "$out/native-burn.tmp" "$out/native-burn"
