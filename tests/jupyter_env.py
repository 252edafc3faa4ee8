"""A test-only Python environment with JupyterLab, created once under the user's cache directory
(outside the repository) and reused: the first creation downloads from PyPI (a few minutes), later
runs take none. Several test processes may ask at once: a file lock makes one of them build it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

JUPYTER_REQUIREMENTS = ["jupyterlab>=4.2,<5", "jupyter_server>=2.14,<3", "ipykernel>=6.29,<8"]
INSTALL_TIMEOUT_S = 900


def cache_root() -> Path:
    base = os.environ.get("MERIDIAN_TEST_CACHE") or os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meridian-tests"


def jupyter_env() -> Path:
    """The environment's directory (bin/jupyter-lab inside), built when missing."""
    tag = f"py{sys.version_info.major}{sys.version_info.minor}-" + "-".join(
        r.split(">=")[0] + r.split(">=")[1].split(",")[0] for r in JUPYTER_REQUIREMENTS
    )
    env = cache_root() / f"jupyterlab-{tag}"
    done = env / ".complete"
    if done.exists():
        return env
    cache_root().mkdir(parents=True, exist_ok=True)
    with open(cache_root() / f"{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(env)], check=True, timeout=120)
            subprocess.run(
                [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", *JUPYTER_REQUIREMENTS],
                check=True,
                timeout=INSTALL_TIMEOUT_S,
            )
            done.write_text("ok\n")
    return env


if __name__ == "__main__":
    print(jupyter_env())
