"""v2 and v2ProPlus voices side by side: the registry records each voice's model version, the
voice list shows it, and one synthesizer (as a Serve replica builds it) serves both."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from voicefleet.inference.pipeline import SynthesisParams, Synthesizer
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.voices import registry_for
from voicefleet.serve.routers.voices import _info


@pytest.fixture(scope="module")
def both(tiny_pretrained, tiny_pretrained_v2proplus, tmp_path_factory):
    """One pretrained folder holding v2 and v2ProPlus, as the official one holds every version."""
    root = tmp_path_factory.mktemp("both") / "pretrained_models"
    shutil.copytree(tiny_pretrained.root, root)
    for part in ("s1v3.ckpt", "v2Pro", "sv"):
        src = tiny_pretrained_v2proplus.root / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / part)
    return root


@pytest.fixture(scope="module")
def registry(both, reference_wav, tmp_path_factory):
    reg = registry_for(str(tmp_path_factory.mktemp("runs")))
    for voice_id, version in (("plain", "v2"), ("pro", "v2ProPlus")):
        paths = find_pretrained(both, version=version)
        reg.register(voice_id, gpt=paths.gpt, sovits=paths.sovits_g, reference=reference_wav, prompt_text="你好。",
                     prompt_lang="zh")
    return reg


def test_registry_and_voice_list_show_each_model_version(registry, tmp_path):
    assert {r.voice_id: r.model_version for r in registry.list()} == {"plain": "v2", "pro": "v2ProPlus"}
    assert _info(registry.get("pro")).model_version == "v2ProPlus"
    not_a_model = tmp_path / "x.pth"
    not_a_model.write_bytes(b"not a checkpoint")
    record = registry.register("odd", gpt=not_a_model, sovits=not_a_model, reference=not_a_model, prompt_text="",
                               prompt_lang="zh")
    assert record.model_version is None and _info(record).model_version is None


def test_one_synthesizer_serves_v2_and_v2proplus_voices(both, registry):
    synth = Synthesizer.from_pretrained(find_pretrained(both))  # what a replica builds: the folder's default
    params = SynthesisParams(seed=2, max_tokens=16)
    for voice_id, version in (("plain", "v2"), ("pro", "v2ProPlus")):
        record, files = registry.get(voice_id), registry.local_files(voice_id)
        voice = synth.load_voice(voice_id, files["gpt"], files["sovits"], files["reference"], record.prompt_text,
                                 record.prompt_lang)
        assert voice.sovits.config.version == version and (voice.reference.sv is not None) == (version != "v2")
        audio = synth.synthesize(voice, "你好。", "zh", params)
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
