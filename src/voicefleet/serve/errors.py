"""Errors that travel from a synthesis replica to the ingress and become 4xx JSON responses."""

from __future__ import annotations


class RequestFailed(Exception):
    """A request that cannot be served as given; `status` is the HTTP status the client gets."""

    def __init__(self, status: int, type: str, message: str):
        super().__init__(status, type, message)
        self.status, self.type, self.message = status, type, message

    def __str__(self) -> str:
        return self.message


def as_request_failed(e: BaseException) -> RequestFailed | None:
    """The `RequestFailed` behind an exception raised through a Serve handle, if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, RequestFailed):
            return RequestFailed(e.status, e.type, e.message)
        e = getattr(e, "cause", None) or e.__cause__
    return None


def user_error(e: BaseException) -> RequestFailed | None:
    """Map the library's user errors to HTTP errors; None for anything else (a server fault)."""
    from voicefleet.inference.pipeline import SynthesisError
    from voicefleet.text.frontend import TextFrontendError
    from voicefleet.platform.registry import RegistryError, VoiceNotFound

    if isinstance(e, VoiceNotFound):
        return RequestFailed(404, "not_found", e.client_message)  # no storage location for clients
    if isinstance(e, RegistryError):
        return RequestFailed(422, "invalid_request_error", e.client_message)
    if isinstance(e, (SynthesisError, TextFrontendError)):
        return RequestFailed(422, "invalid_request_error", " ".join(str(e).split()))
    return None
