"""ONNX export and the onnxruntime engine on the tiny random pretrained set: every graph against the
torch modules it came from, greedy synthesis against the torch path, folder checks, and the engine
in a process where torch cannot be imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from voicefleet.cli.app import app
from voicefleet.inference.generation import LayerDecodingStep, LayerKVCache, sample_next
from voicefleet.inference.onnx_engine import GRAPHS, OnnxFolderError, OnnxSynthesizer, read_manifest
from voicefleet.inference.onnx_export import file_sha256
from voicefleet.inference.onnx_sampling import sample_next as sample_next_np
from voicefleet.inference.params import SamplingParams, SynthesisParams
from voicefleet.inference.pipeline import Synthesizer
from voicefleet.models.audio import mel_spectrogram
from voicefleet.models.gpt import text_audio_mask

runner = CliRunner()
ZH_TEXT = "今天天气很好，我们一起去公园散步吧！明天可能会下雨，记得带伞。"
PROMPT = "这是我的声音。"
# greedy, and no SoVITS noise: the two engines draw from different random streams
GREEDY_PARAMS = dict(top_k=1, max_tokens=24, seed=3, noise_scale=0.0)


def mel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |log-mel difference| of two waveforms of the same length."""
    assert a.shape == b.shape
    return float((mel_spectrogram(torch.from_numpy(a)[None]) - mel_spectrogram(torch.from_numpy(b)[None])).abs().mean())


