"""Running the terraform binary in tests: found or visibly skipped (never skipped under CI=true)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SKIP_REASON = "terraform binary not installed (terraform steps of infra/terraform not run)"


def terraform_binary() -> str:
    found = shutil.which("terraform") or next(
        (p for p in ("/usr/local/bin/terraform", "/usr/bin/terraform") if Path(p).is_file()), None
    )
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{SKIP_REASON}; CI must have it")
        pytest.skip(SKIP_REASON)
    return found


def run(binary: str, args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """terraform without the user's configuration, plugins or checkpoint calls, data in `home`."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TF_IN_AUTOMATION": "1",
        "CHECKPOINT_DISABLE": "1",
        "TF_CLI_CONFIG_FILE": str(home / "terraformrc"),
        "TF_DATA_DIR": str(home / ".terraform"),
        "NO_COLOR": "1",
    }
    (home / "terraformrc").write_text("")
    return subprocess.run(
        [binary, *args, *(["-no-color"] if args[0] in ("init", "test", "plan", "fmt") else [])],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
