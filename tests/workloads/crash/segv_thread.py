"""A NULL dereference in C, reached through ctypes from a Python function in a worker thread, after 2 s of Python
work in that thread."""
import sys
import threading

import crashcommon

lib = crashcommon.load_libcrash()


def bad_handler():
    crashcommon.busy_python_work(2.0)
    lib.do_crash(None)  # CRASH-LINE


def worker_main():
    crashcommon.name_this_thread("crash-worker")
    crashcommon.handshake()
    bad_handler()


worker = threading.Thread(target=worker_main, name="crash-worker")
worker.start()
worker.join()
sys.exit("the NULL dereference did not crash")
