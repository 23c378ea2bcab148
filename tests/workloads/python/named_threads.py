"""Threads named only through `threading` (no prctl), each spinning in pure Python, for the thread-name test.

- the main thread, renamed `named-main` (a main thread keeps its process's name only while threading's is the
  default `MainThread`);
- `scheduler`: a `Thread` subclass that sets an attribute of its own before `Thread.__init__`, as the demo app's does;
- `AnyIO worker thread`, the name AnyIO gives its workers (a plain `Thread(name=...)`);
- two `ThreadPoolExecutor` workers (`ThreadPoolExecutor-0_0`, `ThreadPoolExecutor-0_1`);
- a name longer than the kernel's 15 bytes, and one beyond ASCII.

When all run, it writes `{native_id: name}` of every thread (threading's own account) to the file named by its
argument, then spins until killed. Python 3.14 also gives the names to the OS (cut to 15 bytes); older versions
leave every thread the process's name.
Usage: python3 named_threads.py READY_JSON
"""
import concurrent.futures
import json
import os
import sys
import threading
import time

running = threading.Barrier(7)


def spin():
    running.wait()
    x = 1
    while True:
        for i in range(10_000):
            x = (x * 31 + i) % 1_000_003


class Scheduler(threading.Thread):
    def __init__(self):
        self.interval = 3.0
        super().__init__(name="scheduler", daemon=True)

    def run(self):
        spin()


def main():
    threading.current_thread().name = "named-main"
    Scheduler().start()
    for name in ("AnyIO worker thread", "a thread named beyond the kernel's fifteen bytes", "Überwachung"):
        threading.Thread(target=spin, name=name, daemon=True).start()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    for _ in range(2):
        pool.submit(spin)
    running.wait()
    time.sleep(0.2)
    names = {t.native_id: t.name for t in threading.enumerate()}
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump(names, out, ensure_ascii=False)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    x = 2
    while True:
        for i in range(10_000):
            x = (x * 31 + i) % 1_000_003


main()
