"""How far a position fix is from a corridor's polyline (pure).

Distances are computed on a local equirectangular projection centred on the fix: within the
tens of kilometres of a river or road corridor its error is well under a metre per kilometre,
far below a tracker's GPS error and any sensible buffer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import NamedTuple, Protocol

from schemas.transit import Corridor, GeoPoint

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)


class Located(Protocol):
    """Anything with a position: a GeoPoint, a geofence's centre, a ``Fix``."""

    @property
    def lat(self) -> float: ...

    @property
    def lon(self) -> float: ...


class Fix(NamedTuple):
    """A position without a model's validation (the reading's was validated on the way in)."""

    lat: float
    lon: float


def _east_north(origin: Located, point: Located) -> tuple[float, float]:
    """Metres east and north of ``origin``."""
    d_lon = (point.lon - origin.lon + 180.0) % 360.0 - 180.0  # across the antimeridian too
    east = math.radians(d_lon) * math.cos(math.radians(origin.lat)) * EARTH_RADIUS_M
    north = math.radians(point.lat - origin.lat) * EARTH_RADIUS_M
    return east, north


def _to_segment(ax: float, ay: float, bx: float, by: float) -> float:
    """Distance from (0, 0) to the segment from a to b."""
    dx, dy = bx - ax, by - ay
    length_sq = dx * dx + dy * dy
    t = 0.0 if length_sq == 0 else max(0.0, min(1.0, -(ax * dx + ay * dy) / length_sq))
    return math.hypot(ax + t * dx, ay + t * dy)


def distance_m(a: Located, b: Located) -> float:
    """Metres between two points (short distances: a port's geofence)."""
    return math.hypot(*_east_north(a, b))


def distance_to_polyline(point: GeoPoint, waypoints: Sequence[GeoPoint]) -> float:
    """Metres from ``point`` to the nearest point of the polyline through ``waypoints``."""
    projected = [_east_north(point, waypoint) for waypoint in waypoints]
    return min(_to_segment(*a, *b) for a, b in pairwise(projected))


def off_corridor_m(point: GeoPoint, corridor: Corridor) -> float:
    """How far outside the corridor's buffer ``point`` lies; 0 inside it."""
    return max(0.0, distance_to_polyline(point, corridor.waypoints) - corridor.buffer_m)
