"""A Meridian backend faster than any proxy in front of it: nginx answering `200 ok` on
127.0.0.1:$PORT, one worker (what bench/proxy.py needs so the proxies, not the backend, are
measured). Run by the process executor as a script; SIGTERM stops nginx (fast shutdown)."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path


def conf(port: str, root: Path) -> str:
    temps = "\n".join(f"    {k}_temp_path {root / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""daemon off;
master_process on;
worker_processes 1;
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temps}
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""


def main() -> None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/bin")
    if nginx is None:
        sys.exit("nginx is not installed")
    root = Path(tempfile.mkdtemp(prefix="meridian-fast-backend-"))
    (root / "nginx.conf").write_text(conf(os.environ["PORT"], root))
    os.execv(nginx, [nginx, "-p", str(root), "-c", str(root / "nginx.conf")])


if __name__ == "__main__":
    main()
