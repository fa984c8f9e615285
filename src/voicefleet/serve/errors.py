"""Every error a client gets, from one table: exception type -> HTTP status and JSON body.

    {"error": {"message": "...", "type": "..."}}        (validation errors add "details")

Routes raise the library's exceptions (a missing voice, text with nothing to say) or the request
errors below; they never build responses themselves. The app's exception handlers (asgi.py), its
body-size middleware and the synthesis replicas (which answer a `RequestFailed` through the Serve
handle) all go through `client_error`, so a failure has one status wherever it happens. An
exception with no row is a server fault: 500 with no internals, the details in the server log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayTaskError
from starlette.exceptions import HTTPException

from voicefleet.inference.params import SynthesisError  # (not `pipeline`: the ONNX replicas import no torch)
from voicefleet.models.adapter_config import AdapterError
from voicefleet.platform.onnx_exports import VoiceNotExported
from voicefleet.platform.registry import RegistryError, StorageFull, VoiceDamaged, VoiceExists, VoiceNotFound
from voicefleet.serve.schemas import ErrorResponse
from voicefleet.text.frontend import TextFrontendError

logger = logging.getLogger(__name__)


class RequestFailed(Exception):
    """The answer to a request that cannot be served as given: what `client_error` returns.

    Picklable, so a synthesis replica raises it back to the ingress through a Serve handle (Ray
    wraps it; `client_error` takes it out again)."""

    def __init__(self, status: int, type: str, message: str, details: list[dict] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(status, type, message)
        self.status, self.type, self.message = status, type, message
        self.details, self.headers = details, headers

    def __str__(self) -> str:
        return self.message

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.type}
        if self.details is not None:
            body["details"] = self.details
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


# Failures the ingress itself finds in a request; the message says what to change.
class ApiError(Exception):
    """A request the service refuses; its class's row in `ERRORS` gives the status."""


class BadRequest(ApiError):
    """Well-formed, but asks for what this server does not offer (streaming flac, an mp3 answer
    from the OpenAI route), or a malformed HTTP header."""


class Unauthenticated(ApiError):
    """No API key, or an unknown one, on a server configured with keys."""


class Forbidden(ApiError):
    """The caller's key may not use this voice or may not manage voices."""


class NotFound(ApiError):
    """Something other than a voice is not there: a report file a voice's lineage does not hold."""


class TooLarge(ApiError):
    """A body over `max_upload_bytes` or a text over `max_text_chars`."""


class InvalidInput(ApiError):
    """Passes the schema, but its content cannot be used: blank text, a reference clip that
    cannot be decoded, is too short, too long or silent."""


class Unavailable(ApiError):
    """Synthesis cannot answer now (no replica ready, or no synthesis deployment attached)."""


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _registry_message(e: BaseException) -> str:
    return e.client_message  # names the voice, never the registry's location (a path or bucket URI)


def _validation_message(e: BaseException) -> str:
    return "; ".join(_field_message(err) for err in e.errors()) or "invalid request"


def _validation_details(e: BaseException) -> list[dict]:
    return [{"loc": list(err.get("loc", ())), "msg": err.get("msg")} for err in e.errors()]


def _field_message(err: dict) -> str:
    loc = err.get("loc", ())
    if err.get("type") == "json_invalid":  # loc is ("body", <offset>)
        reason = (err.get("ctx") or {}).get("error", "")
        return f"body is not valid JSON ({reason} at position {loc[-1]})" if reason else "body is not valid JSON"
    where = ".".join(str(p) for p in loc if p != "body") or "body"
    return f"{where}: {err.get('msg', 'invalid')}"


def _http_message(e: HTTPException, where: str) -> str:
    """The framework's own errors name the route and what to do rather than the bare reason phrase."""
    if where and e.status_code == 404 and e.detail == "Not Found":
        return f"no route {where}; the API is listed at /docs"
    if where and e.status_code == 405 and e.headers and "Allow" in e.headers:
        return f"{where} is not allowed; this route takes {e.headers['Allow']}"
    return _one_line(e.detail)


