"""Retrying a synthesis request whose replica was lost.

A synthesis request carries its seed (the ingress draws one when the client gives none), so
running it again on another replica gives the same audio: it is idempotent. When the replica that
held it dies (killed, out of memory, its node gone), Ray raises an actor error at the ingress,
and the request is sent again, within `ServeSettings.replica_retry_s`, with a short backoff while
Serve starts a replacement. Errors a replica *answered* (a bad text, an unknown voice) are never
retried: only the loss of the replica itself.

A streamed response is retried only until its first chunk arrives: once the 200 status and audio
have left, the stream cannot be restarted under the client's feet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

from voicefleet.serve.errors import Unavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 2.0


def replica_lost_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the replica is gone", not "the replica answered with an error"."""
    from ray.exceptions import RayActorError, WorkerCrashedError
    from ray.serve.exceptions import ReplicaUnavailableError

    return RayActorError, ReplicaUnavailableError, WorkerCrashedError


@dataclass
class RetryLog:
    """What retrying cost one request: how many times it was sent again and the time spent."""

    retries: int = 0
    waited_s: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def headers(self) -> dict[str, str]:
        return {"X-Replica-Retries": str(self.retries)} if self.retries else {}


async def with_replica_retry(call: Callable[[], Awaitable[T]], budget_s: float, what: str,
                             log: RetryLog | None = None) -> T:
    """``await call()``; when its replica is lost, call again until `budget_s` seconds have passed.

    `call` must build a new request each time (a new ``handle.method.remote(...)``). Past the
    budget the request fails with `Unavailable` (503), saying how long it was retried.
    """
    lost = replica_lost_types()
    log = log if log is not None else RetryLog()
    backoff = FIRST_BACKOFF_S
    while True:
        try:
            return await call()
        except lost as e:
            elapsed = time.monotonic() - log.started
            if elapsed + backoff > budget_s:
                logger.error("%s: synthesis replica lost (%s); giving up after %d retries in %.1f s",
                             what, type(e).__name__, log.retries, elapsed)
                raise Unavailable(f"the synthesis replica serving this request was lost and no replica took it "
                                  f"over within {budget_s:g} s ({log.retries} retries); try again") from None
            logger.warning("%s: synthesis replica lost (%s); sending the request again in %.2f s (retry %d)",
                           what, type(e).__name__, backoff, log.retries + 1)
            await asyncio.sleep(backoff)
            log.retries += 1
            log.waited_s += backoff
            backoff = min(backoff * 2, MAX_BACKOFF_S)
