"""A voice's latest evaluation travels from the registry to GET /v1/voices."""

from __future__ import annotations

import pytest

from voicefleet.platform.registry import RegistryError
from voicefleet.platform.voices import registry_for


def test_voices_list_shows_the_latest_evaluation_of_the_current_version(storage, serve_settings):
    pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx")
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    registry = registry_for(str(storage))
    voices = sorted(r.voice_id for r in registry.list())
    evaluated, plain = voices[0], voices[1]
    record = registry.get(evaluated)
    summary = {"n": 3, "speaker_similarity": 0.91, "dnsmos_ovrl": 3.1, "wer": None, "rtf": 0.4}
    registry.record_evaluation(evaluated, {"summary": summary, "list": "val.list"}, version=record.version)
    with pytest.raises(RegistryError, match="evaluate it again"):
        registry.record_evaluation(evaluated, {"summary": summary}, version=record.version + 1)

    with TestClient(create_app(serve_settings)) as client:
        listed = {v["voice_id"]: v for v in client.get("/v1/voices").json()["voices"]}
    assert listed[evaluated]["evaluation"]["summary"] == summary
    assert listed[plain]["evaluation"] is None
    # the record keeps everything else as it was
    after = registry.get(evaluated)
    assert (after.version, after.prompt_text, after.files) == (record.version, record.prompt_text, record.files)
