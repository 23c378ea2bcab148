"""Python work in the main thread until something kills the process (or two minutes pass)."""
import crashcommon


def spin_forever():
    for _ in range(240):
        crashcommon.busy_python_work(0.5)


crashcommon.handshake()
spin_forever()
