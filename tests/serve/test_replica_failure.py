"""A synthesis replica killed under load is replaced by Serve, the load goes on, and no accepted
request fails: the ingress sends the requests the dead replica held again (they carry their seed)."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.slow

REQUEST = {"voice": "alpha", "text": "你好，今天天气很好。", "lang": "zh", "seed": 3, "max_tokens": 15}


def _replica_actors(ray):
    return sorted(name for name in (a["name"] for a in ray.util.list_named_actors(all_namespaces=True))
                  if "VoiceSynthesizer" in name and "REPLICA" in name.upper())


def test_killed_replica_is_replaced_and_load_continues(ray_session, base_url):
    import httpx

    ray = ray_session
    before = _replica_actors(ray)
    assert before, "no synthesis replica found"
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

    threads = [threading.Thread(target=client) for _ in range(2)]
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
    assert _replica_actors(ray) and _replica_actors(ray) != before  # a new replica replaced the killed one
