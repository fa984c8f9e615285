"""Shared FastAPI dependencies: settings, registry, synthesis handle, API-key checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.errors import Forbidden, Unauthenticated
from voicefleet.serve.replica_metrics import RequestMetrics
from voicefleet.serve.settings import ApiKey, ServeSettings


@dataclass
class Services:
    """What the routers need, built once per ingress replica (read-only after start)."""

    settings: ServeSettings
    registry: VoiceRegistry
    synthesizer: Any  # ray.serve.handle.DeploymentHandle to VoiceSynthesizer
    metrics: RequestMetrics  # this ingress replica's request counters


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings(services: Services = Depends(get_services)) -> ServeSettings:
    return services.settings


def get_registry(services: Services = Depends(get_services)) -> VoiceRegistry:
    return services.registry


_bearer = HTTPBearer(auto_error=False, description="API key, when the server is configured with keys.")


@dataclass(frozen=True)
class Caller:
    """Who is calling: `key` is None when the server runs without API keys (everything allowed)."""

    key: ApiKey | None

    def allows(self, voice_id: str) -> bool:
        return self.key is None or self.key.allows(voice_id)

    @property
    def admin(self) -> bool:
        return self.key is None or self.key.admin

    def require_voice(self, voice_id: str) -> None:
        if not self.allows(voice_id):
            raise Forbidden(f"this API key may not use voice {voice_id!r}")

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden("managing voices needs an API key allowed all voices ('*')")


def get_caller(credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
               settings: ServeSettings = Depends(get_settings)) -> Caller:
    if not settings.api_keys:
        return Caller(None)
    if credentials is None:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    token = credentials.credentials.encode()
    for key in settings.api_keys:  # compare with every key in constant time
        if hmac.compare_digest(token, key.key.get_secret_value().encode()):
            return Caller(key)
    raise Unauthenticated("invalid API key")
