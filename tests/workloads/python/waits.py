"""A Python workload whose threads wait in known ways, each measuring its own waits.

- `spinner-0` .. `spinner-2` spin in pure Python: they contend for the GIL, so each runs about a third of the time and
  waits for the GIL the rest (with three spinners, (N-1)/N of its wall time);
- `holder` holds lock L for 150 ms at a time (sleeping while it holds it), then lets go for a moment;
- `locked` takes L over and over: it blocks on the lock while `holder` has it;
- `reader` reads a socket that `writer` writes a byte to every 100 ms: it blocks in recv;
- `sleeper` sleeps 50 ms at a time.

Each thread measures its wall time, its CPU time (time.thread_time_ns), the time spent inside its blocking call
(acquire, recv, sleep: which includes taking the GIL back after the wait) and how many calls it made (the sleeper's
time asleep is that many times 50 ms: the rest of its blocked time is spent waiting for the GIL, which the three
spinners keep busy). The main thread writes the running totals
to the JSON file named on the command line every 0.25 s:
{"writes": K, "<thread>.wall_ns": N, "<thread>.cpu_ns": N, "<thread>.blocked_ns": N, "<thread>.calls": N,
"<thread>.tid": TID, ...}.

Threads are named both ways (threading's name and the OS name, prctl) so profilers that read either see the same.
Usage: python3 waits.py OUT.json
"""
import ctypes
import json
import os
import socket
import sys
import threading
import time

OUT = sys.argv[1]
PR_SET_NAME = 15
LIBC = ctypes.CDLL(None, use_errno=True)
SPINNERS = 3
L = threading.Lock()
STATS = {}


class Stats:
    def __init__(self, name):
        self.name = name
        self.tid = threading.get_native_id()
        self.start_wall = time.perf_counter_ns()
        self.start_cpu = time.thread_time_ns()
        self.cpu_ns = 0
        self.wall_ns = 0
        self.blocked_ns = 0
        self.calls = 0
        LIBC.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
        STATS[name] = self

    def tick(self):
        self.wall_ns = time.perf_counter_ns() - self.start_wall
        self.cpu_ns = time.thread_time_ns() - self.start_cpu

    def blocked(self, call, *args):
        before = time.perf_counter_ns()
        result = call(*args)
        self.blocked_ns += time.perf_counter_ns() - before
        self.calls += 1
        self.tick()
        return result


def spin_step(x):
    for i in range(2_000):
        x = (x * 31 + i) % 1_000_003
    return x


def spinner(name):
    stats = Stats(name)
    x = 1
    while True:
        x = spin_step(x)
        stats.tick()


def holder():
    stats = Stats("holder")
    while True:
        with L:
            time.sleep(0.15)
        stats.tick()
        time.sleep(0.002)


def locked():
    stats = Stats("locked")
    while True:
        stats.blocked(L.acquire)
        L.release()


def reader(sock):
    stats = Stats("reader")
    while True:
        stats.blocked(sock.recv, 1)


def writer(sock):
    Stats("writer")
    while True:
        time.sleep(0.1)
        sock.send(b"x")


def sleeper():
    stats = Stats("sleeper")
    while True:
        stats.blocked(time.sleep, 0.05)


def main():
    ours, theirs = socket.socketpair()
    targets = [(spinner, (f"spinner-{i}",)) for i in range(SPINNERS)]
    targets += [(holder, ()), (locked, ()), (reader, (ours,)), (writer, (theirs,)), (sleeper, ())]
    for target, args in targets:
        name = args[0] if target is spinner else target.__name__
        threading.Thread(target=target, args=args, name=name, daemon=True).start()
    writes = 0
    while True:
        time.sleep(0.25)
        writes += 1
        totals = {"writes": writes}
        for name, stats in list(STATS.items()):
            totals[f"{name}.wall_ns"] = stats.wall_ns
            totals[f"{name}.cpu_ns"] = stats.cpu_ns
            totals[f"{name}.blocked_ns"] = stats.blocked_ns
            totals[f"{name}.tid"] = stats.tid
            totals[f"{name}.calls"] = stats.calls
        with open(OUT + ".tmp", "w") as out:
            json.dump(totals, out)
        os.replace(OUT + ".tmp", OUT)


main()
