"""A single-threaded pure-Python busy loop, for checks that need any Python process (e.g. an unsupported version,
so it is Python 2 as well as Python 3).

Usage: python3 spin.py
"""


def spin_step(x):
    for i in range(10000):
        x = (x * 31 + i) % 1000003
    return x


def spin_forever():
    x = 1
    while True:
        x = spin_step(x)


spin_forever()