@dataclass(frozen=True)
class Row:
    """What a client gets for one exception type: status, `type`, and how the message is worded."""

    status: int
    type: str
    message: Callable[[BaseException], str] = _one_line
    details: Callable[[BaseException], list[dict]] | None = None
    headers: dict[str, str] | None = None


# Looked up along the exception's class hierarchy, most specific class first (VoiceExists before
# RegistryError). `RequestFailed` and the framework's HTTPException carry their own status.
ERRORS: dict[type[Exception], Row] = {
    BadRequest: Row(400, "invalid_request_error"),
    Unauthenticated: Row(401, "authentication_error", headers={"WWW-Authenticate": "Bearer"}),
    Forbidden: Row(403, "permission_error"),
    VoiceNotFound: Row(404, "not_found", _registry_message),
    NotFound: Row(404, "not_found"),
    VoiceExists: Row(409, "conflict", _registry_message),
    AdapterError: Row(409, "conflict"),  # an adapter voice trained on other pretrained weights than the replica's
    # ONNX replicas: a voice with no export, a stale or damaged one, or one the graphs do not cover
    VoiceNotExported: Row(409, "voice_not_exported", _registry_message),
    TooLarge: Row(413, "request_too_large"),
    RequestValidationError: Row(422, "invalid_request_error", _validation_message, _validation_details),
    InvalidInput: Row(422, "invalid_request_error"),
    RegistryError: Row(422, "invalid_request_error", _registry_message),  # e.g. an invalid voice id
    SynthesisError: Row(422, "invalid_request_error"),  # e.g. text with nothing to say
    TextFrontendError: Row(422, "invalid_request_error"),  # e.g. a language detected but not supported
    Unavailable: Row(503, "unavailable"),
    # Not the client's doing, but each says what happened to the one voice or upload it concerns
    # (a bare 500 would not): a voice damaged on disk, and a registry whose storage is full.
    VoiceDamaged: Row(500, "voice_damaged", _registry_message),
    StorageFull: Row(507, "insufficient_storage", _registry_message),
}
# Types of the framework's own HTTP errors (unknown route, wrong method, malformed multipart body).
HTTP_TYPES = {400: "invalid_request_error", 404: "not_found", 405: "method_not_allowed",
              413: "request_too_large", 422: "invalid_request_error"}
SERVER_FAULT = RequestFailed(500, "server_error", "internal server error")


def _unwrap(e: BaseException) -> BaseException:
    """The exception a synthesis replica raised, out of Ray's wrapper (whose str() is a traceback)."""
    seen = set()
    while isinstance(e, RayTaskError) and isinstance(e.cause, BaseException) and id(e) not in seen:
        seen.add(id(e))
        e = e.cause
    return e


def client_error(e: BaseException, where: str = "") -> RequestFailed | None:
    """What the client gets for `e` (raised while serving `where`, "METHOD /path"), or None for a
    server fault."""
    e = _unwrap(e)
    if isinstance(e, RequestFailed):
        return RequestFailed(e.status, e.type, e.message, e.details, e.headers)
    if isinstance(e, HTTPException):
        return RequestFailed(e.status_code, HTTP_TYPES.get(e.status_code, "error"), _http_message(e, where), None,
                             e.headers)
    for cls in type(e).__mro__:
        row = ERRORS.get(cls)
        if row is not None:
            return RequestFailed(row.status, row.type, row.message(e), row.details(e) if row.details else None,
                                 row.headers)
    return None


def error_response(e: BaseException, where: str = "") -> JSONResponse:
    """The JSON error for `e`; a server fault is logged with its traceback and answered 500."""
    failed = client_error(e, where)
    if failed is None:
        logger.error("unhandled error%s", f" on {where}" if where else "", exc_info=e)
        failed = SERVER_FAULT
    return failed.response()


def handled_types() -> list[type[Exception]]:
    """Exception classes the app registers `error_response` for (besides `Exception` itself)."""
    return [RequestFailed, HTTPException, *ERRORS]


def openapi_errors(*statuses: int) -> dict[int, dict]:
    """The `responses=` entry of a route that can answer these statuses."""
    return {status: {"model": ErrorResponse} for status in statuses}
