"""A target whose names are made to forge output: its process name carries a terminal escape and a newline, and
the function it crashes in has a qualified name with a newline and a fake log line after it. The profiler writes
those names into its log, the crash report's text and label values: each must stay on its line, escaped.

Spins until the file GO exists (at most 60 s), then dereferences NULL. Usage: injection.py GO
"""
import ctypes
import os
import sys
import time

# PR_SET_NAME: the main thread's (and so the process's) name.
ctypes.CDLL(None).prctl(15, b"inj\x1b[2J\nx", 0, 0, 0)


def spin_then_crash(go):
    end = time.time() + 60
    while not os.path.exists(go) and time.time() < end:
        pass
    ctypes.string_at(0)


forged = "evil\nERROR forged: the agent was compromised"
spin_then_crash.__code__ = spin_then_crash.__code__.replace(co_qualname=forged, co_name=forged)
spin_then_crash(sys.argv[1])
