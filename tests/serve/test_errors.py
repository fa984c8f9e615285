"""Every row of the error table (serve/errors.py), exercised through the app served in-process.

Synthesis runs in this process too (`LocalHandle`): the replica's own synthesis function, with
its errors raised the way a Serve handle raises them (inside Ray's `RayTaskError`).
"""

from __future__ import annotations

import copy
import io
import re
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from voicefleet.inference.pipeline import SynthesisError
from voicefleet.models.adapter_config import AdapterError
from voicefleet.platform.onnx_exports import VoiceNotExported
from voicefleet.platform.registry import RegistryError, StorageFull, VoiceDamaged, VoiceExists, VoiceNotFound
from voicefleet.serve.errors import (
    ERRORS,
    BadRequest,
    Forbidden,
    InvalidInput,
    NotFound,
    RequestFailed,
    TooLarge,
    Unauthenticated,
    Unavailable,
    client_error,
)
from voicefleet.text.frontend import TextFrontendError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "http-api.md"
TEXT = "你好。"
SMALL = {"max_tokens": 5, "seed": 0}


class LocalHandle:
    """What the ingress uses of a Serve handle to `VoiceSynthesizer`, run in this process."""

    def __init__(self, settings, fault: Exception | None = None):
        from voicefleet.inference.pipeline import Synthesizer
        from voicefleet.models.pretrained import find_pretrained
        from voicefleet.platform.registry import VoiceRegistry

        self.synth = Synthesizer.from_pretrained(find_pretrained(settings.pretrained))
        self.registry = VoiceRegistry(settings.registry_root)
        self.fault, self.key, self.voices = fault, None, {}

    def options(self, multiplexed_model_id: str | None = None, **_):
        other = copy.copy(self)
        other.key = multiplexed_model_id or self.key
        return other

    @property
    def synthesize(self):
        return SimpleNamespace(remote=self._synthesize)

    async def _synthesize(self, job):
        from voicefleet.serve.batching import synthesize_one

        try:
            if self.fault is not None:
                raise self.fault
            return synthesize_one(self.synth, self._voice(), job)
        except Exception as e:  # noqa: BLE001 - as a replica's error reaches the ingress
            from ray.exceptions import RayTaskError

            raise RayTaskError("VoiceSynthesizer.synthesize", traceback.format_exc(), e).as_instanceof_cause() \
                from None

    def _voice(self):
        if self.key not in self.voices:
            voice_id = self.key.partition("@")[0]
            record, files = self.registry.get(voice_id), self.registry.local_files(voice_id)
            self.voices[self.key] = self.synth.load_voice(self.key, files["gpt"], files["sovits"],
                                                          files["reference"], record.prompt_text, record.prompt_lang)
        return self.voices[self.key]


@pytest.fixture(scope="module")
def apps(serve_settings):
    """Test clients: `open` (no keys), `keyed` (an admin and an alpha-only key), `bare` (no
    synthesis deployment), `faulty` (synthesis raises a server fault)."""
    pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx (pip install httpx==0.28.1)")
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    keyed = serve_settings.model_validate(serve_settings.model_dump() | {
        "api_keys": [{"key": "admin-key", "voices": ["*"]}, {"key": "alpha-key", "voices": ["alpha"]}]})
    handle = LocalHandle(serve_settings)
    fault = copy.copy(handle)
    fault.fault = RuntimeError("replica state at /srv/secret went bad")
    clients = {"open": TestClient(create_app(serve_settings, handle)),
               "keyed": TestClient(create_app(keyed, handle)),
               "bare": TestClient(create_app(serve_settings)),
               # server faults are re-raised to the server after the 500 is sent; a client sees the 500
               "faulty": TestClient(create_app(serve_settings, fault), raise_server_exceptions=False)}
    yield SimpleNamespace(**clients, settings=serve_settings)
    for client in clients.values():
        client.close()


