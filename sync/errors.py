"""Error codes shared by the control plane, the edges and the CLI.

Servers answer `{"error": {"code", "message", "fields"}}`; clients map the code back to the
exception class below with `error_from_body`, so every side speaks the same vocabulary.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    KEY_HELD = "key_held"
    NO_CAPACITY = "no_capacity"
    TEMPLATE_UNKNOWN = "template_unknown"
    EXECUTOR_UNAVAILABLE = "executor_unavailable"
    REGION_UNKNOWN = "region_unknown"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    SNAPSHOT_REQUIRED = "snapshot_required"
    TOO_MANY_REQUESTS = "too_many_requests"
    DATABASE_UNAVAILABLE = "database_unavailable"
    CONTROL_PLANE_UNREACHABLE = "control_plane_unreachable"
    BACKEND_GONE = "backend_gone"
    BACKEND_NOT_READY = "backend_not_ready"
    BACKEND_UNREACHABLE = "backend_unreachable"
    NODE_MISMATCH = "node_mismatch"
    INTERNAL = "internal"


class MeridianError(Exception):
    """Base of every error that crosses the wire; `status` is the HTTP status it travels as."""

    code: ErrorCode = ErrorCode.INTERNAL
    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        fields: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, Any] = fields or {}
        self.retry_after_s = retry_after_s

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code.value, "message": self.message, "fields": self.fields}}


class BadRequest(MeridianError):
    code, status = ErrorCode.BAD_REQUEST, 400


class Unauthorized(MeridianError):
    code, status = ErrorCode.UNAUTHORIZED, 401


class Forbidden(MeridianError):
    code, status = ErrorCode.FORBIDDEN, 403


class NodeMismatch(MeridianError):
    """An edge token speaking for a node it is not bound to, or an unbound one for a node that has its own."""

    code, status = ErrorCode.NODE_MISMATCH, 403


class NotFound(MeridianError):
    code, status = ErrorCode.NOT_FOUND, 404


class RegionUnknown(MeridianError):
    code, status = ErrorCode.REGION_UNKNOWN, 404


class Conflict(MeridianError):
    code, status = ErrorCode.CONFLICT, 409


class KeyHeld(MeridianError):
    code, status = ErrorCode.KEY_HELD, 409


class BackendGone(MeridianError):
    code, status = ErrorCode.BACKEND_GONE, 410


class BackendUnreachable(MeridianError):
    code, status = ErrorCode.BACKEND_UNREACHABLE, 502


class BackendNotReady(MeridianError):
    code, status = ErrorCode.BACKEND_NOT_READY, 503


class SnapshotRequired(MeridianError):
    code, status = ErrorCode.SNAPSHOT_REQUIRED, 410


class PayloadTooLarge(MeridianError):
    code, status = ErrorCode.PAYLOAD_TOO_LARGE, 413


class TemplateUnknown(MeridianError):
    code, status = ErrorCode.TEMPLATE_UNKNOWN, 422


class ExecutorUnavailable(MeridianError):
    """The template names an executor (e.g. nomad) that no healthy node of the chosen region runs."""

    code, status = ErrorCode.EXECUTOR_UNAVAILABLE, 422


class TooManyRequests(MeridianError):
    code, status = ErrorCode.TOO_MANY_REQUESTS, 429


class NoCapacity(MeridianError):
    code, status = ErrorCode.NO_CAPACITY, 503


class DatabaseUnavailable(MeridianError):
    code, status = ErrorCode.DATABASE_UNAVAILABLE, 503


class ControlPlaneUnreachable(MeridianError):
    code, status = ErrorCode.CONTROL_PLANE_UNREACHABLE, 503


class InternalError(MeridianError):
    code, status = ErrorCode.INTERNAL, 500


_BY_CODE: dict[ErrorCode, type[MeridianError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        Unauthorized,
        Forbidden,
        NodeMismatch,
        NotFound,
        RegionUnknown,
        Conflict,
        KeyHeld,
        BackendGone,
        BackendUnreachable,
        BackendNotReady,
        SnapshotRequired,
        PayloadTooLarge,
        TemplateUnknown,
        ExecutorUnavailable,
        TooManyRequests,
        NoCapacity,
        DatabaseUnavailable,
        ControlPlaneUnreachable,
        InternalError,
    )
}


def error_class(code: str) -> type[MeridianError]:
    try:
        return _BY_CODE[ErrorCode(code)]
    except ValueError:
        return InternalError


def error_from_body(status: int, body: object, retry_after_s: float | None = None) -> MeridianError:
    """Rebuild the typed error a server sent; an unparseable body becomes an InternalError."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            cls = error_class(err["code"])
            fields = err.get("fields")
            exc = cls(
                str(err.get("message", "")),
                fields=fields if isinstance(fields, dict) else None,
                retry_after_s=retry_after_s,
            )
            return exc
    return InternalError(f"unexpected answer (HTTP {status})", retry_after_s=retry_after_s)
