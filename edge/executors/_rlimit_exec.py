"""Apply resource limits, then exec the backend in the same process (same pid, same group).

Run as ``python -S -I _rlimit_exec.py AS_BYTES -- argv0 [args...]``. It replaces ``preexec_fn``, which
is unsafe in a parent that has threads (asyncio's child watcher and ``to_thread`` workers). ``-S -I``
keep it to a few milliseconds: no site, no user environment, only built-in modules.
"""

import os
import resource
import sys


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write("usage: _rlimit_exec.py AS_BYTES -- argv0 [args...]\n")
        sys.exit(126)
    limit = int(sys.argv[1])
    argv = sys.argv[3:]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f"meridian: cannot execute {argv[0]!r}: {exc}\n")
        sys.exit(127)


if __name__ == "__main__":
    main()
