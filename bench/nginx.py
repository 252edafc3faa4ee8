"""Debian packages the benchmarks need (installed on first use), and nginx as a baseline proxy.

`ensure_tool("nginx", "nginx")` installs the package with apt-get when its binary is missing
(running `apt-get update` first if the plain install fails). `nginx_proxy(upstream, tmp)` runs
nginx in the foreground as a child of this process (its own process group, SIGTERM if this
process dies) with a minimal configuration written into `tmp`: one worker, `proxy_pass` to
`upstream` (host:port) over kept-alive HTTP/1.1 connections. It is stopped when the block exits,
failure included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench.common import free_port, wait_http
from meridian import processes


def ensure_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first if it is missing."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    apt = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if os.geteuid() != 0:
        apt.insert(0, "sudo")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env, "timeout": 600}
    if subprocess.run(apt, **quiet).returncode != 0:  # type: ignore[call-overload]
        update = [*apt[: apt.index("apt-get") + 1], "update"]
        subprocess.run(update, check=True, **quiet)  # type: ignore[call-overload]
        subprocess.run(apt, check=True, **quiet)  # type: ignore[call-overload]
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise RuntimeError(f"installed {package} but found no {binary}")
    return found


def nginx_conf(tmp: Path, upstream: str, port: int) -> str:
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process on;
worker_processes 1;
error_log {tmp}/error.log;
pid {tmp}/nginx.pid;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
{temp_paths}
    upstream backend {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_proxy(upstream: str, tmp: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """nginx proxying to `upstream` (host:port); yields (its base URL, its master process)."""
    binary = ensure_tool("nginx", "nginx")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, upstream, port))
    # -e: the error log before the configuration is read (else the compiled-in /var/log path).
    argv = [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    proc = processes.start(argv, tmp / "nginx.out")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/", timeout_s=15, proc=proc)
        yield url, proc
    finally:
        processes.stop(proc, grace_s=10)  # SIGTERM: nginx's fast shutdown, workers included
