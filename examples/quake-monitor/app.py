"""Earthquake & Weather Monitor, small edition: the FastAPI app the profiler's demo and tests run under uvicorn.

Shaped like the real service: an earthquakes endpoint that parses a QuakeML feed with lxml and summarizes it with
numpy, a weather endpoint doing pure-Python JSON work, and a background scheduler thread that refreshes both every
few seconds.

    uvicorn app:app --port 8000 --workers 1
"""

from __future__ import annotations

import ctypes
import itertools
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

import quakes
import weather

REFRESH_SECONDS = 3.0
# Generated once: every request and refresh parses the same bytes, so profiles of runs are comparable.
FEED = quakes.generate_feed()


class Snapshot:
    """What the scheduler computed last, shared with the request handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.refreshes = 0
        self.refreshed_at: float | None = None
        self.earthquakes: dict = {}
        self.weather: dict = {}

    def store(self, earthquakes: dict, weather_report: dict) -> None:
        with self._lock:
            self.refreshes += 1
            self.refreshed_at = time.time()
            self.earthquakes, self.weather = earthquakes, weather_report

    def status(self) -> dict:
        with self._lock:
            return {"refreshes": self.refreshes, "refreshed_at": self.refreshed_at}

    def latest(self) -> dict:
        with self._lock:
            return {"refreshed_at": self.refreshed_at, "earthquakes": self.earthquakes, "weather": self.weather}


class Scheduler(threading.Thread):
    """APScheduler-style interval job: refresh the snapshot now and then every `interval` seconds until stopped."""

    def __init__(self, snapshot: Snapshot, interval: float = REFRESH_SECONDS) -> None:
        super().__init__(name="scheduler", daemon=True)
        self.snapshot = snapshot
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        for seed in itertools.count():
            refresh(self.snapshot, seed)
            if self.stopping.wait(self.interval):
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)


def refresh(snapshot: Snapshot, seed: int) -> None:
    catalog = quakes.parse_feed(FEED)
    snapshot.store(quakes.statistics(catalog), weather.report(seed=seed))


snapshot = Snapshot()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    scheduler = Scheduler(snapshot)
    scheduler.start()
    yield
    scheduler.stop()


app = FastAPI(title="Earthquake & Weather Monitor", lifespan=lifespan)
weather_requests = itertools.count()


@app.get("/health")
async def health() -> dict:
    return {"status": "ok", **snapshot.status()}


@app.get("/latest")
async def latest() -> dict:
    """What the scheduler computed last: the cheap path, as a dashboard would poll it."""
    return snapshot.latest()


# A plain `def`: FastAPI runs it in its worker thread pool, as the real service does with its blocking work.
@app.get("/earthquakes")
def earthquakes(min_magnitude: float = 0.0) -> dict:
    catalog = quakes.parse_feed(FEED)
    return quakes.statistics(catalog, min_magnitude)


# An `async def` doing CPU work on the event loop, as the real service does: it shows under uvicorn's asyncio frames.
@app.get("/weather")
async def weather_report() -> dict:
    return weather.report(seed=next(weather_requests) % 16)


# The kind of crash the real service has now and then: a C call handed a bad pointer, from a worker thread. Only
# when the app is started with QUAKE_CRASH_ENDPOINT=1 (the demo and the crash tests do), so it is never exposed
# by accident.
if os.environ.get("QUAKE_CRASH_ENDPOINT") == "1":

    @app.get("/crash")
    def crash() -> dict:
        return {"read": read_sensor_buffer(0).hex()}


def read_sensor_buffer(address: int) -> bytes:
    # Without a size, string_at runs strlen() on `address` in C: NULL faults there, as a bad buffer would.
    return ctypes.string_at(address)  # CRASH-LINE
