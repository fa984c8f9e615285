"""The FastAPI application (`create_app`): routers, error handlers, limits, health routes.

Every error a client gets is JSON `{"error": {"message": ..., "type": ...}}`, from the one table
in `serve/errors.py`: HTTP errors, validation errors (422, with `details`) and server faults (500,
no internals).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request

from voicefleet import __version__
from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.dependencies import Services
from voicefleet.serve.errors import BadRequest, TooLarge, Unavailable, error_response, handled_types, openapi_errors
from voicefleet.serve.replica_metrics import RequestMetrics
from voicefleet.serve.routers import page, reports, speech, voices
from voicefleet.serve.settings import ServeSettings


async def _error(request: Request, exc: Exception):
    return error_response(exc, f"{request.method} {request.url.path}")


def create_app(settings: ServeSettings, synthesizer: Any = None) -> FastAPI:
    """The HTTP API over a `VoiceSynthesizer` handle (`Gateway` passes it). Without one, the
    registry routes work and synthesis answers 503 (the app served in-process, for tests)."""
    app = FastAPI(title="voicefleet", version=__version__,
                  description="GPT-SoVITS v2 voices behind one endpoint (Ray Serve).")
    app.state.services = Services(settings=settings, registry=VoiceRegistry(settings.registry_root),
                                  synthesizer=synthesizer, metrics=RequestMetrics(settings.metrics_per_voice))
    for exc_type in handled_types():
        app.add_exception_handler(exc_type, _error)
    app.add_exception_handler(Exception, _error)  # server faults: 500 (Starlette re-raises them to the server)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None:
            # a middleware answers here: the exception handlers sit inside it
            if not length.isdigit():
                return error_response(BadRequest(f"malformed Content-Length header {length[:40]!r}"))
            if int(length) > settings.max_upload_bytes:
                return error_response(TooLarge(f"request body is {length} bytes; this server accepts at most "
                                               f"{settings.max_upload_bytes}"))
        return await call_next(request)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses=openapi_errors(503),
             summary="Readiness: a synthesis replica answers and its models are sound")
    async def readyz():
        if synthesizer is None:
            raise Unavailable("no synthesis deployment is attached to this app")
        try:
            ok = await asyncio.wait_for(synthesizer.ready.remote(), timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure means not ready
            raise Unavailable(f"synthesis not ready: {type(e).__name__}") from None
        if not ok:
            raise Unavailable("synthesis replica has a broken shared model")
        return {"status": "ready"}

    app.include_router(speech.router)
    app.include_router(voices.router)
    app.include_router(reports.router)
    app.include_router(page.router)  # the web page at / (calls the routes above like any client)
    return app
