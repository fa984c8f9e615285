"""The `voicefleet` command as a user runs it: results on disk, one-line errors, exit codes."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from voicefleet.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _synth(pretrained, ref, out, *extra):
    return run("synthesize", "--pretrained", pretrained.root, "--ref-audio", ref,
               "--phonemes", "HH AH0 L OW1 | w o3", "--max-tokens", "30", "-o", out, *extra)


def test_synthesize_writes_32k_audio_reproducibly(tiny_pretrained, reference_wav, tmp_path):
    first = _synth(tiny_pretrained, reference_wav, tmp_path / "a.wav", "--seed", "3")
    assert first.exit_code == 0, first.output
    second = _synth(tiny_pretrained, reference_wav, tmp_path / "b.wav", "--seed", "3")
    other = _synth(tiny_pretrained, reference_wav, tmp_path / "c.wav", "--seed", "4")
    assert second.exit_code == 0 and other.exit_code == 0
    a, sr = sf.read(tmp_path / "a.wav")
    b, _ = sf.read(tmp_path / "b.wav")
    c, _ = sf.read(tmp_path / "c.wav")
    assert sr == 32000
    # two fragments of at most 30 tokens (25 Hz -> 1280 samples each) plus 0.3 s silence after each
    assert 2 * 0.3 * sr < len(a) <= 2 * (30 * 1280 + 0.3 * sr)
    assert np.abs(a).max() > 0.01
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) if len(a) == len(c) else True


@pytest.mark.parametrize("fmt", ["flac", "ogg", "pcm"])
def test_synthesize_other_formats(tiny_pretrained, reference_wav, tmp_path, fmt):
    out = tmp_path / f"x.{fmt}"
    result = _synth(tiny_pretrained, reference_wav, out, "--seed", "1")
    assert result.exit_code == 0, result.output
    if fmt == "pcm":
        assert out.stat().st_size % 2 == 0 and out.stat().st_size > 0
    else:
        _, sr = sf.read(out)
        assert sr == 32000


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert lines[-1].startswith("error:"), result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_short_and_long_reference_clips_fail_clearly(tiny_pretrained, tmp_path):
    for seconds in (1, 30):
        ref = tmp_path / f"ref{seconds}.wav"
        sf.write(ref, np.sin(np.arange(seconds * 16000) / 10).astype(np.float32) * 0.3, 16000)
        _one_line_error(_synth(tiny_pretrained, ref, tmp_path / "o.wav"), "between 3 and 10 s")


def test_not_audio_missing_pretrained_and_bad_phonemes(tiny_pretrained, reference_wav, tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_text("this is not audio")
    _one_line_error(_synth(tiny_pretrained, junk, tmp_path / "o.wav"), "junk.wav")
    result = run("synthesize", "--pretrained", tmp_path / "nowhere", "--ref-audio", reference_wav,
                 "--phonemes", "a1", "-o", tmp_path / "o.wav")
    _one_line_error(result, "does not exist")
    result = run("synthesize", "--pretrained", tiny_pretrained.root, "--ref-audio", reference_wav,
                 "--phonemes", "a1 qq7", "-o", tmp_path / "o.wav")
    _one_line_error(result, "qq7")
    result = run("synthesize", "--pretrained", tiny_pretrained.root, "--ref-audio", reference_wav,
                 "--phonemes", " | ", "-o", tmp_path / "o.wav")
    _one_line_error(result, "nothing to synthesise")


def test_existing_output_is_not_overwritten(tiny_pretrained, reference_wav, tmp_path):
    out = tmp_path / "keep.wav"
    out.write_bytes(b"precious")
    _one_line_error(_synth(tiny_pretrained, reference_wav, out), "already exists")
    assert out.read_bytes() == b"precious"


def test_init_pretrained_refuses_to_overwrite(tmp_path):
    target = tmp_path / "pt"
    target.mkdir()
    (target / "mine.txt").write_text("keep")
    _one_line_error(run("init-pretrained", "--tiny", target), "not empty")
    assert (target / "mine.txt").read_text() == "keep"
    _one_line_error(run("init-pretrained", target), "--tiny or --full")


def test_inspect_reports_each_kind(tiny_pretrained, compat_dir):
    for path, kind in [(tiny_pretrained.gpt, "gpt"), (tiny_pretrained.sovits_g, "sovits"),
                       (tiny_pretrained.sovits_d, "discriminator"), (compat_dir / "tiny_s2G_export.pth", "sovits")]:
        result = run("inspect", path)
        assert result.exit_code == 0, result.output
        assert kind in result.output


def test_inspect_rejects_a_non_checkpoint(tmp_path):
    bogus = tmp_path / "weights.pth"
    bogus.write_bytes(b"PK\x03\x04garbage")
    _one_line_error(run("inspect", bogus), "weights.pth")


def _synth_text(pretrained, ref, out, text, lang, *extra):
    return run("synthesize", "--pretrained", pretrained.root, "--ref-audio", ref, "--prompt-text", "这是我的声音。",
               "--text", text, "--lang", lang, "--max-tokens", "20", "-o", out, *extra)


def test_synthesize_text_in_every_language(tiny_pretrained, reference_wav, tmp_path):
    for i, (text, lang) in enumerate([("今天天气很好，我们去散步吧。", "zh"), ("Hello there, how are you?", "en"),
                                      ("我们用 Python 写代码。", "zh"), ("今日はいい天気ですね。", "ja"),
                                      ("안녕하세요, 만나서 반갑습니다.", "ko"), ("我哋今日去飲茶。", "yue")]):
        out = tmp_path / f"t{i}.wav"
        result = _synth_text(tiny_pretrained, reference_wav, out, text, lang, "--seed", "1", "--batch-size", "2")
        assert result.exit_code == 0, result.output
        audio, sr = sf.read(out)
        assert sr == 32000 and len(audio) > 0.3 * sr


def test_text_errors_are_one_line(tiny_pretrained, reference_wav, tmp_path):
    out = tmp_path / "o.wav"
    _one_line_error(_synth_text(tiny_pretrained, reference_wav, out, "   ", "zh"), "--text is empty")
    _one_line_error(_synth_text(tiny_pretrained, reference_wav, out, "こんにちは", "jp"), "--lang", "'jp'", "all_ja")
    _one_line_error(_synth_text(tiny_pretrained, reference_wav, out, "안녕하세요.", "all_yue"),
                    "no phonemes in '안녕하세요.' with language 'all_yue'")
    _one_line_error(_synth_text(tiny_pretrained, reference_wav, out, "你好", "zh", "--phonemes", "a1"),
                    "exactly one of --text or --phonemes")
    _one_line_error(_synth_text(tiny_pretrained, reference_wav, out, "你好啊朋友们。", "zh",
                                "--text-split-method", "cut9"), "cut9")
    result = run("synthesize", "--pretrained", tiny_pretrained.root, "--ref-audio", reference_wav,
                 "--text", "你好", "-o", out, "--gpt", tmp_path / "missing.ckpt")
    _one_line_error(result, "missing.ckpt", "not found")
    assert not out.exists()


def test_the_command_line_loads_without_torch_or_ray():
    """`voicefleet --help` and option parsing read config defaults only: importing the CLI must not
    pull in torch or Ray (seconds of start-up on every command)."""
    import subprocess
    import sys

    code = "import sys, voicefleet.cli; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"importing voicefleet.cli imported {out.strip()}"


def test_phonemes_prints_what_synthesis_reads(tiny_pretrained):
    import json

    from voicefleet.inference.pipeline import Synthesizer

    text = "今日はいい天気ですね。Hello there!"
    result = run("phonemes", text, "--lang", "ja")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["lang"] == "ja" and report["text"] == text and len(report["phones"]) == len(report["phone_ids"])
    units = Synthesizer.from_pretrained(tiny_pretrained).fragments(text, "ja", "cut5", 1024)
    assert report["phone_ids"] == [i for u in units for i in u.phone_ids]  # exactly what is decoded
    assert [f["norm_text"] for f in report["fragments"]] == [u.norm_text for u in units]


def test_phonemes_batch_writes_one_object_per_line(tmp_path):
    import json

    lines = tmp_path / "lines.jsonl"
    lines.write_text('{"text": "你好，世界。"}\n\n{"text": "안녕하세요.", "lang": "ko"}\n'
                     '{"text": "我哋去飲茶。", "lang": "yue"}\n{"text": "Good morning.", "lang": "en"}\n', encoding="utf-8")
    result = run("phonemes", "--batch", lines, "--lang", "zh")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["line"], o["lang"]) for o in objects] == [(1, "zh"), (3, "ko"), (4, "yue"), (5, "en")]
    assert all(o["phone_ids"] for o in objects)
    lines.write_text('{"text": "你好。"}\nnot json\n{"text": "Hi there.", "lang": "fr"}\n', encoding="utf-8")
    result = run("phonemes", "--batch", lines)
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["line"] for o in objects] == [1, 2, 3] and "phones" in objects[0]
    assert "not a JSON line" in objects[1]["error"] and "unsupported language 'fr'" in objects[2]["error"]
    _one_line_error(result, "2 of 3 lines")


def test_phonemes_errors_are_one_line(tmp_path):
    _one_line_error(run("phonemes"), "exactly one of TEXT or --batch")
    _one_line_error(run("phonemes", "你好", "--lang", "jp"), "--lang", "'jp'", "all_yue")
    _one_line_error(run("phonemes", "안녕하세요.", "--lang", "all_yue"), "no phonemes in")
    _one_line_error(run("phonemes", "--batch", tmp_path / "missing.jsonl"), "missing.jsonl")
    _one_line_error(run("phonemes", "你好", "--g2pw-model", tmp_path), "--pretrained")


def test_serve_metrics_port_is_for_the_local_ray_only(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _one_line_error(run("serve", "--metrics-port", "8080", "--address", "auto"), "--metrics-port",
                    "--metrics-export-port")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    _one_line_error(run("serve", "--metrics-port", "8080"), "--metrics-port")
