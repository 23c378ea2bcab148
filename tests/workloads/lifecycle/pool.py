"""A multiprocessing pool of 3 workers, each burning CPU in pure Python in `burn`, for the lifecycle tests.

    python3 pool.py START_METHOD SECONDS OUT

Waits until the file OUT.go exists (so the profiler is recording before the pool starts: its workers are then
forked, or spawned, under the profiler's eyes), then starts `multiprocessing.Pool(3)` with START_METHOD (fork or
spawn) and maps `burn` over three tasks. A barrier of three makes each worker take exactly one task, so every
worker burns SECONDS of its own CPU time. Writes OUT, one `key value` line each: `parent PID`, then per worker
`worker PID CPU_NS` (the CPU time `burn` used in it).
"""

import multiprocessing
import os
import sys
import time

WORKERS = 3
barrier = None


def init(shared_barrier):
    global barrier
    barrier = shared_barrier


def burn(seconds):
    # All three workers hold one task each before any starts burning: no worker can take a second task.
    barrier.wait()
    started = time.thread_time_ns()
    end = started + int(seconds * 1e9)
    total = 0
    while time.thread_time_ns() < end:
        for i in range(2000):
            total += i * i
    return os.getpid(), time.thread_time_ns() - started


def main():
    method, seconds, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    multiprocessing.set_start_method(method)
    while not os.path.exists(out + ".go"):
        time.sleep(0.01)
    shared_barrier = multiprocessing.Barrier(WORKERS)
    with multiprocessing.Pool(WORKERS, initializer=init, initargs=(shared_barrier,)) as pool:
        results = pool.map(burn, [seconds] * WORKERS, chunksize=1)
    lines = [f"parent {os.getpid()}"] + [f"worker {pid} {cpu_ns}" for pid, cpu_ns in results]
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(out + ".tmp", out)


if __name__ == "__main__":
    main()
