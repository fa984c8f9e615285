"""v2Pro speaker-verification front end and ERes2NetV2 against the official outputs (compat `v2pro/sv.npz`).

Tolerances: compat v2pro README section 7 (waves and embeddings atol 1e-4 rtol 1e-4; fbank atol
2e-3 rtol 1e-4). Shapes and values come from the fixture folder only, so any fixture set of this
layout runs.
"""

from __future__ import annotations

import json
import math
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from tests.conftest import assert_close, load_npz
from voicefleet.models.builders import speaker_verifier, speaker_verifier_tiny_config
from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier, save_speaker_verifier
from voicefleet.models.config import SpeakerVerifierConfig
from voicefleet.models.speaker import ERes2NetV2
from voicefleet.models.speaker_frontend import (kaldi_fbank, mel_banks, povey_window, resample,
                                                sinc_resample_kernel, speaker_features)

WAVE = dict(atol=1e-4, rtol=1e-4)
FBANK = dict(atol=2e-3, rtol=1e-4)


@pytest.fixture(scope="module")
def sv(v2pro_dir):
    return load_npz(v2pro_dir, "sv.npz")


@pytest.fixture(scope="module")
def sv_configs(v2pro_dir):
    return json.loads((v2pro_dir / "configs.json").read_text())


@pytest.fixture(scope="module")
def tiny_sv(v2pro_dir, sv_configs):
    cfg = sv_configs["sv_config"]
    config = SpeakerVerifierConfig(base_width=cfg["baseWidth"], scale=cfg["scale"], expansion=cfg["expansion"],
                                   m_channels=cfg["m_channels"], num_blocks=tuple(cfg["num_blocks"]),
                                   embedding_size=cfg["embedding_size"])
    return load_speaker_verifier(v2pro_dir / "tiny_sv.pth", config)


def _clips(sv: dict) -> list[str]:
    return sorted(m.group(1) for k in sv if (m := re.fullmatch(r"sv_fbank_(\w+)", k)))


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def test_resample_kernel_equals_torchaudio_default(sv, sv_configs):
    settings = sv_configs["resample_32k_to_16k"]
    kernel, width = sinc_resample_kernel(32000, 16000, settings["lowpass_filter_width"], settings["rolloff"])
    assert width == int(sv["resample_width"])
    assert_close(kernel, sv["resample_kernel"], atol=1e-7, rtol=1e-6, name="resample kernel")


def test_resampled_waves(sv):
    for clip in _clips(sv):
        wave = _t(sv[f"sv_wave32k_{clip}"])
        out = resample(wave, 32000, 16000)
        assert out.shape[-1] == math.ceil(wave.shape[-1] / 2)
        assert_close(out, sv[f"sv_wave16k_{clip}"], **WAVE, name=f"sv_wave16k_{clip}")
    batch = torch.cat([_t(sv["sv_wave32k_a"]), _t(sv["sv_wave32k_c"])])
    assert_close(resample(batch, 32000, 16000), sv["svb_wave16k"], **WAVE, name="svb_wave16k")


def test_fbank_window_and_mel_banks(sv):
    assert_close(povey_window(), sv["fbank_povey_window"], atol=1e-6, rtol=1e-6, name="povey window")
    # float32 arithmetic on another CPU may round the triangle edges differently (about 1e-5)
    assert_close(mel_banks(), sv["fbank_mel_banks"], atol=1e-4, rtol=0, name="mel banks")


def test_fbank_features(sv):
    for clip in _clips(sv):
        feats = speaker_features(_t(sv[f"sv_wave32k_{clip}"]))
        assert_close(feats, sv[f"sv_fbank_{clip}"], **FBANK, name=f"sv_fbank_{clip}")
        direct = kaldi_fbank(_t(sv[f"sv_wave16k_{clip}"])[0])
        assert_close(direct, sv[f"sv_fbank_{clip}"][0], **FBANK, name=f"fbank of sv_wave16k_{clip}")
    batch = torch.stack([kaldi_fbank(row) for row in _t(sv["svb_wave16k"])])
    assert_close(batch, sv["svb_fbank"], **FBANK, name="svb_fbank")


