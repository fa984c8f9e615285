"""v2Pro / v2ProPlus pretrained folders: the official layout, version choice, and `init-pretrained --version`."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

from voicefleet.cli import app
from voicefleet.models.checkpoint.discriminator_io import load_discriminator
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier
from voicefleet.models.config import PRO_PERIODS
from voicefleet.models.pretrained import PretrainedError, find_pretrained


def test_v2proplus_folder_has_the_official_layout(tiny_pretrained_v2proplus):
    paths = tiny_pretrained_v2proplus
    rel = {name: str(getattr(paths, name).relative_to(paths.root)) for name in ("gpt", "sovits_g", "sovits_d", "sv")}
    assert rel == {"gpt": "s1v3.ckpt", "sovits_g": "v2Pro/s2Gv2ProPlus.pth", "sovits_d": "v2Pro/s2Dv2ProPlus.pth",
                   "sv": "sv/pretrained_eres2netv2w24s4ep4.ckpt"}
    sovits = load_sovits(paths.sovits_g)
    assert sovits.version == "v2ProPlus" and sovits.has_posterior  # detected from the file, no flag
    assert sovits.hparams["version"] == "v2ProPlus"
    verifier = load_speaker_verifier(paths.sv)
    assert sovits.config.sv_embedding_dim == verifier.config.stats_dim  # the tiny chain fits together
    assert load_discriminator(paths.sovits_d).config.periods == PRO_PERIODS
    load_gpt(paths.gpt)


def test_find_pretrained_picks_the_complete_version(tiny_pretrained, tiny_pretrained_v2proplus, tmp_path):
    assert find_pretrained(tiny_pretrained_v2proplus.root).version == "v2ProPlus"
    assert find_pretrained(tiny_pretrained.root).version == "v2"
    both = tmp_path / "both"
    shutil.copytree(tiny_pretrained.root, both)
    for part in ("s1v3.ckpt", "v2Pro", "sv"):
        src = tiny_pretrained_v2proplus.root / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, both / part)
    assert find_pretrained(both).version == "v2"  # the official folder holds all: v2 unless asked
    assert find_pretrained(both, version="v2ProPlus").sovits_g.name == "s2Gv2ProPlus.pth"
    with pytest.raises(PretrainedError, match="incomplete for v2Pro: missing v2Pro/s2Gv2Pro.pth"):
        find_pretrained(both, version="v2Pro")
    (both / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt").unlink()
    with pytest.raises(PretrainedError, match="missing sv/pretrained_eres2netv2w24s4ep4.ckpt"):
        find_pretrained(both, version="v2ProPlus")


def test_init_pretrained_cli_version(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["init-pretrained", "--tiny", "--version", "v2Pro", str(tmp_path / "pro")])
    assert result.exit_code == 0, result.output
    paths = find_pretrained(tmp_path / "pro", need_discriminator=True)
    assert paths.version == "v2Pro" and load_sovits(paths.sovits_g).version == "v2Pro"
    bad = runner.invoke(app, ["init-pretrained", "--tiny", "--version", "v3", str(tmp_path / "v3")])
    assert bad.exit_code != 0 and "--version must be one of v2, v2Pro, v2ProPlus" in bad.output
    assert not (tmp_path / "v3").exists()
