"""Errors a client sees: registry errors name the voice, never the storage path or bucket URI.

The app is served in-process with no synthesis deployment: every request here fails at the
registry, before a replica would be asked for anything.
"""

from __future__ import annotations

import pytest

from voicefleet.platform.registry import RegistryError, VoiceExists, VoiceNotFound
from voicefleet.serve.errors import user_error


def test_user_error_hides_the_registry_location():
    failed = user_error(VoiceNotFound("alice", "s3://private-bucket/voicefleet/registry"))
    assert (failed.status, failed.type, failed.message) == (404, "not_found", "voice 'alice' not found")
    failed = user_error(VoiceExists("alice", "/srv/voicefleet/registry"))
    assert failed.status == 422 and failed.message == "voice 'alice' already exists"
    failed = user_error(RegistryError("invalid voice id 'A'"))
    assert failed.status == 422 and failed.message == "invalid voice id 'A'"


def test_library_message_keeps_the_location():
    assert "s3://private-bucket" in str(VoiceNotFound("alice", "s3://private-bucket"))
    assert "/srv/registry" in str(VoiceExists("alice", "/srv/registry"))


@pytest.fixture(scope="module")
def client(serve_settings):
    pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx (pip install httpx==0.28.1)")
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    with TestClient(create_app(serve_settings, synthesizer=None)) as c:
        yield c


def _assert_no_location(body: dict, storage) -> None:
    message = body["error"]["message"]
    assert str(storage) not in message and "registry" not in message, message


def test_unknown_voice_404_body_names_only_the_voice(client, storage):
    for response in (client.post("/v1/tts", json={"voice": "nobody", "text": "你好。"}),
                     client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "nobody", "input": "你好。"}),
                     client.delete("/v1/voices/nobody")):
        assert response.status_code == 404, response.text
        body = response.json()
        assert body["error"] == {"message": "voice 'nobody' not found", "type": "not_found"}
        _assert_no_location(body, storage)


def test_existing_voice_409_body_names_only_the_voice(client, storage, reference_wav):
    pytest.importorskip("python_multipart", reason="python-multipart (needed by POST /v1/voices) is not installed")
    response = client.post("/v1/voices", data={"voice_id": "alpha", "prompt_text": "你好。", "prompt_lang": "zh"},
                           files={"reference": ("r.wav", reference_wav.read_bytes(), "audio/wav")})
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["error"] == {"message": "voice 'alpha' already exists", "type": "conflict"}
    _assert_no_location(body, storage)
