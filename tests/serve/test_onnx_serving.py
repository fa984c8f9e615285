"""Serving on the ONNX engine: a second app (`engine: onnx`, prefix /onnx) beside the torch one on the
same registry. An exported voice answers as the torch replica does for a greedy request, whole and
streamed, on every route; a voice with no export, a stale, damaged or v2ProPlus one answers 409
`voice_not_exported`; and the replica's code runs in a process where torch cannot be imported."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install httpx==0.28.1)")
pytest.importorskip("onnxruntime", reason="the ONNX engine needs onnxruntime (pip install 'voicefleet[onnx]')")
import soundfile as sf
from typer.testing import CliRunner

from tests.inference.test_onnx import BLOCK_TORCH, mel_distance
from voicefleet.cli.app import app
from voicefleet.inference.onnx_engine import GRAPHS
from voicefleet.platform.onnx_exports import ONNX_FOLDER, export_stamp
from voicefleet.platform.registry import VoiceRegistry
from voicefleet.serve.errors import RequestFailed

pytestmark = pytest.mark.slow  # exports graphs and runs the real Serve app (Ray actors, HTTP)

TEXT = "今天天气很好。我们一起去公园散步吧！"
GREEDY = {"top_k": 1, "noise_scale": 0.0, "max_tokens": 24, "seed": 3, "batch_size": 1}
EXPORTED, STALE, BARE = "onnx-a", "onnx-stale", "onnx-bare"


def _export(storage: Path, pretrained: Path, voice_id: str) -> None:
    done = CliRunner().invoke(app, ["export", "onnx", voice_id, "--storage", str(storage),
                                    "--pretrained", str(pretrained)])
    assert done.exit_code == 0, done.output


@pytest.fixture(scope="module")
def registry(serve_settings, storage, tiny_pretrained):
    """Three copies of voice alpha: exported into the registry, exported then registered again
    (stale), never exported. Removed after the module."""
    registry = VoiceRegistry(serve_settings.registry_root)
    alpha, record = registry.local_files("alpha"), registry.get("alpha")
    for voice_id in (EXPORTED, STALE, BARE):
        registry.register(voice_id, **alpha, prompt_text=record.prompt_text, prompt_lang=record.prompt_lang)
    for voice_id in (EXPORTED, STALE):
        _export(storage, tiny_pretrained.root, voice_id)
    registry.register(STALE, **alpha, prompt_text=record.prompt_text, prompt_lang=record.prompt_lang, overwrite=True)
    yield registry
    for voice_id in (EXPORTED, STALE, BARE):
        registry.delete(voice_id)


@pytest.fixture(scope="module")
def onnx_settings(serve_settings):
    return serve_settings.model_copy(update={"engine": "onnx", "num_cpus": 0})


@pytest.fixture(scope="module")
def onnx_url(base_url, onnx_settings, registry):
    """The ONNX app beside the torch one (same HTTP proxy and registry, prefix /onnx)."""
    from ray import serve

    from voicefleet.serve.app import build_app

    serve.run(build_app(onnx_settings), name="voicefleet-onnx", route_prefix="/onnx")
    yield f"{base_url}/onnx"
    serve.delete("voicefleet-onnx")


def tts(url: str, voice: str = EXPORTED, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/tts", json={"voice": voice, "text": TEXT, "lang": "zh", **GREEDY, **body},
                      timeout=120)


def _audio(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    audio, rate = sf.read(io.BytesIO(response.content), dtype="float32")
    assert rate == 32000
    return audio


def test_an_exported_voice_answers_as_the_torch_replica_does(base_url, onnx_url):
    onnx, torch_ = tts(onnx_url), tts(base_url)
    assert onnx.headers["x-seed"] == "3" and onnx.headers["content-type"] == "audio/wav"
    a, b = _audio(onnx), _audio(torch_)
    assert a.shape == b.shape and np.abs(a).max() > 0  # greedy decoding: the torch replica's tokens
    assert mel_distance(a, b) < 5e-3  # and its audio, up to float sums and 16-bit samples
    from ray import serve

    stats = serve.get_deployment_handle("VoiceSynthesizer", app_name="voicefleet-onnx").stats.remote().result()
    assert stats["engine"] == "onnx" and f"{EXPORTED}@1" in stats["cached"]


def test_a_seed_gives_the_same_sampled_audio_again(onnx_url):
    sampled = {"top_k": 15, "top_p": 0.9, "temperature": 1.0, "noise_scale": 0.5}
    first, again = tts(onnx_url, **sampled), tts(onnx_url, **sampled)
    assert first.content == again.content
    assert tts(onnx_url, **{**sampled, "seed": 4}).content != first.content


def test_streaming_sends_the_whole_request_audio_fragment_by_fragment(onnx_url):
    text = "第一句话。" + "第二句话，很长很长。" * 4
    whole = tts(onnx_url, text=text, format="pcm")
    assert whole.status_code == 200, whole.text
    with httpx.stream("POST", f"{onnx_url}/v1/tts", timeout=120, json={
            "voice": EXPORTED, "text": text, "lang": "zh", **GREEDY, "format": "pcm", "stream": True}) as streamed:
        assert streamed.status_code == 200
        chunks = [chunk for chunk in streamed.iter_raw() if chunk]
    assert len(chunks) > 1 and b"".join(chunks) == whole.content  # whole fragments: the same audio


def test_openai_route_and_voice_list_on_the_onnx_app(onnx_url):
    speech = httpx.post(f"{onnx_url}/v1/audio/speech", json={"model": "tts-1", "voice": EXPORTED, "input": TEXT},
                        timeout=120)
    assert speech.status_code == 200 and speech.content[:4] == b"RIFF", speech.text
    listed = [v["voice_id"] for v in httpx.get(f"{onnx_url}/v1/voices").json()["voices"]]
    assert {EXPORTED, STALE, BARE} <= set(listed)


@pytest.mark.parametrize(("voice", "says"), [
    (BARE, f"voice '{BARE}' (version 1) has no ONNX export; export it into the registry: voicefleet export onnx "
           f"{BARE} --storage STORAGE --pretrained PRETRAINED ("),
    (STALE, f"the ONNX export of voice '{STALE}' is stale: it was made from version 1"),
])
def test_a_voice_without_a_current_export_answers_409(onnx_url, storage, voice, says):
    for response in (tts(onnx_url, voice=voice), tts(onnx_url, voice=voice, stream=True, format="pcm")):
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["type"] == "voice_not_exported" and error["message"].startswith(says), error
        assert str(storage) not in error["message"]
    if voice == STALE:
        assert error["message"].split(" (STORAGE")[0].endswith(f"export onnx {STALE} --storage STORAGE "
                                                              "--pretrained PRETRAINED --overwrite")


@pytest.fixture
def replica(onnx_settings, registry):
    """The ONNX replica's own class in this process (no Serve)."""
    from voicefleet.serve.onnx_synthesizer import OnnxVoiceSynthesizer

    replica = OnnxVoiceSynthesizer.func_or_class(onnx_settings)
    yield replica
    replica.pool.shutdown()


