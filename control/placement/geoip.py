"""Locating client IP addresses with a GeoIP2 / GeoLite2 / DB-IP City database (`.mmdb`).

`GeoLocator` reads the database through `maxminddb` (the reader `geoip2.database.Reader` is built on)
in memory-map mode with its C extension when available, and decodes only what placement needs
(`location.latitude` / `location.longitude`) from the raw record: `geoip2`'s `city()` builds a full
model object per lookup and costs about three times as much.

Addresses that cannot say where a user is (private, loopback, link-local, unspecified, multicast,
reserved, documentation, shared/CGNAT, ...) are refused before the lookup, whatever the database says.
"""

from __future__ import annotations

import os
import socket
from bisect import bisect_right
from ipaddress import ip_network
from pathlib import Path
from types import TracebackType
from typing import Self

import maxminddb

from sync.errors import BadRequest

__all__ = ["GeoIPDatabaseError", "GeoLocator", "is_locatable_ip", "normalize_client_ip"]


class GeoIPDatabaseError(Exception):
    """The GeoIP database cannot be used: missing, unreadable, corrupt or not a City database."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"GeoIP database {self.path}: {problem}")


# ---- addresses that locate nobody ------------------------------------------------------------
# IANA special-purpose registries. IPv6 outside 2000::/3 is all reserved, ULA (fc00::/7),
# link-local (fe80::/10), site-local, multicast (ff00::/8), loopback, unspecified, NAT64 or
# IPv4-compatible; IPv4-mapped addresses (::ffff:0:0/96) are judged (and looked up) as IPv4.

_V4_SPECIAL = (
    "0.0.0.0/8",  # "this network", includes the unspecified address
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation (TEST-NET-1)
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation (TEST-NET-2)
    "203.0.113.0/24",  # documentation (TEST-NET-3)
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes the limited broadcast address
)
_V6_SPECIAL = (
    "::/3",  # unspecified, loopback, IPv4-compatible, NAT64, discard-only, reserved
    "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, benchmarking, ...)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4
    "3fff::/20",  # documentation (RFC 9637)
    "4000::/2",  # reserved
    "8000::/1",  # reserved, ULA, link-local, site-local, multicast
)


def _ranges(cidrs: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Sorted, merged [start, end] integer ranges of the given networks."""
    spans = sorted((int(net.network_address), int(net.broadcast_address)) for net in map(ip_network, cidrs))
    starts: list[int] = []
    ends: list[int] = []
    for lo, hi in spans:
        if ends and lo <= ends[-1] + 1:
            ends[-1] = max(ends[-1], hi)
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


_V4_STARTS, _V4_ENDS = _ranges(_V4_SPECIAL)
_V6_STARTS, _V6_ENDS = _ranges(_V6_SPECIAL)
_V4_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_from_bytes = int.from_bytes


def _bad_ip(ip: object) -> BadRequest:
    shown = ip if isinstance(ip, str) else type(ip).__name__
    return BadRequest(
        f"client_ip {shown!r} is not an IP address",
        fields={"client_ip": "not a valid IPv4 or IPv6 address"},
    )


def normalize_client_ip(ip: str) -> tuple[str, int] | None:
    """Validate `ip`; return `(lookup_key, ip_version)`, or None if the address locates nobody.

    The lookup key is what to hand the database: the address itself, the IPv4 address inside an
    IPv4-mapped IPv6 address, or an IPv6 address without its `%zone`. A string that is not an IPv4
    or IPv6 address raises `BadRequest` with `fields={"client_ip": ...}`.
    """
    try:
        if ":" not in ip:
            packed = _inet_pton(_AF_INET, ip)
            v = _from_bytes(packed, "big")
            i = bisect_right(_V4_STARTS, v) - 1
            if i >= 0 and v <= _V4_ENDS[i]:
                return None
            return ip, 4
        key = ip
        if "%" in ip:
            key, _, zone = ip.partition("%")
            if not zone:
                raise _bad_ip(ip)
        packed = _inet_pton(_AF_INET6, key)
    except (OSError, TypeError, ValueError):
        # OSError: not an address; TypeError: not a str; ValueError: embedded NUL character.
        raise _bad_ip(ip) from None
    if packed[:12] == _V4_MAPPED_PREFIX:
        return normalize_client_ip(_inet_ntop(_AF_INET, packed[12:]))
    v = _from_bytes(packed, "big")
    i = bisect_right(_V6_STARTS, v) - 1
    if i >= 0 and v <= _V6_ENDS[i]:
        return None
    return key, 6