def test_fbank_of_a_too_short_clip_is_empty():
    assert kaldi_fbank(torch.zeros(399)).shape == (0, 80)
    with pytest.raises(ValueError, match="one waveform"):
        kaldi_fbank(torch.zeros(2, 800))


@pytest.mark.slow
def test_full_size_keys_shapes_and_parameters(v2pro_dir):
    manifest = json.loads((v2pro_dir / "keys_sv_eres2netv2.json").read_text(), object_pairs_hook=OrderedDict)
    model = speaker_verifier()
    state = model.state_dict()
    assert list(state) == list(manifest)
    for key, (shape, dtype) in manifest.items():
        assert list(state[key].shape) == shape and str(state[key].dtype).removeprefix("torch.") == dtype, key
    facts = json.loads((v2pro_dir / "file_formats.json").read_text())["sv_checkpoint"]
    assert sum(p.numel() for p in model.parameters()) == facts["parameters"]
    assert model.config.stats_dim == facts["forward3_dim"]


def test_tiny_builder_matches_fixture(tiny_sv):
    assert tiny_sv.config == speaker_verifier_tiny_config()


def test_feature_map_intermediates(tiny_sv, sv):
    names = {"out4": "sv_out4_a", "out3_ds": "sv_out3_ds_a", "fused": "sv_fuse34_a"}
    with torch.no_grad():
        maps = tiny_sv.feature_map(_t(sv["sv_fbank_a"]))
    for ours, theirs in names.items():
        if theirs in sv:
            assert_close(maps[ours], sv[theirs], **WAVE, name=theirs)


def test_embeddings_from_fixture_fbank(tiny_sv, sv):
    with torch.no_grad():
        for clip in _clips(sv):
            feats = _t(sv[f"sv_fbank_{clip}"])
            assert_close(tiny_sv.feature_map_embedding(feats), sv[f"sv_emb3_{clip}"], **WAVE, name=f"sv_emb3_{clip}")
            assert_close(tiny_sv(feats), sv[f"sv_forward_{clip}"], **WAVE, name=f"sv_forward_{clip}")
        assert_close(tiny_sv.feature_map_embedding(_t(sv["svb_fbank"])), sv["svb_emb3"], **WAVE, name="svb_emb3")


def test_embedding_from_32k_audio_end_to_end(tiny_sv, sv):
    """wave 32 kHz -> our resampler -> our fbank -> ERes2NetV2: the official chain, all ours."""
    with torch.no_grad():
        for clip in _clips(sv):
            emb = tiny_sv.feature_map_embedding(speaker_features(_t(sv[f"sv_wave32k_{clip}"])))
            assert_close(emb, sv[f"sv_emb3_{clip}"], **WAVE, name=f"sv_emb3_{clip} from audio")


def test_checkpoint_round_trip_and_errors(tiny_sv, v2pro_dir, tmp_path):
    path = save_speaker_verifier(tiny_sv, tmp_path / "sv.ckpt")
    reference = torch.load(v2pro_dir / "tiny_sv.pth", weights_only=True)
    again = torch.load(path, weights_only=True)
    assert list(again) == list(reference) and all(torch.equal(again[k], reference[k].to(again[k].dtype))
                                                  for k in reference)
    with pytest.raises(Exception, match=r"sv\.ckpt.*shape"):
        load_speaker_verifier(path, SpeakerVerifierConfig())
    with pytest.raises(Exception, match="not a speaker-verification"):
        load_speaker_verifier(v2pro_dir / "tiny_s2D_v2Pro.pth")
    assert isinstance(load_speaker_verifier(path), ERes2NetV2)  # sizes inferred from the file
