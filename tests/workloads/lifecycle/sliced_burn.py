"""sliced-burn.c in Python: burns CPU in numbered slices, slice i in its own function slice_NN, for SLICE_MS
milliseconds of the process's CPU time each, so a profile tells how early in the process's life the profiler
started sampling it (and walking its Python frames).

    python3 sliced_burn.py OUT SLICES SLICE_MS

Writes OUT like sliced-burn.c: `pid`, `start_ns` (when the script started running, CLOCK_MONOTONIC), `cpu_ns`,
and per slice `slice I START_NS END_NS`. On SIGTERM it writes what it has and exits.
"""

import os
import signal
import sys
import time

START_NS = time.monotonic_ns()
SLICES = 32

# slice_00 ... slice_31 as real, separately named functions of this file.
exec(
    compile(
        "".join(
            f"def slice_{i:02d}(until):\n"
            f"    total = 0\n"
            f"    while time.process_time_ns() < until:\n"
            f"        for j in range(500):\n"
            f"            total += j * {i + 1}\n"
            f"    return total\n"
            for i in range(SLICES)
        ),
        __file__,
        "exec",
    )
)

spans = []


def report(out):
    lines = [f"pid {os.getpid()}", f"start_ns {START_NS}", f"cpu_ns {time.process_time_ns()}"]
    lines += [f"slice {i} {start} {end}" for i, (start, end) in enumerate(spans)]
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(out + ".tmp", out)


def main():
    out, slices, slice_ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) * 1_000_000

    def on_term(*_):
        report(out)
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    cpu = time.process_time_ns()
    functions = [globals()[f"slice_{i:02d}"] for i in range(SLICES)]
    for i in range(slices):
        start = time.monotonic_ns()
        cpu += slice_ns
        functions[min(i, SLICES - 1)](cpu)
        spans.append((start, time.monotonic_ns()))
    report(out)


if __name__ == "__main__":
    main()