def is_locatable_ip(ip: str) -> bool:
    """False for addresses that cannot locate a user (private, loopback, ...); BadRequest if malformed."""
    return normalize_client_ip(ip) is not None


# ---- the database ----------------------------------------------------------------------------


class GeoLocator:
    """Maps client IP addresses to (lat, lon) with a City-type MaxMind DB file.

    Thread-safe for lookups (the memory-mapped reader is read-only). Build it with `open()`.
    """

    __slots__ = ("_get", "_ipv6", "_reader", "database_type", "path")

    def __init__(self, reader: maxminddb.Reader, path: str) -> None:
        self._reader = reader
        self._get = reader.get
        metadata = reader.metadata()
        self.database_type: str = metadata.database_type
        self._ipv6 = metadata.ip_version == 6
        self.path = path

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GeoLocator:
        """Open a GeoIP2/GeoLite2/DB-IP *City* database; GeoIPDatabaseError names the file otherwise."""
        name = os.fspath(path)
        p = Path(name)
        if not p.exists():
            raise GeoIPDatabaseError(name, "file does not exist")
        if not p.is_file():
            raise GeoIPDatabaseError(name, "not a regular file")
        try:
            # MODE_AUTO: the C extension over a memory map when it is installed, else pure Python.
            reader = maxminddb.open_database(name, maxminddb.MODE_AUTO)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoIPDatabaseError(name, f"not a valid MaxMind DB file ({exc})") from exc
        except (OSError, ValueError) as exc:
            # Unreadable (permissions, I/O error) or so malformed the reader refuses it outright.
            raise GeoIPDatabaseError(name, f"cannot be read ({exc})") from exc
        try:
            database_type = reader.metadata().database_type
            if not isinstance(database_type, str) or "City" not in database_type:
                raise GeoIPDatabaseError(
                    name,
                    f"database type is {database_type!r}, not a City database "
                    "(GeoIP2-City, GeoLite2-City or DBIP-City-Lite is needed for coordinates)",
                )
            return cls(reader, name)
        except BaseException:
            reader.close()
            raise

    @property
    def uses_c_extension(self) -> bool:
        """True when lookups run in maxminddb's C extension (the fast path)."""
        return type(self._reader).__module__ == "maxminddb.extension"

    def locate(self, ip: str) -> tuple[float, float] | None:
        """(lat, lon) of `ip`, or None when it locates nobody or the database has no coordinates.

        A malformed address raises `BadRequest` (fields `{"client_ip": ...}`).
        """
        normalized = normalize_client_ip(ip)
        if normalized is None:
            return None
        return self.locate_normalized(*normalized)

    def locate_normalized(self, key: str, version: int) -> tuple[float, float] | None:
        """Look up a key returned by `normalize_client_ip` (skips validating it a second time)."""
        if version == 6 and not self._ipv6:
            return None  # an IPv4-only database cannot hold it
        try:
            record = self._get(key)
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoIPDatabaseError(self.path, f"corrupt data ({exc})") from exc
        if type(record) is not dict:
            return None
        location = record.get("location")
        if type(location) is not dict:
            return None
        lat = location.get("latitude")
        lon = location.get("longitude")
        if type(lat) is not float or type(lon) is not float:
            # Coordinates are doubles in every City database; accept integers written by other tools.
            if not isinstance(lat, int | float) or not isinstance(lon, int | float):
                return None
            if isinstance(lat, bool) or isinstance(lon, bool):
                return None
            lat = float(lat)
            lon = float(lon)
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return (lat, lon)
        return None

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GeoLocator({self.path!r}, database_type={self.database_type!r})"
