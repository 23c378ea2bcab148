"""segv_thread.py with faulthandler enabled: its handler prints the Python traceback, then re-raises SIGSEGV."""
import faulthandler
import sys
import threading

import crashcommon

faulthandler.enable()
lib = crashcommon.load_libcrash()


def bad_handler():
    crashcommon.busy_python_work(0.5)
    lib.do_crash(None)  # CRASH-LINE


def worker_main():
    crashcommon.name_this_thread("fh-worker")
    crashcommon.handshake()
    bad_handler()


worker = threading.Thread(target=worker_main, name="fh-worker")
worker.start()
worker.join()
sys.exit("the NULL dereference did not crash")
