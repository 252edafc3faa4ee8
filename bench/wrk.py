"""`wrk` as the benchmarks' HTTP load generator: run it, parse its `--latency` report."""

from __future__ import annotations

import re
import subprocess

from bench.nginx import ensure_tool

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


def parse(output: str) -> dict[str, float]:
    """requests/s, p50/p90/p99 in ms, request and error counts from wrk's `--latency` output."""
    rps = _RPS.search(output)
    done = _REQUESTS.search(output)
    if rps is None or done is None:
        raise ValueError(f"not a wrk report:\n{output}")
    result: dict[str, float] = {"requests": int(done.group(1)), "per_s": round(float(rps.group(1)), 1)}
    for pct, value, unit in _PERCENTILE.findall(output):
        if pct in ("50", "90", "99"):
            result[f"p{pct}_ms"] = round(float(value) * _UNITS_MS[unit], 3)
    non_2xx = _NON_2XX.search(output)
    sockets = _SOCKET_ERRORS.search(output)
    result["errors"] = (int(non_2xx.group(1)) if non_2xx else 0) + (
        sum(int(g) for g in sockets.groups()) if sockets else 0
    )
    return result


def run(url: str, *, threads: int, connections: int, duration_s: float) -> dict[str, float]:
    """One wrk run against `url` (bounded: killed after duration + 30 s)."""
    binary = ensure_tool("wrk", "wrk")
    argv = [binary, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "--timeout", "10s", url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=True)
    return parse(done.stdout)
