"""An asyncio app whose tasks await each other, for `profiler dump`'s task tree.

The tasks, once settled (the file given as the first argument is written then):
- `server` awaits `request-1`, which awaits `asyncio.sleep` in `handle_request`;
- `batch` awaits a `gather` of `fetch-a` and `fetch-b`, each in `asyncio.sleep` in `fetch`;
- `consumer` waits on an `asyncio.Queue` (`Queue.get`) in `consume`;
- the main task (`Task-1`, from `asyncio.run`) awaits `server`.
Runs until killed; with a second argument `crash`, a task `crasher` reads address 0 (SIGSEGV) once a file named
like the first argument plus `.go` exists, with faulthandler enabled (its handler writes the traceback before the
process dies).
"""
import asyncio
import os
import sys


async def handle_request(seconds):
    await asyncio.sleep(seconds)


async def serve():
    request = asyncio.create_task(handle_request(3600), name="request-1")
    await request


async def fetch(seconds):
    await asyncio.sleep(seconds)


async def run_batch():
    first = asyncio.create_task(fetch(3600), name="fetch-a")
    second = asyncio.create_task(fetch(3600), name="fetch-b")
    await asyncio.gather(first, second)


async def consume(queue):
    while True:
        await queue.get()


async def crash_later(go):
    while not os.path.exists(go):
        await asyncio.sleep(0.05)
    import ctypes

    ctypes.string_at(0)


async def main(ready, crash):
    queue = asyncio.Queue()
    server = asyncio.create_task(serve(), name="server")
    asyncio.create_task(run_batch(), name="batch")
    asyncio.create_task(consume(queue), name="consumer")
    # Let every task start and reach its await before saying so.
    if crash:
        asyncio.create_task(crash_later(ready + ".go"), name="crasher")
    await asyncio.sleep(0.2)
    with open(ready, "w") as marker:
        marker.write("ready\n")
    await server


crash = sys.argv[2:] == ["crash"]
if crash:
    import faulthandler

    faulthandler.enable()
asyncio.run(main(sys.argv[1], crash))
