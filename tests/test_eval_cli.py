"""`voicefleet eval` as a user runs it: a report on disk, a summary table, one-line errors (exit 2)."""

from __future__ import annotations

import json
import sys

import pytest
import soundfile as sf
from typer.testing import CliRunner

pytest.importorskip("resemblyzer", reason="the evaluation instruments are the voicefleet[eval] extra")

from voicefleet.cli import app  # noqa: E402
from voicefleet.platform.data.synthetic import voice_like  # noqa: E402
from voicefleet.platform.evaluation import instruments  # noqa: E402
from voicefleet.platform.voices import registry_for  # noqa: E402

runner = CliRunner()
TEXTS = ("Hello there, how are you today?", "Please call me back tomorrow.")


def run(*args):
    return runner.invoke(app, ["eval", *map(str, args)])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error:"), result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two voice-like clips with English lines, a reference clip, and a list file."""
    root = tmp_path_factory.mktemp("evalcli")
    for i in range(2):
        sf.write(root / f"c{i}.wav", voice_like(1.5, 32000, seed=i, f0=120), 32000)
    sf.write(root / "ref.wav", voice_like(4.0, 32000, seed=7, f0=120), 32000)
    (root / "en.list").write_text("".join(f"c{i}.wav|a|en|{t}\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def storage(tiny_pretrained, data, tmp_path_factory):
    storage = tmp_path_factory.mktemp("runs")
    registry_for(str(storage)).register("tiny", gpt=tiny_pretrained.gpt, sovits=tiny_pretrained.sovits_g,
                                        reference=data / "ref.wav", prompt_text=TEXTS[0], prompt_lang="en")
    return storage


def test_voice_mode_on_a_registry_voice(tiny_pretrained, storage, data, tmp_path):
    out = tmp_path / "eval"
    result = run(data / "en.list", "--out", out, "--voice", "tiny", "--storage", storage,
                 "--pretrained", tiny_pretrained.root)
    assert result.exit_code == 0, result.output
    assert "evaluation (voice mode)" in result.output and "speaker similarity" in result.output
    report = json.loads((out / "eval.json").read_text())
    assert report["summary"]["n"] == 2 and report["config"]["voice_id"] == "tiny"
    assert report["config"]["prompt_text"] == TEXTS[0]
    assert (out / "audio" / "0001.wav").is_file() and (out / "report.md").is_file()
    recorded = registry_for(str(storage)).get("tiny").evaluation  # what GET /v1/voices shows
    assert recorded["summary"] == report["summary"] and recorded["report"] == str(out.resolve())
    again = run(data / "en.list", "--out", out, "--voice", "tiny", "--storage", storage,
                "--pretrained", tiny_pretrained.root)
    one_line_error(again, "already exists", "--overwrite")


def test_audio_mode_with_chosen_metrics(data, tmp_path):
    out = tmp_path / "eval"
    result = run(data / "en.list", "--out", out, "--against", data / "ref.wav", "--metrics", "similarity,dnsmos")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "eval.json").read_text())["summary"]
    assert summary["mode"] == "audio" and summary["wer"] is None and summary["rtf"] is None
    assert 1 <= summary["dnsmos_ovrl"] <= 5 and summary["speaker_similarity"] > 0


def test_bad_input_is_one_line_and_exit_2(tiny_pretrained, storage, data, tmp_path):
    against = ("--against", data / "ref.wav")
    (tmp_path / "missing.list").write_text("nowhere.wav|a|en|hi\n", encoding="utf-8")
    one_line_error(run(tmp_path / "missing.list", "--out", tmp_path / "o1", *against), "nowhere.wav", "not found")
    (tmp_path / "empty.list").write_text("\n", encoding="utf-8")
    one_line_error(run(tmp_path / "empty.list", "--out", tmp_path / "o2", *against), "no rows")
    one_line_error(run(tmp_path / "absent.list", "--out", tmp_path / "o3", *against), "list file not found")
    one_line_error(run(data / "en.list", "--out", tmp_path / "o4", "--voice", "nobody", "--storage", storage,
                       "--pretrained", tiny_pretrained.root), "'nobody'", "not in the registry")
    (tmp_path / "zh.list").write_text(f"{data / 'c0.wav'}|a|zh|你好\n", encoding="utf-8")
    one_line_error(run(tmp_path / "zh.list", "--out", tmp_path / "o5", *against, "--metrics", "wer"),
                   "no speech recogniser for language 'zh'", "--asr-model")
    one_line_error(run(data / "en.list", "--out", tmp_path / "o6"), "choose voice mode")
    one_line_error(run(data / "en.list", "--out", tmp_path / "o7", "--voice", "tiny", "--storage", storage),
                   "needs --pretrained")
    one_line_error(run(data / "en.list", "--out", tmp_path / "o8", *against, "--metrics", "mos"), "unknown metric")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 9))


def test_a_missing_instrument_names_the_extra(data, tmp_path, monkeypatch):
    monkeypatch.setattr(instruments, "_loaded", {})
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    result = run(data / "en.list", "--out", tmp_path / "o", "--against", data / "ref.wav", "--metrics", "similarity")
    one_line_error(result, "resemblyzer", "pip install 'voicefleet[eval]'")
