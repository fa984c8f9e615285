"""The command line with v2Pro/v2ProPlus files: inspect, and synthesize from a v2ProPlus pretrained folder."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from voicefleet.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_inspect_names_the_versions(tiny_pretrained_v2proplus):
    paths = tiny_pretrained_v2proplus
    sovits = run("inspect", paths.sovits_g)
    assert sovits.exit_code == 0, sovits.output
    assert "v2ProPlus" in sovits.output and "pretrained (with enc_q)" in sovits.output
    sv = run("inspect", paths.sv)
    assert sv.exit_code == 0, sv.output
    assert "speaker-verification" in sv.output
    disc = run("inspect", paths.sovits_d)
    assert disc.exit_code == 0 and "17, 23" in disc.output


def test_synthesize_from_a_v2proplus_folder(tiny_pretrained_v2proplus, reference_wav, tmp_path):
    out = tmp_path / "pro.wav"
    result = run("synthesize", "--pretrained", tiny_pretrained_v2proplus.root, "--ref-audio", reference_wav,
                 "--phonemes", "HH AH0 L OW1", "--max-tokens", "20", "-o", out, "--seed", "1")
    assert result.exit_code == 0, result.output
    audio, sr = sf.read(out)
    assert sr == 32000 and np.abs(audio).max() > 0


def test_v2_voice_file_with_a_v2pro_folder_still_synthesises(tiny_pretrained, tiny_pretrained_v2proplus,
                                                             reference_wav, tmp_path):
    """--sovits decides the voice's version; a v2 file needs no speaker-verification network."""
    result = run("synthesize", "--pretrained", tiny_pretrained_v2proplus.root, "--ref-audio", reference_wav,
                 "--sovits", tiny_pretrained.sovits_g, "--gpt", tiny_pretrained.gpt, "--phonemes", "HH AH0 L OW1",
                 "--max-tokens", "20", "-o", tmp_path / "v2.wav", "--seed", "1")
    assert result.exit_code == 0, result.output
