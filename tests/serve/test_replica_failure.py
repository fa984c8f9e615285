"""A synthesis replica killed under load is replaced by Serve, the load goes on, and no accepted
request fails: the ingress sends the requests the dead replica held again (they carry their seed).
Checked with the app's one replica and with an app of two, where the survivor takes the retries."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.slow

REQUEST = {"voice": "alpha", "text": "你好，今天天气很好。", "lang": "zh", "seed": 3, "max_tokens": 15}


def _replica_actors(ray, app: str):
    return sorted(name for name in (a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
                  if f"{app}#VoiceSynthesizer" in name and "REPLICA" in name.upper())


@pytest.fixture
def two_replica_url(base_url, serve_settings):
    """A second app with two synthesis replicas beside the main one (prefix /two); removed after."""
    from ray import serve

    from voicefleet.serve.app import build_app, wait_until_ready

    settings = serve_settings.model_copy(update={"min_replicas": 2, "max_replicas": 2, "num_cpus": 0.5,
                                                 "synthesis_threads": 1})
    serve.run(build_app(settings), name="voicefleet-two", route_prefix="/two", blocking=False)
    wait_until_ready(f"{base_url}/two", timeout_s=180)
    yield f"{base_url}/two"
    serve.delete("voicefleet-two")


def test_killed_replica_is_replaced_and_load_continues(ray_session, base_url):
    _kill_one_replica_under_load(ray_session, base_url, "voicefleet", replicas=1)


def test_killed_replica_of_two_loses_no_request(ray_session, two_replica_url):
    _kill_one_replica_under_load(ray_session, two_replica_url, "voicefleet-two", replicas=2)


def _kill_one_replica_under_load(ray, base_url: str, app: str, replicas: int) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while len(_replica_actors(ray, app)) < replicas and time.monotonic() < deadline:
        time.sleep(0.5)
    before = _replica_actors(ray, app)
    assert len(before) == replicas, f"expected {replicas} synthesis replicas of {app}, found {before}"
    results: list[tuple[float, int]] = []
    retried: list[int] = []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=120) as http:
            for _ in range(60):  # bounded
                if stop.is_set():
                    return
                try:
                    response = http.post(f"{base_url}/v1/tts", json=REQUEST)
                    code = response.status_code
                    retried.append(int(response.headers.get("X-Replica-Retries", 0)))
                except httpx.HTTPError:
                    code = 0
                results.append((time.monotonic(), code))

    # four clients keep requests on every replica at any moment, so the kill always catches some
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while sum(code == 200 for _, code in results) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
    # the load goes on: requests succeed again after the kill
    while time.monotonic() < deadline:
        if sum(code == 200 and t > killed_at + 1 for t, code in results) >= 3:
            break
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=180)
    after_kill = [code for t, code in results if t > killed_at]
    failed = [code for code in after_kill if code != 200]
    assert sum(code == 200 for code in after_kill) >= 3, f"no recovery: {after_kill}"
    assert failed == [], f"requests failed around the kill: {failed}"
    assert any(retried), "no request was in flight on the killed replica: the kill proved nothing"
    deadline = time.monotonic() + 60
    while len(_replica_actors(ray, app)) < replicas and time.monotonic() < deadline:
        time.sleep(0.5)
    after = _replica_actors(ray, app)
    assert len(after) == replicas and after != before, (before, after)  # a new replica took the killed one's place
