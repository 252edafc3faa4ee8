"""The edge's own credential: a token bound to its node, obtained by enrolment.

An edge is configured with an edge token that may be shared by many edges (`meridian dev`, one
per region in the Nomad deploy). On its first heartbeat it asks the control plane to bind a new
token to its node (`enrol`), keeps the answer in `DATA_DIR/node_token` (0600) and uses it for every
call from then on; from that moment only that token speaks for the node, so an edge holding the
shared token (or its own bound one) cannot heartbeat, report or replay a journal as another node.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_NAME = "node_token"


class NodeToken:
    def __init__(self, data_dir: Path, configured: str) -> None:
        self._path = data_dir / FILE_NAME
        self._configured = configured
        self._own: str | None = None

    def load(self) -> str:
        """The token to use: the node's own once enrolled, else the configured one (blocking I/O)."""
        with contextlib.suppress(FileNotFoundError):
            self._own = self._path.read_text().strip() or None
        return self.current

    @property
    def current(self) -> str:
        return self._own or self._configured

    @property
    def enrolled(self) -> bool:
        return self._own is not None

    def store(self, secret: str) -> None:
        """Keep the node's token (written whole, then renamed: never half a secret on disk)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secret.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        self._own = secret
