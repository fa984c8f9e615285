"""Registered voices as files for GPT-SoVITS's own weights folders (`voicefleet export`), and the
warning for official-format files of sizes GPT-SoVITS's own code cannot build."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from voicefleet.cli.app import app
from voicefleet.models.builders import sovits_tiny_config, sovits_v2_config
from voicefleet.models.checkpoint import load_official_file
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export
from voicefleet.platform.registry import RegistryError, VoiceNotFound
from voicefleet.platform.training.export import (OFFICIAL_FIXED_SOVITS_SIZES, export_best, official_size_mismatches,
                                                 warn_if_not_official_size)
from voicefleet.platform.training.config import TrainConfig
from voicefleet.platform.training.checkpointing import STATE_FILE
from voicefleet.platform.voices import export_voice, registry_for

runner = CliRunner()
NOT_OFFICIAL = "not of official size"


@pytest.fixture
def storage(tiny_pretrained, reference_wav, tmp_path) -> str:
    """A registry holding voice 'alice' (tiny weights: an exported SoVITS .pth and a GPT .ckpt)."""
    loaded = load_sovits(tiny_pretrained.sovits_g)
    sovits = save_sovits_export(loaded.model, tmp_path / "alice-s2.pth", info="3epoch_12iteration", name="alice-s2")
    root = str(tmp_path / "runs")
    registry_for(root).register("alice", gpt=tiny_pretrained.gpt, sovits=sovits, reference=reference_wav,
                                prompt_text="hello there", prompt_lang="en")
    return root


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Equal weights, the posterior encoder aside (exports do not carry it: it stays random)."""
    theirs = b.state_dict()
    for key, value in a.state_dict().items():
        if not key.startswith("posterior_encoder."):
            assert torch.equal(value, theirs[key]), key


def test_export_writes_named_files_that_load_back(storage, tmp_path):
    out = tmp_path / "GPT-SoVITS"
    exported = export_voice("alice", storage, out)
    assert exported.sovits == out / "SoVITS_weights_v2" / "alice_v1.pth"
    assert exported.gpt == out / "GPT_weights_v2" / "alice_v1.ckpt"
    files = registry_for(storage).local_files("alice")

    sovits, original = load_sovits(exported.sovits), load_sovits(files["sovits"])
    assert not sovits.has_posterior and sovits.config == original.config
    _same_weights(sovits.model, original.model)
    assert sovits.hparams["name"] == "alice" and sovits.info == "3epoch_12iteration"

    gpt, gpt_config, info = load_gpt(exported.gpt)
    original_gpt, original_config, _ = load_gpt(files["gpt"])
    assert gpt_config == original_config and info.layout == "export" and info.dtype == torch.float16
    _same_weights(gpt, original_gpt.half().float())
    assert info.config["train"]["exp_name"] == "alice"
    assert set(load_official_file(exported.gpt)) == {"weight", "config", "info"}


def test_two_voices_share_one_folder(storage, tiny_pretrained, reference_wav, tmp_path):
    files = registry_for(storage).local_files("alice")
    registry_for(storage).register("bob", gpt=files["gpt"], sovits=files["sovits"], reference=reference_wav,
                                   prompt_text="hi", prompt_lang="en")
    out = tmp_path / "weights"
    export_voice("alice", storage, out)
    export_voice("bob", storage, out)
    assert sorted(p.name for p in (out / "SoVITS_weights_v2").iterdir()) == ["alice_v1.pth", "bob_v1.pth"]
    assert sorted(p.name for p in (out / "GPT_weights_v2").iterdir()) == ["alice_v1.ckpt", "bob_v1.ckpt"]


def test_export_refuses_to_overwrite_unless_asked(storage, tmp_path):
    first = export_voice("alice", storage, tmp_path / "w")
    with pytest.raises(FileExistsError, match=r"alice_v1\.pth and .*alice_v1\.ckpt already exist; pass --overwrite"):
        export_voice("alice", storage, tmp_path / "w")
    first.sovits.unlink()
    with pytest.raises(FileExistsError, match=r"alice_v1\.ckpt already exists"):
        export_voice("alice", storage, tmp_path / "w")
    assert not first.sovits.exists()  # nothing written when refusing
    again = export_voice("alice", storage, tmp_path / "w", overwrite=True)
    assert load_sovits(again.sovits).hparams["name"] == load_gpt(again.gpt)[2].config["train"]["exp_name"] == "alice"


