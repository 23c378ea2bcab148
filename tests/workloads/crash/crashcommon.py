"""Shared by the Python crash workloads: loading libcrash, the handshake with the test, thread names, Python work.

Every workload is run as `python3 SCRIPT LIBCRASH DIR`: it writes DIR/ready ("PID TID" of the thread that will
crash) once it is set up, waits for the test to create DIR/go (the profiler is recording by then), and crashes
the way its name says, in a function whose crashing line is marked `# CRASH-LINE`.
"""
import ctypes
import os
import sys
import threading
import time

PR_SET_NAME = 15
LIBC = ctypes.CDLL(None, use_errno=True)


def load_libcrash():
    lib = ctypes.CDLL(sys.argv[1])
    lib.do_crash.argtypes = [ctypes.POINTER(ctypes.c_int)]
    lib.do_crash.restype = ctypes.c_int
    lib.call_abort.argtypes = []
    lib.call_abort.restype = None
    lib.divide.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.divide.restype = ctypes.c_int
    lib.touch_truncated.argtypes = [ctypes.c_char_p]
    lib.touch_truncated.restype = ctypes.c_int
    lib.sum_counts.argtypes = [ctypes.c_void_p]
    lib.sum_counts.restype = ctypes.c_int
    lib.recurse.argtypes = [ctypes.c_long]
    lib.recurse.restype = ctypes.c_long
    return lib


def work_dir():
    return sys.argv[2]


def name_this_thread(name):
    """The OS thread name (what the kernel, and so the profiler, calls the thread): at most 15 bytes."""
    LIBC.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def handshake():
    """Says this thread is ready, then waits for the test's go-ahead."""
    ready = os.path.join(work_dir(), "ready")
    with open(ready + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {threading.get_native_id()}\n")
    os.rename(ready + ".tmp", ready)
    go = os.path.join(work_dir(), "go")
    give_up = time.monotonic() + 120
    while not os.path.exists(go):
        if time.monotonic() > give_up:
            sys.exit("no go-ahead from the test within 120 s")
        time.sleep(0.01)


def busy_python_work(seconds):
    """Pure-Python CPU work, all of it in this function's own frame, for `seconds` of this thread's CPU time
    (not of the clock): on a busy machine it still gives the sampler as many chances to see it."""
    end = time.thread_time() + seconds
    x = 1
    while time.thread_time() < end:
        for i in range(2_000):
            x = (x * 31 + i) % 1_000_003
    return x
