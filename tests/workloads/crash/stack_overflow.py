"""Unbounded C recursion through ctypes in a worker thread with a 256 KiB stack: SIGSEGV when the recursion runs
into the guard page below the thread's stack. The thread exists before the handshake, so its stack is in the maps
the profiler reads when it attaches."""
import sys
import threading

import crashcommon

lib = crashcommon.load_libcrash()


def descend():
    lib.recurse(0)  # CRASH-LINE


def worker_main():
    crashcommon.name_this_thread("deep-worker")
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    descend()


threading.stack_size(256 * 1024)
worker = threading.Thread(target=worker_main, name="deep-worker")
worker.start()
worker.join()
sys.exit("the recursion did not overflow the stack")
