"""The earthquake side of the monitor: a QuakeML feed, parsed with lxml, summarized with numpy.

The feed is synthetic but shaped like USGS's FDSN event service output (QuakeML 1.2 with the ANSS catalog
namespace), so parsing it exercises lxml/libxml2 the way the real feed does: a few hundred kilobytes of
namespaced XML, one fromstring and a handful of XPath queries per refresh.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from lxml import etree

NS = {
    "q": "http://quakeml.org/xmlns/quakeml/1.2",
    "bed": "http://quakeml.org/xmlns/bed/1.2",
    "catalog": "http://anss.org/xmlns/catalog/0.1",
}

EARTH_RADIUS_KM = 6371.0
# Gutenberg-Richter fits below this magnitude are skewed by small events the network misses.
COMPLETENESS_MAGNITUDE = 2.5
NEIGHBOUR_RADIUS_KM = 250.0

# Regions the synthetic events cluster around: (name, latitude, longitude, spread in degrees).
REGIONS = [
    ("Southern California", 34.0, -117.5, 2.0),
    ("Alaska Peninsula", 56.5, -157.0, 4.0),
    ("Honshu, Japan", 37.5, 141.0, 3.0),
    ("Central Chile", -33.0, -71.5, 3.0),
    ("Sumatra, Indonesia", 0.5, 98.0, 4.0),
    ("Central Italy", 42.5, 13.2, 1.5),
    ("Hindu Kush, Afghanistan", 36.5, 70.8, 1.5),
    ("Tonga", -20.5, -174.5, 3.0),
]
MAGNITUDE_TYPES = ["ml", "md", "mb", "mww", "mwr"]

# Compiled once: each is a column of the catalog, evaluated by libxml2 over the whole document.
EVENT_IDS = etree.XPath("//bed:event/@catalog:eventid", namespaces=NS)
PLACES = etree.XPath("//bed:event/bed:description/bed:text/text()", namespaces=NS)
TIMES = etree.XPath("//bed:event/bed:origin/bed:time/bed:value/text()", namespaces=NS)
LATITUDES = etree.XPath("//bed:event/bed:origin/bed:latitude/bed:value/text()", namespaces=NS)
LONGITUDES = etree.XPath("//bed:event/bed:origin/bed:longitude/bed:value/text()", namespaces=NS)
DEPTHS = etree.XPath("//bed:event/bed:origin/bed:depth/bed:value/text()", namespaces=NS)
MAGNITUDES = etree.XPath("//bed:event/bed:magnitude/bed:mag/bed:value/text()", namespaces=NS)

PARSER = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)


def generate_feed(events: int = 400, seed: int = 1906) -> bytes:
    """A QuakeML document of `events` earthquakes, the same bytes for the same arguments."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    query = "quakeml:earthquake.usgs.gov/fdsnws/event/1/query"
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<q:quakeml xmlns:q="{NS["q"]}" xmlns="{NS["bed"]}" xmlns:catalog="{NS["catalog"]}">\n',
        f'<eventParameters publicID="{query}">\n',
    ]
    for i in range(events):
        region, lat0, lon0, spread = rng.choice(REGIONS)
        lat = max(-90.0, min(90.0, rng.gauss(lat0, spread)))
        lon = (rng.gauss(lon0, spread) + 180.0) % 360.0 - 180.0
        # Magnitudes above completeness follow Gutenberg-Richter with b = 1: exponential with rate ln(10).
        mag = round(1.0 + rng.expovariate(2.302585), 2)
        depth_m = round(rng.lognormvariate(2.5, 0.9) * 1000.0, -1)
        time = start + timedelta(seconds=i * 1440 + rng.randrange(1440))
        event_id = f"us7000{i:04x}"
        distance = rng.randrange(2, 80)
        bearing = rng.choice(["N", "NNE", "NE", "E", "SE", "S", "SW", "W", "NW"])
        parts.append(
            f'<event catalog:datasource="us" catalog:eventsource="us" catalog:eventid="{event_id}" '
            f'publicID="{query}?eventid={event_id}&amp;format=quakeml">'
            f"<description><type>earthquake name</type><text>{distance} km {bearing} of {region}</text>"
            f"</description>"
            f'<origin catalog:datasource="us" catalog:dataid="{event_id}" publicID="quakeml:us.anss.org/origin/'
            f'{event_id}"><time><value>{time:%Y-%m-%dT%H:%M:%S}.{rng.randrange(1000):03d}Z</value></time>'
            f"<longitude><value>{lon:.4f}</value></longitude><latitude><value>{lat:.4f}</value></latitude>"
            f"<depth><value>{depth_m:.0f}</value><uncertainty>{rng.randrange(100, 5000)}</uncertainty>"
            f"</depth><quality><usedPhaseCount>{rng.randrange(8, 250)}</usedPhaseCount>"
            f"<standardError>{rng.uniform(0.1, 1.5):.2f}</standardError></quality>"
            f"<evaluationMode>reviewed</evaluationMode></origin>"
            f'<magnitude publicID="quakeml:us.anss.org/magnitude/{event_id}/{i}">'
            f"<mag><value>{mag:.2f}</value></mag><type>{rng.choice(MAGNITUDE_TYPES)}</type>"
            f"<stationCount>{rng.randrange(5, 120)}</stationCount></magnitude>"
            f"<preferredOriginID>quakeml:us.anss.org/origin/{event_id}</preferredOriginID>"
            f"<preferredMagnitudeID>quakeml:us.anss.org/magnitude/{event_id}/{i}</preferredMagnitudeID>"
            f"<type>earthquake</type></event>\n"
        )
    parts.append("</eventParameters>\n</q:quakeml>\n")
    return "".join(parts).encode()