@pytest.fixture(scope="module")
def onnx_dir(tiny_pretrained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "voice"
    done = runner.invoke(app, ["export", "onnx", "--pretrained", str(tiny_pretrained.root), "-o", str(out)])
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def engine(onnx_dir) -> OnnxSynthesizer:
    return OnnxSynthesizer(onnx_dir, threads=2)


@pytest.fixture(scope="module")
def synth(tiny_pretrained) -> Synthesizer:
    return Synthesizer.from_pretrained(tiny_pretrained)


@pytest.fixture(scope="module")
def torch_voice(synth, tiny_pretrained, reference_wav):
    return synth.load_voice("tiny", tiny_pretrained.gpt, tiny_pretrained.sovits_g, reference_wav, PROMPT, "zh")


def test_manifest_describes_every_graph_and_its_sources(onnx_dir, tiny_pretrained):
    manifest = read_manifest(onnx_dir)
    assert set(manifest["graphs"]) == set(GRAPHS) and manifest["precision"] == "fp32"
    assert manifest["sources"]["gpt"]["sha256"] == file_sha256(tiny_pretrained.gpt)
    assert manifest["sources"]["sovits"]["sha256"] == file_sha256(tiny_pretrained.sovits_g)
    assert manifest["versions"]["onnx_opset"] >= 17 and manifest["versions"]["torch"] == torch.__version__
    step = manifest["graphs"]["gpt_step"]
    assert [i["name"] for i in step["inputs"]] == ["tokens", "position", "key_mask", "past_keys", "past_values"]
    assert [o["name"] for o in step["outputs"]] == ["logits", "keys", "values"]
    # the cache is batchable and grows: named dynamic axes, the fixed ones from the network
    gpt = manifest["gpt"]
    assert step["inputs"][3]["shape"] == [gpt["layers"], "batch", gpt["heads"], "positions", gpt["head_dim"]]
    assert step["outputs"][1]["shape"][3] == "positions_next"


def test_prefill_and_step_graphs_match_the_torch_cache_and_step(engine, torch_voice):
    """Two left-padded rows after a prompt: the ONNX prefill and one step against the torch layers."""
    gpt = torch_voice.gpt
    torch.manual_seed(0)
    rows = [torch.randint(0, gpt.config.phoneme_vocab_size, (n,)) for n in (7, 4)]
    berts = [torch.randn(gpt.config.bert_dim, r.numel()) for r in rows]
    prompt = torch_voice.reference.prompt_tokens[:6].unsqueeze(0).expand(2, -1)
    width = 7
    with torch.inference_mode():
        text = torch.stack([F.pad(gpt.embed_text(r[None], b[None])[0], (0, 0, width - r.numel(), 0))
                            for r, b in zip(rows, berts)])
        text_ok = torch.stack([torch.arange(width) >= width - r.numel() for r in rows])
        key_ok = torch.cat([text_ok, torch.ones(2, 6, dtype=torch.bool)], 1)
        mask = text_audio_mask(width, 6)[None, None] & key_ok[:, None, None, :]
        cache = [LayerKVCache() for _ in gpt.layers]
        hidden = gpt.transform(torch.cat([text, gpt.embed_audio(prompt)], 1), mask, cache)[:, -1]
        logits0 = gpt.head(hidden)
        nxt = logits0.argmax(-1, keepdim=True)
        key_ok = F.pad(key_ok, (0, 1), value=True)
        logits1 = gpt.head(LayerDecodingStep(gpt, cache)(gpt.embed_audio(nxt, 6), key_ok[:, None, None, :]))

    emb = [engine._run("gpt_text", phonemes=r[None].numpy(), bert=b[None].numpy())[0][0] for r, b in zip(rows, berts)]
    np.testing.assert_allclose(np.pad(emb[1], ((3, 0), (0, 0))), text[1].numpy(), atol=1e-5)
    o_logits0, keys, values = engine._run("gpt_prefill", text_embeddings=text.numpy(), text_mask=text_ok.numpy(),
                                          prompt_tokens=prompt.numpy())
    np.testing.assert_allclose(o_logits0, logits0.numpy(), atol=1e-4, rtol=1e-4)
    o_logits1, keys1, values1 = engine._run("gpt_step", tokens=nxt.numpy(), position=np.array([6]),
                                            key_mask=key_ok.numpy(), past_keys=keys, past_values=values)
    np.testing.assert_allclose(o_logits1, logits1.numpy(), atol=1e-4, rtol=1e-4)
    assert keys1.shape[3] == width + 6 + 1
    for layer, layer_cache in enumerate(cache):
        np.testing.assert_allclose(keys1[layer], layer_cache.keys[:, :, :layer_cache.length].numpy(), atol=1e-4)
        np.testing.assert_allclose(values1[layer], layer_cache.values[:, :, :layer_cache.length].numpy(), atol=1e-4)


def test_reference_and_sovits_decode_match_torch(engine, torch_voice, reference_wav):
    voice = engine.load_voice(reference_wav, PROMPT, "zh")
    np.testing.assert_array_equal(voice.prompt_tokens, torch_voice.reference.prompt_tokens.numpy())
    np.testing.assert_allclose(voice.spec, torch_voice.reference.spec.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(voice.prompt.bert, torch_voice.prompt.bert.numpy(), atol=1e-4)
    # the same noise at a changed speed: the prior's resize and the noise path
    sovits = torch_voice.sovits
    codes, phones = voice.prompt_tokens[:15], voice.prompt.phone_ids
    frames = sovits.prior_frames(codes.size, 1.3)
    noise = torch.randn(1, sovits.config.inter_channels, frames, generator=torch.Generator().manual_seed(0))
    expected = sovits.decode(torch.from_numpy(codes).view(1, 1, -1), torch.tensor([phones]),
                             [torch_voice.reference.spec], noise_scale=0.5, speed=1.3, noise=noise)
    (got,) = engine._run("sovits_decode", codes=codes.reshape(1, 1, -1), phonemes=np.array([phones]),
                         refer_spec=voice.spec, noise=noise.numpy(), noise_scale=np.array([0.5], np.float32))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_greedy_synthesis_gives_the_torch_tokens_and_audio(engine, synth, torch_voice, reference_wav, batch_size):
    voice = engine.load_voice(reference_wav, PROMPT, "zh")
    params = SynthesisParams(**GREEDY_PARAMS, batch_size=batch_size)
    units_t = synth.fragments(ZH_TEXT, "zh", params.text_split_method, torch_voice.gpt.config.bert_dim)
    units_o = engine.fragments(ZH_TEXT, "zh", params.text_split_method)
    assert [u.phone_ids for u in units_t] == [u.phone_ids for u in units_o] and len(units_o) >= 3
    indices = list(range(len(units_o)))
    tokens_t = synth.decode_tokens(torch_voice, units_t, indices, [params] * len(indices))
    tokens_o = engine.decode_tokens(voice, units_o, indices, params)
    for t, o in zip(tokens_t, tokens_o):
        np.testing.assert_array_equal(o, t.numpy())
    audio_t = synth.synthesize(torch_voice, ZH_TEXT, "zh", params)
    audio_o = engine.synthesize(voice, ZH_TEXT, "zh", params)
    assert mel_distance(audio_o, audio_t) < 1e-3


def test_prompt_free_voice_matches_torch(engine, synth, tiny_pretrained, reference_wav):
    torch_voice = synth.load_voice("tiny", tiny_pretrained.gpt, tiny_pretrained.sovits_g, reference_wav, "", "zh")
    voice = engine.load_voice(reference_wav, "", "zh")
    assert voice.prompt is None
    params = SynthesisParams(**GREEDY_PARAMS)
    assert mel_distance(engine.synthesize(voice, "你好，世界。", "zh", params),
                        synth.synthesize(torch_voice, "你好，世界。", "zh", params)) < 1e-3


def test_a_seed_reproduces_sampled_onnx_audio(engine, reference_wav):
    voice = engine.load_voice(reference_wav, PROMPT, "zh")
    params = SynthesisParams(max_tokens=20, seed=5, top_p=0.8, temperature=0.9, speed=1.2)
    a = engine.synthesize(voice, ZH_TEXT, "zh", params)
    np.testing.assert_array_equal(a, engine.synthesize(voice, ZH_TEXT, "zh", params))
    b = engine.synthesize(voice, ZH_TEXT, "zh", params.model_copy(update={"seed": 6}))
    assert not (a.shape == b.shape and np.array_equal(a, b))


class _FixedDraws:
    """Stands in for a numpy generator: returns the given exponential draws."""

    def __init__(self, draws: np.ndarray):
        self.draws = draws

    def exponential(self, scale: float, size: int) -> np.ndarray:
        assert size == self.draws.size
        return self.draws


@pytest.mark.parametrize("params", [SamplingParams(), SamplingParams(top_k=5, top_p=0.7, temperature=0.6),
                                    SamplingParams(top_k=None, top_p=0.9, repetition_penalty=1.8),
                                    SamplingParams(top_k=1, temperature=0.0, repetition_penalty=1.0)])
def test_numpy_sampling_follows_the_torch_rules(params, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 50, generator=gen) * 3
    history = torch.randint(0, 50, (3, 12), generator=gen)
    draws = torch.empty(3, 50).exponential_(1, generator=gen)
    monkeypatch.setattr("voicefleet.inference.generation._draw_exponential", lambda shape, like, g: draws)
    tokens, argmax = sample_next(logits, history, params)
    tokens_np, argmax_np = sample_next_np(logits.numpy(), history.numpy(), params,
                                          [_FixedDraws(d) for d in draws.numpy()])
    np.testing.assert_array_equal(tokens_np, tokens.numpy())
    np.testing.assert_array_equal(argmax_np, argmax.numpy())


def _refused(folder: Path, message: str) -> None:
    with pytest.raises(OnnxFolderError, match=message):
        OnnxSynthesizer(folder)


def test_bad_or_mismatched_folders_are_refused(onnx_dir, tmp_path, reference_wav):
    _refused(tmp_path / "absent", "no such folder")
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", "no manifest.json")
    bad = tmp_path / "bad"
    shutil.copytree(onnx_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    (bad / "manifest.json").write_text("{not json")
    _refused(bad, "cannot be read as JSON")
    (bad / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    _refused(bad, "format version 99")
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with open(bad / "gpt_step.onnx", "ab") as f:  # a changed graph file
        f.write(b"\0")
    _refused(bad, "gpt_step.onnx does not match the manifest")
    shutil.copyfile(bad / "gpt_prefill.onnx", bad / "gpt_step.onnx")  # another graph in its place
    _refused(bad, "gpt_step.onnx does not match the manifest")
    (bad / "gpt_step.onnx").unlink()
    _refused(bad, "gpt_step.onnx is missing")
    # the CLI: one line, exit 2, nothing written
    out = tmp_path / "out.wav"
    done = runner.invoke(app, ["synthesize", "--engine", "onnx", "--onnx-dir", str(bad), "--ref-audio",
                               str(reference_wav), "--text", "你好", "-o", str(out)])
    assert done.exit_code == 2 and "gpt_step.onnx is missing" in done.output and "Traceback" not in done.output
    assert len(done.output.strip().splitlines()) == 1 and not out.exists()
    done = runner.invoke(app, ["synthesize", "--engine", "onnx", "--ref-audio", str(reference_wav), "--text", "你好",
                               "-o", str(out)])
    assert done.exit_code == 2 and "needs --onnx-dir" in done.output


def test_export_keeps_an_existing_folder(onnx_dir, tiny_pretrained):
    before = (onnx_dir / "manifest.json").read_bytes()
    done = runner.invoke(app, ["export", "onnx", "--pretrained", str(tiny_pretrained.root), "-o", str(onnx_dir)])
    assert done.exit_code == 2 and "already exists" in done.output
    assert (onnx_dir / "manifest.json").read_bytes() == before


BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")
        return None
sys.meta_path.insert(0, _NoTorch())
from voicefleet.cli.app import app
try:
    app(sys.argv[1:])
finally:
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
"""


@pytest.mark.slow
def test_onnx_engine_synthesises_where_torch_cannot_be_imported(onnx_dir, reference_wav, tmp_path):
    out = tmp_path / "speech.wav"
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "synthesize", "--engine", "onnx", "--onnx-dir",
                           str(onnx_dir), "--ref-audio", str(reference_wav), "--prompt-text", PROMPT, "--text",
                           "你好，世界。hello.", "-o", str(out), "--seed", "1", "--max-tokens", "16"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    import soundfile as sf

    audio, rate = sf.read(out)
    assert rate == 32000 and len(audio) > 32000 * 0.3 and np.isfinite(audio).all()


@pytest.mark.slow
def test_int8_export_quantises_the_gpt_and_bert_and_stays_close(onnx_dir, engine, tiny_pretrained, reference_wav,
                                                                tmp_path):
    out = tmp_path / "int8"
    done = runner.invoke(app, ["export", "onnx", "--pretrained", str(tiny_pretrained.root), "-o", str(out), "--int8"])
    assert done.exit_code == 0, done.output
    manifest = read_manifest(out)
    fp32 = read_manifest(onnx_dir)
    assert manifest["precision"] == "int8"
    for name in GRAPHS:
        quantised = manifest["graphs"][name]["int8"]
        assert quantised == (name in ("gpt_text", "gpt_prefill", "gpt_step", "bert"))
        if quantised:
            assert manifest["graphs"][name]["bytes"] < fp32["graphs"][name]["bytes"]
        else:  # the SoVITS decoder and the audio side are the fp32 graphs
            assert manifest["graphs"][name]["sha256"] == fp32["graphs"][name]["sha256"]
    int8 = OnnxSynthesizer(out, threads=2)
    voice, voice8 = engine.load_voice(reference_wav, PROMPT, "zh"), int8.load_voice(reference_wav, PROMPT, "zh")
    units, units8 = engine.fragments(ZH_TEXT, "zh", "cut5"), int8.fragments(ZH_TEXT, "zh", "cut5")
    ids, bert = engine._gpt_inputs(voice, units[0])
    ids8, bert8 = int8._gpt_inputs(voice8, units8[0])
    assert ids == ids8 and np.corrcoef(bert.ravel(), bert8.ravel())[0, 1] > 0.99
    feeds = []
    for e, b in ((engine, bert), (int8, bert8)):
        (emb,) = e._run("gpt_text", phonemes=np.array([ids]), bert=b[None])
        feeds.append(e._run("gpt_prefill", text_embeddings=emb, text_mask=np.ones(emb.shape[:2], bool),
                            prompt_tokens=voice.prompt_tokens[None])[0])
    assert np.corrcoef(feeds[0].ravel(), feeds[1].ravel())[0, 1] > 0.99
    audio = int8.synthesize(voice8, ZH_TEXT, "zh", SynthesisParams(**GREEDY_PARAMS))
    assert np.isfinite(audio).all() and len(audio) > 0
