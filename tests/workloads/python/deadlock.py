"""Workload for `profiler dump`: a process that hangs but keeps running.

Two threads deadlock on two threading.Lock objects (each holds one and waits for the other), a third sleeps in
time.sleep, and a fourth keeps incrementing a counter written to a file, so a test can see the process was not
stopped while it was dumped. Writes "ready" to the file named by argv[1] once the deadlock is in place.
"""
import os
import sys
import threading
import time

ready_path = sys.argv[1]
counter_path = sys.argv[2]
lock_a = threading.Lock()
lock_b = threading.Lock()
both_hold = threading.Barrier(2)


def deadlock_take_b_while_holding_a():
    with lock_a:
        both_hold.wait()
        with lock_b:
            pass


def deadlock_take_a_while_holding_b():
    with lock_b:
        both_hold.wait()
        with lock_a:
            pass


def sleep_for_a_long_time():
    time.sleep(3600)


def count_forever():
    count = 0
    while True:
        count += 1
        tmp = counter_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(count))
        os.replace(tmp, counter_path)
        time.sleep(0.01)


threads = [
    threading.Thread(target=deadlock_take_b_while_holding_a, name="locker-a", daemon=True),
    threading.Thread(target=deadlock_take_a_while_holding_b, name="locker-b", daemon=True),
    threading.Thread(target=sleep_for_a_long_time, name="sleeper", daemon=True),
    threading.Thread(target=count_forever, name="counter", daemon=True),
]
for thread in threads:
    thread.start()
# Both lockers hold their first lock once the barrier lets them through; give them a moment to block on the other.
while not (lock_a.locked() and lock_b.locked()):
    time.sleep(0.01)
time.sleep(0.2)
with open(ready_path, "w") as f:
    f.write("ready")
threads[0].join()