@dataclass(frozen=True)
class Catalog:
    """The parsed feed, one array element per event."""

    ids: list[str]
    places: list[str]
    times: np.ndarray  # datetime64[ms]
    latitudes: np.ndarray  # degrees
    longitudes: np.ndarray  # degrees
    depths_km: np.ndarray
    magnitudes: np.ndarray


def parse_feed(xml: bytes) -> Catalog:
    root = etree.fromstring(xml, PARSER)
    ids = [str(i) for i in EVENT_IDS(root)]
    columns = [LATITUDES(root), LONGITUDES(root), DEPTHS(root), MAGNITUDES(root), TIMES(root)]
    if any(len(column) != len(ids) for column in columns):
        raise ValueError("QuakeML feed: an event lacks its origin or magnitude")
    latitudes, longitudes, depths_m, magnitudes = (np.array(c, dtype=np.float64) for c in columns[:4])
    # numpy's datetime64 parser does not take the trailing "Z" of UTC.
    times = np.array([t.rstrip("Z") for t in columns[4]], dtype="datetime64[ms]")
    return Catalog(ids, [str(p) for p in PLACES(root)], times, latitudes, longitudes, depths_m / 1000.0, magnitudes)


def distance_matrix_km(latitudes: np.ndarray, longitudes: np.ndarray) -> np.ndarray:
    """Great-circle distances between every pair of points (haversine)."""
    lat = np.radians(latitudes)[:, None]
    lon = np.radians(longitudes)[:, None]
    dlat = lat - lat.T
    dlon = lon - lon.T
    a = np.sin(dlat / 2.0) ** 2 + np.cos(lat) * np.cos(lat.T) * np.sin(dlon / 2.0) ** 2
    return 2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def statistics(catalog: Catalog, min_magnitude: float = 0.0, top: int = 10) -> dict:
    """Summary statistics of the events at or above `min_magnitude`, as plain JSON-ready values."""
    keep = np.flatnonzero(catalog.magnitudes >= min_magnitude)
    mags = catalog.magnitudes[keep]
    if mags.size == 0:
        return {"count": 0}
    depths = catalog.depths_km[keep]
    counts, edges = np.histogram(mags, bins=np.arange(np.floor(mags.min()), np.ceil(mags.max()) + 0.5, 0.5))
    complete = mags[mags >= COMPLETENESS_MAGNITUDE]
    # Aki's maximum-likelihood estimate of the Gutenberg-Richter b-value.
    b_value = np.log10(np.e) / (complete.mean() - COMPLETENESS_MAGNITUDE) if complete.size > 1 else None

    distances = distance_matrix_km(catalog.latitudes[keep], catalog.longitudes[keep])
    neighbours = (distances < NEIGHBOUR_RADIUS_KM).sum(axis=1) - 1
    busiest = int(np.argmax(neighbours))
    strongest = keep[np.argsort(mags)[::-1][:top]]
    p50, p90, p99 = np.percentile(mags, [50, 90, 99])
    return {
        "count": int(mags.size),
        "magnitude": {"mean": float(mags.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)},
        "depth_km": {"mean": float(depths.mean()), "max": float(depths.max())},
        "histogram": [{"from": float(lo), "count": int(n)} for lo, n in zip(edges[:-1], counts)],
        "b_value": None if b_value is None else round(float(b_value), 3),
        "densest_cluster": {
            "event": catalog.ids[keep[busiest]],
            "place": catalog.places[keep[busiest]],
            "neighbours_within_km": NEIGHBOUR_RADIUS_KM,
            "neighbours": int(neighbours[busiest]),
        },
        "strongest": [
            {
                "id": catalog.ids[i],
                "place": catalog.places[i],
                "time": str(catalog.times[i]) + "Z",
                "magnitude": float(catalog.magnitudes[i]),
                "depth_km": float(catalog.depths_km[i]),
            }
            for i in strongest
        ],
    }