def test_unknown_voice_and_version(storage, tmp_path):
    with pytest.raises(VoiceNotFound, match="'carol' is not in the registry"):
        export_voice("carol", storage, tmp_path / "w")
    with pytest.raises(RegistryError, match="has no version 2 .*keeps only the current version, 1"):
        export_voice("alice", storage, tmp_path / "w", version=2)
    assert export_voice("alice", storage, tmp_path / "w", version=1).version == 1
    assert not (tmp_path / "w" / "SoVITS_weights_v2" / "alice_v2.pth").exists()


def test_cli_export_and_its_errors(storage, tmp_path):
    out = tmp_path / "w"
    done = runner.invoke(app, ["export", "alice", "--storage", storage, "--to", str(out)])
    assert done.exit_code == 0, done.output
    assert (out / "SoVITS_weights_v2" / "alice_v1.pth").is_file() and (out / "GPT_weights_v2" / "alice_v1.ckpt").is_file()
    assert NOT_OFFICIAL in done.output  # tiny voice: GPT-SoVITS cannot load it
    for args, message in ((["alice"], "already exist"), (["carol"], "'carol' is not in the registry"),
                          (["alice", "--version", "7", "--overwrite"], "has no version 7")):
        done = runner.invoke(app, ["export", *args, "--storage", storage, "--to", str(out)])
        assert done.exit_code == 2, done.output
        assert message in done.output and "Traceback" not in done.output
        assert done.output.strip().startswith("error:") and len(done.output.strip().splitlines()) == 1


# ---- the official loader's fixed sizes ---------------------------------------------------------

def test_official_sizes_have_no_mismatch_and_tiny_ones_name_the_mrte():
    assert official_size_mismatches(sovits_v2_config()) == []
    assert {name: getattr(sovits_v2_config(), name) for name in OFFICIAL_FIXED_SOVITS_SIZES} == \
        OFFICIAL_FIXED_SOVITS_SIZES
    tiny = official_size_mismatches(sovits_tiny_config())
    assert any(m.startswith("mrte_hidden=") and m.endswith("(official 512)") for m in tiny)
    assert any(m.startswith("hidden_channels=") for m in tiny)


def test_warning_only_for_sizes_the_official_code_cannot_build(caplog):
    with caplog.at_level(logging.WARNING, logger="voicefleet.platform.training.export"):
        warn_if_not_official_size(sovits_v2_config(), "full.pth")
        assert not caplog.records
        warn_if_not_official_size(sovits_tiny_config(), "tiny.pth")
    [record] = caplog.records
    assert "tiny.pth" in record.message and NOT_OFFICIAL in record.message and "mrte_hidden=" in record.message


class _Checkpoint:
    """What `export_best` needs of a Ray checkpoint: `as_directory()`."""

    def __init__(self, folder: Path):
        self.folder = folder

    @contextmanager
    def as_directory(self):
        yield self.folder


def test_export_best_warns_for_a_tiny_sovits_voice(tiny_pretrained, tmp_path, caplog):
    model = load_sovits(tiny_pretrained.sovits_g).model
    (tmp_path / "ckpt").mkdir()
    torch.save({"epoch": 2, "step": 10, "models": {"generator": model.state_dict()}}, tmp_path / "ckpt" / STATE_FILE)
    config = TrainConfig(stage="sovits", run_name="alice-s2")
    with caplog.at_level(logging.WARNING, logger="voicefleet.platform.training.export"):
        path = export_best(config, _Checkpoint(tmp_path / "ckpt"), tiny_pretrained, tmp_path / "out")
    assert path == tmp_path / "out" / "alice-s2.pth" and load_sovits(path).info == "2epoch_10iteration"
    assert any(NOT_OFFICIAL in r.message and str(path) in r.message for r in caplog.records)
