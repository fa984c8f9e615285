"""The FastAPI application (`create_app`): routers, error shapes, limits, health routes.

Every error a client gets is JSON `{"error": {"message": ..., "type": ...}}`: HTTP errors,
validation errors (422, reshaped) and server faults (500, no internals).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicefleet import __version__
from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.dependencies import Services
from voicefleet.serve.routers import speech, voices
from voicefleet.serve.settings import ServeSettings

logger = logging.getLogger(__name__)
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found", 405: "method_not_allowed", 409: "conflict", 413: "request_too_large",
               422: "invalid_request_error"}


def error_response(status: int, message: str, type: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type or ERROR_TYPES.get(status, "error")}},
                        status_code=status, headers=headers)


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(settings: ServeSettings, synthesizer: Any) -> FastAPI:
    """The HTTP API over a `VoiceSynthesizer` handle."""
    app = FastAPI(title="voicefleet", version=__version__,
                  description="GPT-SoVITS v2 voices behind one endpoint (Ray Serve).")
    app.state.services = Services(settings=settings, registry=VoiceRegistry(settings.registry_root),
                                  synthesizer=synthesizer)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if isinstance(detail, dict) and "message" in detail:
            return error_response(exc.status_code, detail["message"], detail.get("type"), exc.headers)
        return error_response(exc.status_code, str(detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"error": {"message": _validation_message(exc.errors()), "type": "invalid_request_error",
                                       "details": [{"loc": list(e.get("loc", ())), "msg": e.get("msg")}
                                                   for e in exc.errors()]}}, status_code=422)

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error", "server_error")

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, "malformed Content-Length header")
            if int(length) > settings.max_upload_bytes:
                return error_response(413, f"request body is {length} bytes; the limit is "
                                           f"{settings.max_upload_bytes}")
        return await call_next(request)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: a synthesis replica answers and its models are sound")
    async def readyz():
        try:
            ok = await asyncio.wait_for(synthesizer.ready.remote(), timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            return error_response(503, f"synthesis not ready: {type(e).__name__}", "unavailable")
        if not ok:
            return error_response(503, "synthesis replica has a broken shared model", "unavailable")
        return {"status": "ready"}

    app.include_router(speech.router)
    app.include_router(voices.router)
    return app
