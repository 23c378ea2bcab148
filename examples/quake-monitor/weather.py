"""The weather side of the monitor: pure-Python work on JSON observations, the kind no C extension speeds up.

Observations are synthetic (a station network reporting hourly), serialized to JSON and parsed back as if they had
come over the wire, then aggregated in plain loops.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict

CONDITIONS = ["clear", "partly cloudy", "overcast", "light rain", "rain", "thunderstorm", "fog", "snow"]


def observations(stations: int = 40, hours: int = 24, seed: int = 0) -> list[dict]:
    """Hourly observations of `stations` stations, the same list for the same arguments."""
    rng = random.Random(seed)
    readings = []
    for s in range(stations):
        station = f"WX{s:03d}"
        lat, lon = rng.uniform(-60.0, 70.0), rng.uniform(-180.0, 180.0)
        base = 25.0 - abs(lat) * 0.4
        for hour in range(hours):
            readings.append(
                {
                    "station": station,
                    "coordinates": {"lat": round(lat, 3), "lon": round(lon, 3)},
                    "time": f"2024-06-01T{hour:02d}:00:00Z",
                    "temperature_c": round(base + 6.0 * math.sin((hour - 9) * math.pi / 12) + rng.gauss(0, 1.5), 1),
                    "humidity_pct": round(min(100.0, max(5.0, rng.gauss(65, 15))), 1),
                    "pressure_hpa": round(rng.gauss(1013.0, 8.0), 1),
                    "wind": {"speed_ms": round(rng.expovariate(0.25), 1), "direction_deg": rng.randrange(360)},
                    "condition": rng.choice(CONDITIONS),
                }
            )
    return readings


def dew_point_c(temperature_c: float, humidity_pct: float) -> float:
    """Magnus formula."""
    gamma = math.log(humidity_pct / 100.0) + 17.62 * temperature_c / (243.12 + temperature_c)
    return 243.12 * gamma / (17.62 - gamma)


def summarize(payload: str) -> dict:
    """Per-station aggregates of a JSON list of observations, plus network-wide extremes."""
    by_station: dict[str, list[dict]] = defaultdict(list)
    for reading in json.loads(payload):
        by_station[reading["station"]].append(reading)

    stations = {}
    for station, readings in sorted(by_station.items()):
        temperatures = [r["temperature_c"] for r in readings]
        # Wind direction is circular: average the unit vectors, not the degrees.
        east = sum(math.sin(math.radians(r["wind"]["direction_deg"])) for r in readings)
        north = sum(math.cos(math.radians(r["wind"]["direction_deg"])) for r in readings)
        conditions: dict[str, int] = {}
        for r in readings:
            conditions[r["condition"]] = conditions.get(r["condition"], 0) + 1
        stations[station] = {
            "temperature_c": {
                "min": min(temperatures),
                "max": max(temperatures),
                "mean": round(sum(temperatures) / len(temperatures), 2),
            },
            "dew_point_c": round(
                sum(dew_point_c(r["temperature_c"], r["humidity_pct"]) for r in readings) / len(readings), 2
            ),
            "wind": {
                "max_speed_ms": max(r["wind"]["speed_ms"] for r in readings),
                "mean_direction_deg": round(math.degrees(math.atan2(east, north)) % 360.0, 1),
            },
            "prevailing_condition": max(conditions, key=conditions.__getitem__),
        }
    hottest = max(stations, key=lambda s: stations[s]["temperature_c"]["max"])
    windiest = max(stations, key=lambda s: stations[s]["wind"]["max_speed_ms"])
    return {"stations": stations, "hottest": hottest, "windiest": windiest}


def report(seed: int = 0) -> dict:
    """What the weather endpoint serves: observations through a JSON round trip, then aggregated."""
    return summarize(json.dumps(observations(seed=seed)))
