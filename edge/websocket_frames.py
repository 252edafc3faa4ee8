"""Where WebSocket frames end in a spliced byte stream, read from frame headers alone (payloads
are skipped, never parsed): so the edge can end a spliced WebSocket with a close frame the client
can read, rather than a bare TCP close (which a browser reports as 1006)."""

from __future__ import annotations

MAX_PADDING = 1 << 20
"""Most zero bytes the edge writes to complete a frame cut short before its close frame."""


class FrameBoundary:
    __slots__ = ("_head", "_need")

    def __init__(self) -> None:
        self._need = 0  # payload bytes of the current frame still to come
        self._head = b""  # bytes of a frame header read so far

    def feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._need:
                take = min(self._need, n - i)
                self._need -= take
                i += take
                continue
            self._head += data[i : i + 1]
            i += 1
            self._parse_head()

    def _parse_head(self) -> None:
        head = self._head
        if len(head) < 2:
            return
        short = head[1] & 0x7F
        size = 2 + (2 if short == 126 else 8 if short == 127 else 0) + (4 if head[1] & 0x80 else 0)
        if len(head) < size:
            return
        if short == 126:
            length = int.from_bytes(head[2:4], "big")
        elif short == 127:
            length = int.from_bytes(head[2:10], "big")
        else:
            length = short
        self._need = length
        self._head = b""

    def finish(self) -> bytes | None:
        """Bytes that complete the frame in flight (b"" at a frame boundary), or None when it
        cannot be completed sensibly (a header cut short, or too much payload missing)."""
        if self._head:
            return None
        if self._need > MAX_PADDING:
            return None
        return bytes(self._need)


def close_frame(code: int, reason: str) -> bytes:
    """A server-to-client (unmasked) close frame."""
    payload = code.to_bytes(2, "big") + reason.encode()[:123]
    return bytes((0x88, len(payload))) + payload
