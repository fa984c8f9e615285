"""Retrying a request whose synthesis replica was lost (`voicefleet.serve.retry`), without a cluster."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, RayTaskError

from voicefleet.serve import retry as retry_mod
from voicefleet.serve.errors import InvalidInput, Unavailable, client_error
from voicefleet.serve.retry import RetryLog, with_replica_retry


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(retry_mod, "FIRST_BACKOFF_S", 0.01)
    monkeypatch.setattr(retry_mod, "MAX_BACKOFF_S", 0.02)


def _flaky(failures: int, error: BaseException):
    calls = []

    async def call():
        calls.append(1)
        if len(calls) <= failures:
            raise error
        return b"audio"

    return call, calls


def test_a_lost_replica_is_retried_until_one_answers():
    call, calls = _flaky(3, ActorDiedError())
    log = RetryLog()
    assert asyncio.run(with_replica_retry(call, budget_s=5, what="test", log=log)) == b"audio"
    assert len(calls) == 4 and log.retries == 3 and log.headers() == {"X-Replica-Retries": "3"}


def test_no_retry_header_when_nothing_was_retried():
    call, calls = _flaky(0, ActorDiedError())
    log = RetryLog()
    asyncio.run(with_replica_retry(call, budget_s=5, what="test", log=log))
    assert len(calls) == 1 and log.headers() == {}


def test_past_the_budget_the_client_gets_503():
    call, calls = _flaky(10_000, ActorDiedError())
    with pytest.raises(Unavailable, match="lost") as info:
        asyncio.run(with_replica_retry(call, budget_s=0.2, what="test"))
    assert client_error(info.value).status == 503 and 1 < len(calls) < 100


def test_a_budget_of_zero_turns_retries_off():
    call, calls = _flaky(1, ActorDiedError())
    with pytest.raises(Unavailable):
        asyncio.run(with_replica_retry(call, budget_s=0, what="test"))
    assert len(calls) == 1


@pytest.mark.parametrize("error", [InvalidInput("nothing to say"),
                                   RayTaskError("synthesize", "traceback", InvalidInput("nothing to say")),
                                   RuntimeError("a bug")])
def test_errors_a_replica_answered_are_not_retried(error):
    call, calls = _flaky(1, error)
    with pytest.raises(type(error)):
        asyncio.run(with_replica_retry(call, budget_s=5, what="test"))
    assert len(calls) == 1
