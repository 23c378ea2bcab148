"""A crash in a race between two threads, with three more threads doing something else at that moment.

`reader` reads a C buffer (race_read) that `releaser` unmaps (race_release, then spinning in C in
race_after_release): the reader faults. Meanwhile `locker` waits for a lock that is never released
(wait_for_lock), `sleeper` sleeps (nap), `spinner` runs pure Python and so holds the GIL (spin_python), and the
main thread waits in join() for the reader.
"""
import ctypes
import sys
import threading
import time

import crashcommon

lib = crashcommon.load_libcrash()
lib.race_setup.restype = ctypes.c_int
lib.race_read.restype = ctypes.c_long
lib.race_release.restype = ctypes.c_long
if lib.race_setup() != 0:
    sys.exit("race_setup failed")

reading = threading.Event()
never_released = threading.Lock()
never_released.acquire()


def wait_for_lock():
    never_released.acquire()


def nap():
    time.sleep(1000)


def spin_python():
    x = 0
    while True:
        x = (x * 7 + 1) % 1_000_003


def read_shared_buffer():
    reading.set()
    return lib.race_read()  # CRASH-LINE


def release_shared_buffer():
    lib.race_release()


def reader_main():
    crashcommon.name_this_thread("reader")
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    read_shared_buffer()


def releaser_main():
    crashcommon.name_this_thread("releaser")
    reading.wait()
    time.sleep(0.3)
    release_shared_buffer()


def named(name, function):
    def run():
        crashcommon.name_this_thread(name)
        function()

    return run


for name, function in [("locker", wait_for_lock), ("sleeper", nap), ("spinner", spin_python)]:
    threading.Thread(target=named(name, function), name=name, daemon=True).start()
threading.Thread(target=releaser_main, name="releaser", daemon=True).start()
reader = threading.Thread(target=reader_main, name="reader")
reader.start()
reader.join()
sys.exit("the race did not crash")