def _clip(seconds: float, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * 32000)) / 32000
    buffer = io.BytesIO()
    sf.write(buffer, (amplitude * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 32000, format="WAV")
    return buffer.getvalue()


def _upload(client, voice_id: str, data: bytes, headers: dict | None = None):
    pytest.importorskip("python_multipart", reason="python-multipart (needed by POST /v1/voices) is not installed")
    return client.post("/v1/voices", data={"voice_id": voice_id, "prompt_text": TEXT, "prompt_lang": "zh"},
                       files={"reference": ("r.wav", data, "audio/wav")}, headers=headers)


def _tts(client, headers: dict | None = None, **body):
    return client.post("/v1/tts", json={"voice": "alpha", "text": TEXT, **SMALL, **body}, headers=headers)


def _speech(client, **body):
    return client.post("/v1/audio/speech", json={"model": "tts-1", "voice": "alpha", "input": TEXT, **body})


def _damaged_voice(a):
    """A request for a voice whose record on disk was damaged (the voice is removed afterwards)."""
    from voicefleet.platform.registry import VoiceRegistry

    registry = VoiceRegistry(a.settings.registry_root)
    registry.register("omega", **{k: v for k, v in registry.local_files("alpha").items()}, prompt_text=TEXT,
                      prompt_lang="zh")
    folder = Path(registry.root) / "voices" / "omega"
    (folder / "voice.json").write_bytes(b"{damaged")
    try:
        return _tts(a.open, voice="omega")
    finally:
        registry.delete("omega")


def _upload_on_a_full_disk(a):
    import errno
    from unittest import mock

    def full(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch("voicefleet.platform.registry.pafs.copy_files", full):
        return _upload(a.open, "epsilon", _clip(4.0))


def _foreign_adapter_voice(a):
    """The replica refuses an adapter voice trained on other pretrained weights (served end to end in
    tests/serve/test_adapter_serving.py); here the refusal reaches the ingress as a replica's error."""
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    handle = LocalHandle(a.settings)
    handle.fault = AdapterError("the gpt adapter of voice 'psi' was trained on other gpt weights than this replica's")
    with TestClient(create_app(a.settings, handle)) as client:
        return _tts(client, voice="alpha")


def _voice_not_exported(a):
    """An ONNX replica's refusal of a voice with no export (served end to end in
    tests/serve/test_onnx_serving.py), reaching the ingress as a replica's error."""
    from fastapi.testclient import TestClient

    from voicefleet.platform.onnx_exports import not_exported
    from voicefleet.serve.asgi import create_app

    handle = LocalHandle(a.settings)
    handle.fault = not_exported("alpha", "voice 'alpha' (version 1) has no ONNX export", a.settings.storage,
                                a.settings.pretrained, overwrite=False)
    with TestClient(create_app(a.settings, handle)) as client:
        return _tts(client, voice="alpha")


ALPHA_KEY = {"Authorization": "Bearer alpha-key"}
# (row of the table, what the client did, request); each request fails with that row's status and type
CASES = [
    (BadRequest, "streaming flac", lambda a: _tts(a.open, format="flac", stream=True)),
    (BadRequest, "OpenAI route, mp3", lambda a: _speech(a.open, response_format="mp3")),
    (BadRequest, "OpenAI route, aac", lambda a: _speech(a.open, response_format="aac")),
    (BadRequest, "OpenAI route, sse", lambda a: _speech(a.open, stream_format="sse")),
    (BadRequest, "malformed Content-Length", lambda a: a.open.post(
        "/v1/tts", content=b"{}", headers={"content-type": "application/json", "content-length": "2x"})),
    (Unauthenticated, "no key", lambda a: _tts(a.keyed)),
    (Unauthenticated, "unknown key", lambda a: _tts(a.keyed, headers={"Authorization": "Bearer nope"})),
    (Forbidden, "voice outside the key", lambda a: _tts(a.keyed, headers=ALPHA_KEY, voice="beta")),
    (Forbidden, "missing voice outside the key", lambda a: _tts(a.keyed, headers=ALPHA_KEY, voice="nobody")),
    (Forbidden, "delete without an admin key", lambda a: a.keyed.delete("/v1/voices/beta", headers=ALPHA_KEY)),
    (VoiceNotFound, "tts, unknown voice", lambda a: _tts(a.open, voice="nobody")),
    (VoiceNotFound, "OpenAI route, unknown voice", lambda a: _speech(a.open, voice="nobody")),
    (VoiceNotFound, "delete an unknown voice", lambda a: a.open.delete("/v1/voices/nobody")),
    (NotFound, "report file a voice does not hold", lambda a: a.open.get("/v1/voices/alpha/reports/sweep/trials.csv")),
    (HTTPException, "unknown route", lambda a: a.open.get("/v1/nothing-here")),
    (HTTPException, "wrong method", lambda a: a.open.get("/v1/tts")),
    (VoiceExists, "register an existing id", lambda a: _upload(a.open, "alpha", _clip(4.0))),
    (TooLarge, "text over max_text_chars", lambda a: _tts(a.open, text="你" * 501)),
    (TooLarge, "body over max_upload_bytes", lambda a: _upload(a.open, "big", b"\0" * (3 * 1024 * 1024))),
    (RequestValidationError, "top_k out of range", lambda a: _tts(a.open, top_k=0)),
    (RequestValidationError, "tts, mp3", lambda a: _tts(a.open, format="mp3")),
    (RequestValidationError, "unsupported lang", lambda a: _tts(a.open, lang="jp")),
    (RequestValidationError, "unknown field", lambda a: _tts(a.open, ref_audio_path="/etc/passwd")),
    (RequestValidationError, "not JSON", lambda a: a.open.post(
        "/v1/tts", content=b"{not json", headers={"content-type": "application/json"})),
    (InvalidInput, "blank text", lambda a: _tts(a.open, text="   ")),
    (InvalidInput, "clip that is not audio", lambda a: _upload(a.open, "epsilon", b"not audio")),
    (InvalidInput, "clip too short", lambda a: _upload(a.open, "epsilon", _clip(1.0))),
    (InvalidInput, "silent clip", lambda a: _upload(a.open, "epsilon", _clip(4.0, amplitude=0.0))),
    (RegistryError, "OpenAI route, invalid voice id", lambda a: _speech(a.open, voice="Not A Voice")),
    (RegistryError, "delete an invalid voice id", lambda a: a.open.delete("/v1/voices/Bad!Id")),
    (SynthesisError, "text with nothing to say", lambda a: _tts(a.open, text="。。。")),
    (TextFrontendError, "nothing in the language", lambda a: _tts(a.open, text="안녕하세요.", lang="all_yue")),
    (Unavailable, "readiness without synthesis", lambda a: a.bare.get("/readyz")),
    (Unavailable, "tts without synthesis", lambda a: _tts(a.bare)),
    (VoiceDamaged, "voice damaged on disk", _damaged_voice),
    (StorageFull, "upload on a full disk", _upload_on_a_full_disk),
    (AdapterError, "adapter voice of another base", _foreign_adapter_voice),
    (VoiceNotExported, "ONNX replica, voice not exported", _voice_not_exported),
]


def test_every_row_has_a_case():
    assert {row for row, _, _ in CASES} == set(ERRORS) | {HTTPException}


@pytest.mark.parametrize("row,what,request_", CASES, ids=[what for _, what, _ in CASES])
def test_each_failure_answers_its_row(apps, storage, row, what, request_):
    response = request_(apps)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    if row is HTTPException:  # the framework's own errors keep their status
        assert response.status_code in (404, 405) and error["type"] in ("not_found", "method_not_allowed")
    else:
        assert (response.status_code, error["type"]) == (ERRORS[row].status, ERRORS[row].type), error
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    assert str(storage) not in error["message"]  # never the registry's location


def test_messages_say_what_to_change(apps):
    assert "use one of wav, flac, pcm, opus" in _speech(apps.open, response_format="mp3").json()["error"]["message"]
    error = _tts(apps.open, format="mp3").json()["error"]
    assert "format" in error["message"] and "'wav'" in error["message"]  # the allowed values
    assert error["details"][0]["loc"] == ["body", "format"]
    assert "at most 500" in _tts(apps.open, text="你" * 501).json()["error"]["message"]
    assert "between 3 and 10 s" in _upload(apps.open, "epsilon", _clip(1.0)).json()["error"]["message"]
    assert _tts(apps.open, text="。。。").json()["error"]["message"] == \
        "nothing to synthesise: the text has no speakable content"
    assert _tts(apps.keyed).headers["www-authenticate"] == "Bearer"
    assert apps.open.get("/v1/nothing-here").json()["error"]["message"] == \
        "no route GET /v1/nothing-here; the API is listed at /docs"
    wrong_method = apps.open.get("/v1/tts")
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["message"] == "GET /v1/tts is not allowed; this route takes POST"
    message = apps.open.post("/v1/tts", content=b"{not json", headers={"content-type": "application/json"}
                             ).json()["error"]["message"]
    assert message.startswith("body is not valid JSON (") and message.endswith("at position 1)")
    message = _upload(apps.open, "epsilon", b"not audio").json()["error"]["message"]
    assert message.startswith("reference clip could not be decoded (") and "<" not in message


def test_unknown_voice_names_only_the_voice(apps):
    for response in (_tts(apps.open, voice="nobody"), _speech(apps.open, voice="nobody"),
                     apps.open.delete("/v1/voices/nobody")):
        assert response.json()["error"] == {"message": "voice 'nobody' not found", "type": "not_found"}
    assert _upload(apps.open, "alpha", _clip(4.0)).json()["error"] == {
        "message": "voice 'alpha' already exists", "type": "conflict"}


def test_server_fault_is_500_without_internals(apps):
    response = _tts(apps.faulty)
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "internal server error", "type": "server_error"}}


