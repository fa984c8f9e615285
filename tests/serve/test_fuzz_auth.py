"""Schema-driven fuzzing of the OpenAPI spec (no 5xx), API keys, and the replica health check."""

from __future__ import annotations

import json
import random

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install httpx==0.28.1)")
import torch

FUZZ_REQUESTS = 80  # bounded: a few seconds against tiny models


def _junk(rng: random.Random):
    return rng.choice([None, -1, 10**12, 3.5, "", "x" * 300, "../../etc/passwd", [], {}, True, "\u0000\ud7ff"])


def _value(name: str, schema: dict, spec: dict, rng: random.Random):
    """A value for one property: usually schema-valid (bounds included), sometimes not."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        schema = rng.choice(schema["anyOf"])
    if rng.random() < 0.15:
        return _junk(rng)
    if name == "max_tokens":  # keep synthesis short: random tiny GPTs rarely stop on their own
        return rng.choice([1, 5, 20, 0, 1501])
    if name in ("voice",):
        return rng.choice(["alpha", "beta", "nobody", "A-B", ""])
    if "enum" in schema:
        return rng.choice(schema["enum"] + ["bogus"])
    t = schema.get("type")
    if t == "integer":
        lo, hi = schema.get("minimum", -5), schema.get("maximum", 50)
        return rng.choice([lo, hi, lo - 1, hi + 1, rng.randint(lo, min(hi, lo + 50))])
    if t == "number":
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -1.0))
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 10.0))
        return rng.choice([lo, hi, lo - 0.5, hi + 0.5, rng.uniform(lo, hi), float("nan") if rng.random() < .1 else lo])
    if t == "boolean":
        return rng.random() < 0.5
    if t == "string":
        alphabet = "你好世界今天天气。，,. abcXYZ!?\n\t1234"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    if t == "null":
        return None
    return _junk(rng)


def _body(schema: dict, spec: dict, rng: random.Random) -> dict:
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    body = {}
    for name, prop in schema.get("properties", {}).items():
        if name in schema.get("required", []) or rng.random() < 0.5:
            if rng.random() < 0.05:
                continue  # drop a required field now and then
            body[name] = _value(name, prop, spec, rng)
    if name := rng.choice([None, None, "stream"]):
        body[name] = False  # a stream error after the 200 would not show as a status
    return body


@pytest.mark.slow
def test_openapi_fuzz_no_5xx(base_url):
    spec = httpx.get(f"{base_url}/openapi.json").json()
    rng = random.Random(0)
    operations = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            operations.append((path, method, op))
    failures = []
    for i in range(FUZZ_REQUESTS):
        path, method, op = operations[i % len(operations)]
        url = base_url + path.replace("{voice_id}", rng.choice(["nobody", "A!", "x" * 70]))
        content = op.get("requestBody", {}).get("content", {})
        if "application/json" in content:
            body = _body(content["application/json"]["schema"], spec, rng)
            if rng.random() < 0.1:
                r = httpx.request(method, url, content=b"{not json", headers={"content-type": "application/json"},
                                  timeout=60)
            else:  # json.dumps writes a NaN as `NaN` (not JSON): the server must refuse it, not fail
                r = httpx.request(method, url, content=json.dumps(body),
                                  headers={"content-type": "application/json"}, timeout=60)
        elif "multipart/form-data" in content:
            # never registers a real voice: the id is invalid or the clip is not audio
            form = {"voice_id": rng.choice(["Bad Id", "", "zz-fuzz"]), "prompt_text": "你好",
                    "prompt_lang": rng.choice(["zh", "xx"])}
            r = httpx.request(method, url, data=form, files={"reference": ("a.wav", rng.randbytes(200))}, timeout=60)
        else:
            r = httpx.request(method, url, timeout=60)
        if r.status_code >= 500:
            failures.append((method, path, r.status_code, r.text[:200]))
        elif r.status_code >= 400:
            assert set(r.json()["error"]) >= {"message", "type"}, r.text
    assert not failures, failures


@pytest.mark.slow
def test_openapi_documents_fields(base_url):
    spec = httpx.get(f"{base_url}/openapi.json").json()
    tts = spec["components"]["schemas"]["TTSRequest"]["properties"]
    for name, prop in tts.items():
        assert prop.get("description"), f"TTSRequest.{name} has no description"
    assert tts["top_k"]["minimum"] == 1 and tts["max_tokens"]["maximum"] == 1500


@pytest.fixture(scope="module")
def keyed_client(base_url, serve_settings):
    """The same API with bearer keys, served in-process over the running synthesis deployment."""
    from fastapi.testclient import TestClient
    from ray import serve

    from voicefleet.serve.asgi import create_app

    settings = type(serve_settings).model_validate(serve_settings.model_dump() | {
        "api_keys": [{"key": "admin-key", "voices": ["*"]}, {"key": "alpha-key", "voices": ["alpha"]}]})
    handle = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet")
    with TestClient(create_app(settings, handle)) as client:
        yield client


@pytest.mark.slow
def test_api_keys(keyed_client):
    body = {"voice": "alpha", "text": "你好。", "seed": 0, "max_tokens": 10}
    assert keyed_client.post("/v1/tts", json=body).status_code == 401
    assert keyed_client.post("/v1/tts", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    alpha = {"Authorization": "Bearer alpha-key"}
    assert keyed_client.post("/v1/tts", json=body, headers=alpha).status_code == 200
    r = keyed_client.post("/v1/tts", json={**body, "voice": "beta"}, headers=alpha)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    # a restricted key cannot probe for voices it may not use
    assert keyed_client.post("/v1/tts", json={**body, "voice": "nobody"}, headers=alpha).status_code == 403
    assert [v["voice_id"] for v in keyed_client.get("/v1/voices", headers=alpha).json()["voices"]] == ["alpha"]
    assert keyed_client.delete("/v1/voices/beta", headers=alpha).status_code == 403
    admin = {"Authorization": "Bearer admin-key"}
    assert len(keyed_client.get("/v1/voices", headers=admin).json()["voices"]) == 3


def test_health_check_fails_on_broken_shared_model(tiny_pretrained):
    from voicefleet.inference.pipeline import Synthesizer
    from voicefleet.serve.synthesizer import shared_model_problem

    synth = Synthesizer.from_pretrained(tiny_pretrained)
    assert shared_model_problem(synth) is None
    name, bert_weight = next((n, p) for n, p in synth.bert.named_parameters() if n.endswith("query.weight"))
    saved = bert_weight.detach().clone()
    with torch.no_grad():
        bert_weight.view(-1)[:2] = torch.tensor([3e38, 3e38])  # finite weights whose sum overflows
        assert shared_model_problem(synth) is None
        bert_weight.view(-1)[:2] = torch.tensor([float("inf"), -float("inf")])  # a sum of NaN
        assert f"bert parameter {name} has non-finite" in shared_model_problem(synth)
        bert_weight.copy_(saved)
        assert shared_model_problem(synth) is None
        next(synth.hubert.parameters()).view(-1)[-1] = float("nan")
    assert "hubert parameter" in shared_model_problem(synth)
