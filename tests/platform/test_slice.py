"""`voicefleet slice`: long recordings -> 3-10 s clips cut at pauses, plus a list-file skeleton."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from voicefleet.models.audio import load_audio
from voicefleet.platform.data import slicer
from voicefleet.platform.data.listfile import read_list_file
from voicefleet.platform.data.slicer import SliceSettings, plan_clips, slice_recordings
from voicefleet.platform.data.synthetic import voice_like

from .conftest import cli_app, tree_digest

runner = CliRunner()


@pytest.fixture
def recording(tmp_path):
    """45 s of voice-like speech with a 2 s silence inside, 44.1 kHz stereo (as a phone records it)."""
    x = voice_like(45.0, 44100, seed=3)
    x = np.concatenate([x[: 10 * 44100], np.zeros(2 * 44100, np.float32), x[10 * 44100:]])
    path = tmp_path / "input" / "long take.wav"
    path.parent.mkdir()
    sf.write(path, np.stack([x, 0.9 * x], axis=1), 44100)
    return path


def _check_clips(result, source, settings=SliceSettings()):
    original = load_audio(source, 32000)
    assert result.clips
    for clip in result.clips:
        assert settings.min_s - 1e-3 <= clip.duration_s <= settings.max_s + 1e-3
        audio, sr = sf.read(clip.path, dtype="float32")
        assert sr == 32000 and audio.ndim == 1
        start = int(round(clip.start_s * 32000))
        np.testing.assert_allclose(audio, original[start:start + len(audio)], atol=1.5 / 32768)  # cut, not changed
    spans = sorted((c.start_s, c.end_s) for c in result.clips)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no overlap


def test_energy_slicing_cuts_at_pauses_into_bounded_clips(recording, tmp_path):
    digest = tree_digest(recording.parent)
    result = slice_recordings([recording], tmp_path / "clips", method="energy", speaker="alice", lang="zh")
    assert result.method == "energy"
    _check_clips(result, recording)
    covered = sum(c.duration_s for c in result.clips)
    assert covered > 0.85 * 45.0  # nearly all speech is kept (the 2 s silence is not)
    lines = result.list_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(result.clips)
    assert all(line.endswith("|alice|zh|") for line in lines)
    assert lines[0].startswith("long take_0000000000_")
    listing = read_list_file(str(result.list_path))  # the skeleton is a valid list file
    assert [e.audio for e in listing.entries] == [str(c.path) for c in result.clips]
    assert tree_digest(recording.parent) == digest


def test_vad_slicing_uses_silero_from_its_wheel(recording, tmp_path):
    pytest.importorskip("silero_vad", reason="silero-vad is an optional dependency (energy fallback otherwise)")
    result = slice_recordings([recording], tmp_path / "clips", method="vad")
    assert result.method == "vad"
    _check_clips(result, recording)
    assert sum(c.duration_s for c in result.clips) > 0.5 * 45.0


def test_vad_falls_back_to_energy_without_silero(recording, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(slicer, "load_vad", lambda: None)
    result = slice_recordings([recording], tmp_path / "clips", method="vad")
    assert result.method == "energy" and result.clips


def test_load_vad_reports_a_missing_package(monkeypatch, caplog):
    import builtins

    real_import = builtins.__import__

    def no_silero(name, *args, **kwargs):
        if name.startswith("silero_vad"):
            raise ImportError("No module named 'silero_vad'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_silero)
    with caplog.at_level("WARNING"):
        assert slicer.load_vad() is None
    assert "energy detector" in caplog.text


def test_plan_joins_short_runs_splits_long_ones_and_drops_what_fits_nowhere():
    rate = slicer.VAD_RATE
    s = lambda a, b: (int(a * rate), int(b * rate))  # noqa: E731
    settings = SliceSettings(min_s=3.0, max_s=10.0, pad_s=0.0)
    # five 1.5 s words with 0.5 s pauses -> one 9.5 s clip; then a lone 0.8 s word 20 s later -> dropped
    runs = [s(2 * i, 2 * i + 1.5) for i in range(5)] + [s(30.0, 30.8)]
    clips, dropped = plan_clips(runs, int(40 * rate), settings)
    assert clips == [s(0.0, 9.5)] and dropped == [s(30.0, 30.8)]
    # one 25 s run without pauses -> split into pieces of 3..10 s
    clips, dropped = plan_clips([s(0, 25)], int(25 * rate), settings)
    lengths = [(e - b) / rate for b, e in clips]
    assert not dropped and sum(lengths) == pytest.approx(25.0) and all(3.0 <= x <= 10.0 for x in lengths)
    # pauses shorter than min_pause_s are not cut points
    clips, _ = plan_clips([s(0, 2), s(2.1, 4)], int(5 * rate), settings)
    assert clips == [s(0, 4)]


def test_slice_cli_writes_a_skeleton_that_prepare_rejects_as_untranscribed(recording, tiny_pretrained, tmp_path):
    out = tmp_path / "clips"
    result = runner.invoke(cli_app(), ["slice", str(recording), "--out", str(out), "--method", "energy",
                                       "--speaker", "alice", "--lang", "en"])
    assert result.exit_code == 0, result.output
    assert "clips" in result.output and (out / "slices.list").is_file()
    n = len((out / "slices.list").read_text().splitlines())
    # every text is empty: prepare rejects them all without decoding anything (no Ray run needed)
    prepared = runner.invoke(cli_app(), ["prepare", str(out / "slices.list"), "--pretrained",
                                         str(tiny_pretrained.root), "--out", str(tmp_path / "dataset")])
    assert prepared.exit_code == 0, prepared.output
    assert f"rejected: empty_transcript" in prepared.output and str(n) in prepared.output
    again = runner.invoke(cli_app(), ["slice", str(recording), "--out", str(out), "--method", "energy"])
    assert again.exit_code == 2 and "not empty" in again.output and "Traceback" not in again.output
    bad = runner.invoke(cli_app(), ["slice", str(recording), "--out", str(tmp_path / "x"), "--method", "magic"])
    assert bad.exit_code == 2 and "--method" in bad.output


def test_slice_refuses_an_output_folder_holding_the_input(recording):
    with pytest.raises(FileExistsError, match="contains the input"):
        slice_recordings([recording], recording.parent.parent, method="energy", overwrite=True)
    with pytest.raises(ValueError, match="language .fr. is not one voicefleet prepares"):
        slice_recordings([recording], recording.parent.parent / "x", lang="fr")
