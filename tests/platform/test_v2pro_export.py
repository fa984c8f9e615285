"""A registered v2ProPlus voice exported for GPT-SoVITS: its folders, its version tag, official detection."""

from __future__ import annotations

import json

import pytest

from voicefleet.models.checkpoint import load_official_file
from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export
from voicefleet.models.checkpoint.versions import header_version
from voicefleet.platform.training.api import official_size_mismatches
from voicefleet.models.builders import sovits_v2proplus_config, sovits_v2pro_config
from voicefleet.platform.voices import export_voice, registry_for


@pytest.fixture
def storage(tiny_pretrained_v2proplus, reference_wav, tmp_path) -> str:
    loaded = load_sovits(tiny_pretrained_v2proplus.sovits_g)
    sovits = save_sovits_export(loaded.model, tmp_path / "pro-s2.pth", info="2epoch_8iteration", name="pro-s2")
    root = str(tmp_path / "runs")
    registry_for(root).register("pro", gpt=tiny_pretrained_v2proplus.gpt, sovits=sovits, reference=reference_wav,
                                prompt_text="hello there", prompt_lang="en")
    return root


def test_export_goes_to_the_version_folders_with_the_official_tag(storage, tmp_path, compat_dir):
    out = tmp_path / "GPT-SoVITS"
    exported = export_voice("pro", storage, out)
    assert exported.sovits == out / "SoVITS_weights_v2ProPlus" / "pro_v1.pth"
    assert exported.gpt == out / "GPT_weights_v2ProPlus" / "pro_v1.ckpt"
    head = exported.sovits.read_bytes()[:2]
    formats = compat_dir / "v2pro" / "file_formats.json"
    if formats.is_file():  # the official head2version table says what GPT-SoVITS makes of the file
        table = json.loads(formats.read_text())["version_detection"]["head2version"]
        assert table[head.decode()][1] == "v2ProPlus"
    assert header_version(exported.sovits) == "v2ProPlus"
    raw = load_official_file(exported.sovits)
    assert raw["config"]["version"] == "v2ProPlus" and raw["config"]["model"]["version"] == "v2ProPlus"
    assert raw["config"]["save_weight_dir"] == "SoVITS_weights_v2ProPlus" and raw["config"]["name"] == "pro"
    assert not any(k.startswith("enc_q.") for k in raw["weight"]) and "sv_emb.weight" in raw["weight"]
    again = load_sovits(exported.sovits)
    assert again.version == "v2ProPlus" and again.info == "2epoch_8iteration"
    gpt = load_official_file(exported.gpt)
    assert gpt["config"]["train"]["half_weights_save_dir"] == "GPT_weights_v2ProPlus"


def test_official_sizes_of_v2pro_are_recognised():
    assert official_size_mismatches(sovits_v2pro_config()) == []
    assert official_size_mismatches(sovits_v2proplus_config()) == []