def test_unmapped_library_error_from_a_replica_is_unwrapped(serve_settings):
    """A user error a replica raised as is (not as `RequestFailed`) answers its row, with the
    error's own message rather than Ray's traceback text."""
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    handle = LocalHandle(serve_settings, fault=SynthesisError("reference audio is\nsilent"))
    with TestClient(create_app(serve_settings, handle)) as client:
        response = _tts(client)
    assert response.status_code == 422
    assert response.json()["error"] == {"message": "reference audio is silent", "type": "invalid_request_error"}


def test_synthesis_still_works(apps):
    response = _tts(apps.open)
    assert response.status_code == 200 and response.content[:4] == b"RIFF"


@pytest.mark.parametrize(("text", "lang"), [("今日はいい天気ですね。", "ja"), ("안녕하세요.", "ko"),
                                          ("我哋去飲茶。", "yue"), ("我哋去飲茶。", "auto_yue")])
def test_japanese_korean_cantonese_over_http(apps, text, lang):
    response = _tts(apps.open, text=text, lang=lang)
    assert response.status_code == 200 and response.content[:4] == b"RIFF", response.text


def test_openai_route_reads_the_configured_language(serve_settings):
    from fastapi.testclient import TestClient

    from voicefleet.serve.asgi import create_app

    assert serve_settings.openai_lang == "zh"  # the official default mode
    japanese = serve_settings.model_copy(update={"openai_lang": "all_yue"})
    handle = LocalHandle(japanese)
    with TestClient(create_app(japanese, handle)) as client:
        # Hangul has no phonemes in Cantonese: the error proves the route used the setting
        error = _speech(client, input="안녕하세요.").json()["error"]
        assert error["message"].startswith("no phonemes in '안녕하세요.' with language 'all_yue'"), error
        assert _speech(client, input="我哋去飲茶。").content[:4] == b"RIFF"


def test_client_error_hides_the_registry_location():
    failed = client_error(VoiceNotFound("alice", "s3://private-bucket/voicefleet/registry"))
    assert (failed.status, failed.type, failed.message) == (404, "not_found", "voice 'alice' not found")
    failed = client_error(VoiceExists("alice", "/srv/voicefleet/registry"))
    assert (failed.status, failed.message) == (409, "voice 'alice' already exists")
    assert client_error(RuntimeError("boom")) is None
    assert isinstance(client_error(RegistryError("invalid voice id 'A'")), RequestFailed)


def _documented_errors() -> list[tuple[int, str]]:
    section = DOCS.read_text().split("## Errors", 1)[1]
    rows = re.findall(r"^\| (\d{3}) \| ([^|]+) \|", section, flags=re.MULTILINE)
    return [(int(status), kind) for status, kinds in rows for kind in re.findall(r"`(\w+)`", kinds)]


def test_docs_error_table_matches_the_code():
    documented = set(_documented_errors())
    table = {(row.status, row.type) for row in ERRORS.values()}
    framework = {(404, "not_found"), (405, "method_not_allowed"), (500, "server_error")}
    assert documented == table | framework, documented ^ (table | framework)