@pytest.fixture
def copy_of_export(registry):
    """Voices registered from alpha's files with a copy of the exported voice's folder, its manifest
    made current for them (as their own export would be); removed after the test."""
    made = []

    def make(voice_id: str) -> Path:
        alpha, record = registry.local_files("alpha"), registry.get("alpha")
        registry.register(voice_id, **alpha, prompt_text=record.prompt_text, prompt_lang=record.prompt_lang)
        made.append(voice_id)
        folder = registry.local_dir(voice_id) / ONNX_FOLDER
        shutil.copytree(registry.local_dir(EXPORTED) / ONNX_FOLDER, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["voice"] = {**manifest["voice"], "id": voice_id,
                             "registry": export_stamp(registry.get(voice_id), registry.local_files(voice_id))}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    yield make
    for voice_id in made:
        registry.delete(voice_id)


def test_a_damaged_export_answers_409_and_the_replica_goes_on(replica, copy_of_export):
    folder = copy_of_export("onnx-damaged")
    with open(folder / "sovits_decode.onnx", "ab") as f:  # a graph changed after export
        f.write(b"\0")
    with pytest.raises(RequestFailed) as raised:
        replica._load_voice("onnx-damaged@1")
    failed = raised.value
    assert (failed.status, failed.type) == (409, "voice_not_exported")
    assert failed.message.startswith("the ONNX export of voice 'onnx-damaged' is damaged (sovits_decode.onnx "
                                     "does not match the manifest")
    assert str(folder) not in failed.message and "--overwrite" in failed.message
    assert replica._load_voice(f"{EXPORTED}@1") is not None  # the other voices load


def test_voices_share_the_graphs_of_their_pretrained_parts(replica, copy_of_export):
    """Graphs of the same weights (HuBERT and BERT of one pretrained folder; here, two voices of the
    same weights, every graph) are opened once per replica, each voice with its own reference."""
    copy_of_export("onnx-twin")
    a, b = replica._load_voice(f"{EXPORTED}@1"), replica._load_voice("onnx-twin@1")
    assert a is not b and a.voice.name != b.voice.name
    assert all(a.engine.sessions[graph] is b.engine.sessions[graph] for graph in GRAPHS)


def test_a_v2proplus_voice_answers_409_naming_the_torch_engine(replica, registry, tiny_pretrained_v2proplus,
                                                                reference_wav):
    registry.register("onnx-pro", gpt=tiny_pretrained_v2proplus.gpt, sovits=tiny_pretrained_v2proplus.sovits_g,
                      reference=reference_wav, prompt_text="你好。", prompt_lang="zh")
    try:
        with pytest.raises(RequestFailed) as raised:
            replica._load_voice("onnx-pro@1")
        assert (raised.value.status, raised.value.type) == (409, "voice_not_exported")
        assert "v2ProPlus voice, which the ONNX engine does not serve" in raised.value.message
        assert raised.value.message.endswith("voicefleet serve --engine torch")
    finally:
        registry.delete("onnx-pro")


REPLICA_WITHOUT_TORCH = """
import sys
from voicefleet.serve.onnx_synthesizer import OnnxVoiceSynthesizer
from voicefleet.serve.replica import synthesize_one
from voicefleet.serve.schemas import SynthesisJob
from voicefleet.serve.settings import ServeSettings
from voicefleet.inference.params import SynthesisParams
from voicefleet.serve.errors import RequestFailed

replica = OnnxVoiceSynthesizer.func_or_class(ServeSettings.model_validate_json(sys.argv[1]))
voice = replica._load_voice(sys.argv[2] + "@1")
job = SynthesisJob(text="你好，世界。", lang="zh", fmt="wav", params=SynthesisParams(seed=1, max_tokens=16))
audio = synthesize_one(*replica._engine(voice), job)
assert audio[:4] == b"RIFF" and len(audio) > 32000, len(audio)
try:
    replica._load_voice(sys.argv[3] + "@1")
except RequestFailed as e:
    assert e.status == 409, e
else:
    raise AssertionError("a voice with no export loaded")
replica.pool.shutdown()
"""


def test_the_replica_serves_in_a_process_where_torch_cannot_be_imported(onnx_settings, registry):
    blocker = BLOCK_TORCH.split("from voicefleet.cli.app import app")[0]  # the meta-path finder only
    check = "\nassert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules), 'torch was imported'\n"
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", blocker + REPLICA_WITHOUT_TORCH + check,
                           onnx_settings.model_dump_json(), EXPORTED, BARE],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
