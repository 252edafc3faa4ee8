"""Validators for values from outside, shared by the control plane and the edges (via the request
models in `sync/models.py`), so a bad value is refused with a 400 naming its field before it reaches
a query, a header, a URL or a process.

Rules:
- text refuses NUL and every character of the Unicode categories Cc (C0/C1 controls, e.g. CR, LF,
  TAB, U+0085), Zl (U+2028), Zp (U+2029) and Cs (lone surrogates, which no UTF-8 store accepts);
- `ProcessText` (template argv and env values) refuses only NUL and lone surrogates: a process
  argument or environment value may legitimately hold a newline or a tab (a PEM block);
- integers are bounded to what PostgreSQL stores: `Int63` for bigint, `Int32` for integer;
- URLs are parsed: http or https only, a host, no credentials, no control characters or spaces,
  no query or fragment (an edge URL is a prefix the edge appends paths to).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

INT63_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_KEY_BYTES = 256
MAX_URL_LENGTH = 2048

_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cs"})
_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def first_refused_char(value: str) -> str | None:
    """The first character plain text may not hold, or None."""
    if value.isprintable():  # fast path: no Cc/Zl/Zp/Cs (nor other separators, checked below)
        return None
    for ch in value:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            return ch
    return None


def plain_text(value: str) -> str:
    ch = first_refused_char(value)
    if ch is not None:
        raise ValueError(f"must not contain control or line-separator characters (found U+{ord(ch):04X})")
    return value


def process_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL")
    if any("\ud800" <= ch <= "\udfff" for ch in value):
        raise ValueError("must not contain lone surrogates")
    return value


_URL_PATH = re.compile(r"^(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)+$")


def url_path(value: str) -> str:
    """An absolute URL path the edge may POST to: no query or fragment, no whitespace or control
    characters, no empty, ``.`` or ``..`` segments (a backend's route, never a way out of it)."""
    if not _URL_PATH.fullmatch(value):
        raise ValueError("must be an absolute path of URL path characters (no query, fragment, space or CR/LF)")
    segments = value.split("/")[1:]
    if any(seg in (".", "..") for seg in segments) or any(not seg for seg in segments[:-1]):
        raise ValueError("must not contain empty, '.' or '..' segments")
    return value


def key(value: str) -> str:
    if not value:
        raise ValueError("key must not be empty")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"key is longer than {MAX_KEY_BYTES} bytes")
    return plain_text(value)


def http_url(value: str) -> str:
    plain_text(value)
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() for ch in value):
        raise ValueError("URL must not contain spaces")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not value.startswith(parts.scheme + "://"):
        raise ValueError("URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("URL must not carry credentials")
    if not parts.hostname or not _valid_host(parts.hostname):
        raise ValueError("URL needs a host name or IP address")
    if parts.query or parts.fragment or "?" in value or "#" in value:
        raise ValueError("URL must not have a query or fragment")
    if port == 0:
        raise ValueError("URL port must be 1-65535")
    return value


def _valid_host(host: str) -> bool:
    if _HOST_NAME.match(host):
        return True
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


Text = Annotated[str, AfterValidator(plain_text)]
"""Plain text: no control, line-separator or surrogate characters."""
ProcessText = Annotated[str, AfterValidator(process_text)]
"""A process argument or environment value: anything but NUL and lone surrogates."""
Key = Annotated[str, AfterValidator(key)]
UrlPath = Annotated[str, Field(max_length=1024), AfterValidator(url_path)]
HttpUrl = Annotated[str, AfterValidator(http_url)]
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")


def domain_name(value: str) -> str:
    if not _DOMAIN_NAME.fullmatch(value):
        raise ValueError("a domain name is dot-separated labels of letters, digits and inner hyphens")
    return value


DomainName = Annotated[str, Field(max_length=253), AfterValidator(domain_name)]
"""A DNS name (labels of letters, digits and inner hyphens): an edge domain."""
Int63 = Annotated[int, Field(ge=-INT63_MAX - 1, le=INT63_MAX)]
NonNegativeInt63 = Annotated[int, Field(ge=0, le=INT63_MAX)]
Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
