"""v2Pro / v2ProPlus SoVITS against the official outputs (compat `v2pro/s2_v2pro*.npz`).

Every expected value and size is read from the fixture folder (compat v2pro README sections 3-7),
so the same tests run against any fixture set of that layout. Both versions run every test.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import OrderedDict

import numpy as np
import pytest
import torch

from tests.conftest import assert_close, load_npz
from voicefleet.models.audio import mel_spectrogram, spec_to_mel
from voicefleet.models.builders import SOVITS_CONFIGS
from voicefleet.models.checkpoint import load_official_file
from voicefleet.models.checkpoint.discriminator_io import load_discriminator
from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export, sovits_state_to_official
from voicefleet.models.checkpoint.versions import header_version
from voicefleet.models.config import AudioConfig
from voicefleet.models.losses import discriminator_loss, feature_loss, generator_loss, kl_loss, mel_l1
from voicefleet.models.sovits import SoVITS

WAVE = dict(atol=1e-4, rtol=1e-4)  # compat v2pro README section 7
LOSS = dict(atol=0.0, rtol=1e-4)
VERSIONS = {"v2Pro": ("s2_v2pro.npz", "tiny_s2G_v2Pro_export.pth"),
            "v2ProPlus": ("s2_v2proplus.npz", "tiny_s2G_v2ProPlus_export.pth")}


def _t(a) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.fixture(scope="module")
def configs(v2pro_dir):
    return json.loads((v2pro_dir / "configs.json").read_text())


@pytest.fixture(scope="module", params=list(VERSIONS))
def case(request, v2pro_dir):
    """(version, arrays, model loaded from the official export with enc_q from the full tiny file)."""
    version = request.param
    arrays_name, export_name = VERSIONS[version]
    loaded = load_sovits(v2pro_dir / export_name)
    full = load_sovits(v2pro_dir / "tiny_s2G_v2Pro.pth")  # enc_q is shared by construction (README 4.4)
    loaded.model.posterior_encoder.load_state_dict(full.model.posterior_encoder.state_dict())
    return version, load_npz(v2pro_dir, arrays_name), loaded


def _manifest(v2pro_dir, name):
    return json.loads((v2pro_dir / name).read_text(), object_pairs_hook=OrderedDict)


@pytest.mark.slow
@pytest.mark.parametrize("version", list(VERSIONS))
def test_full_size_keys_shapes_and_counts(v2pro_dir, version, tmp_path):
    model = SoVITS(SOVITS_CONFIGS["full", version]())
    ours = {k: list(v.shape) for k, v in sovits_state_to_official(model.state_dict(), model.config).items()}
    manifest = _manifest(v2pro_dir, f"keys_s2G_{version}_pretrained.json")
    assert list(ours) == list(manifest)
    assert all(ours[k] == shape for k, (shape, _) in manifest.items())
    counts = json.loads((v2pro_dir / "file_formats.json").read_text())["parameter_counts"][f"s2G_{version}"]
    assert sum(p.numel() for p in model.parameters()) == counts["parameters"]
    path = save_sovits_export(model, tmp_path / "voice.pth")
    weight = load_official_file(path)["weight"]
    export = _manifest(v2pro_dir, f"keys_s2G_{version}_export.json")
    assert list(weight) == list(export)
    for key, (shape, dtype) in export.items():
        assert list(weight[key].shape) == shape and str(weight[key].dtype).removeprefix("torch.") == dtype, key
    assert sum(v.numel() for v in weight.values()) == counts["export_elements"]
    assert header_version(path) == version


def test_tiny_files_are_detected_from_the_files(v2pro_dir, configs):
    facts = json.loads((v2pro_dir / "file_formats.json").read_text())["tiny_files"]
    for name in ("tiny_s2G_v2Pro_export.pth", "tiny_s2G_v2ProPlus_export.pth"):
        assert header_version(v2pro_dir / name) == facts[name]["get_sovits_version_from_path_fast"][1]
    # a PK-headed v2Pro file: the official size rule misreads it; its keys and config do not
    loaded = load_sovits(v2pro_dir / "tiny_s2G_v2Pro.pth")
    assert loaded.version == configs["s2_config_v2Pro"]["model"]["version"] and loaded.has_posterior


def test_tiny_configs_match_the_builders(case, configs):
    version, _, loaded = case
    model_cfg = configs[f"s2_config_{version}"]["model"]
    assert loaded.version == version
    assert loaded.config.gin_channels == model_cfg["gin_channels"]
    assert loaded.config.upsample_initial_channel == model_cfg["upsample_initial_channel"]
    assert loaded.config.mrte_hidden == configs["ge_to512_override"]["out_features"]
    assert dataclasses.replace(loaded.config, audio=AudioConfig()) == SOVITS_CONFIGS["tiny", version]()


def test_extract_latent(case):
    _, s2, loaded = case
    assert_close(loaded.model.ssl_proj(_t(s2["el_ssl"])).detach(), s2["el_ssl_proj"], **WAVE, name="el_ssl_proj")
    np.testing.assert_array_equal(loaded.model.extract_latent(_t(s2["el_ssl"])).numpy(), s2["el_codes"])


def test_style_mixing_and_decode_intermediates(case):
    _, s2, loaded = case
    model = loaded.model
    with torch.no_grad():
        ge_ref = model.style(_t(s2["dec_refer"]))
        assert_close(ge_ref, s2["dec_ge_ref"], **WAVE, name="dec_ge_ref")
        assert_close(model.speaker_projection(_t(s2["dec_sv_emb"])), s2["dec_sv_proj"], **WAVE, name="dec_sv_proj")
        ge = model.global_style(_t(s2["dec_refer"]), sv=_t(s2["dec_sv_emb"]))
        assert_close(ge, s2["dec_ge"], **WAVE, name="dec_ge")
        ge512 = model.mrte_style(ge)
        assert_close(ge512, s2["dec_ge512"], **WAVE, name="dec_ge512")
        quantized = model.quantizer.decode(_t(s2["dec_codes"]))
        assert_close(quantized, s2["dec_quantized"], **WAVE, name="dec_quantized")
        up = torch.nn.functional.interpolate(quantized, size=quantized.shape[-1] * 2, mode="nearest")
        text = _t(s2["dec_text"])
        prior = model.text_encoder(up, torch.tensor([up.shape[-1]]), text, torch.tensor([text.shape[-1]]), ge512)
        assert_close(prior.hidden, s2["dec_enc_p_x"], **WAVE, name="dec_enc_p_x")
        assert_close(prior.mean, s2["dec_m_p"], **WAVE, name="dec_m_p")
        assert_close(prior.log_std, s2["dec_logs_p"], **WAVE, name="dec_logs_p")
        np.testing.assert_array_equal(prior.mask.numpy(), s2["dec_y_mask"])
        assert_close(model.flow(prior.mean, prior.mask, g=ge, reverse=True), s2["dec_z"], **WAVE, name="dec_z")


def test_decode_outputs(case):
    _, s2, loaded = case
    model, codes, text = loaded.model, _t(s2["dec_codes"]), _t(s2["dec_text"])
    refer, sv = _t(s2["dec_refer"]), _t(s2["dec_sv_emb"])
    assert_close(model.decode(codes, text, [refer], noise_scale=0.0, sv=[sv]), s2["dec_out"], **WAVE, name="dec_out")
    assert_close(model.decode(codes, text, refer, noise_scale=0.0, sv=sv), s2["dec_out"], **WAVE, name="tensor form")
    assert_close(model.decode(codes, text, [refer], noise_scale=0.0, speed=1.25, sv=[sv]), s2["dec_speed_out"],
                 **WAVE, name="dec_speed_out")
    noisy = model.decode(codes, text, [refer], noise_scale=0.5, sv=[sv], noise=_t(s2["dec_noise_eps"]))
    assert_close(noisy, s2["dec_noise_out"], **WAVE, name="dec_noise_out")
    with pytest.raises(ValueError, match="speaker-verification"):
        model.decode(codes, text, [refer], noise_scale=0.0)


def test_multi_reference_averages_after_prelu(case):
    _, s2, loaded = case
    model = loaded.model
    refers, svs = [_t(s2["dec_refer"]), _t(s2["dec_refer2"])], [_t(s2["dec_sv_emb"]), _t(s2["dec_sv_emb2"])]
    with torch.no_grad():
        each = torch.cat([model.global_style(r, sv=s) for r, s in zip(refers, svs)])
        assert_close(each, s2["dec_multiref_ge_each"], **WAVE, name="dec_multiref_ge_each")
        assert_close(model.mrte_style(model.reference_style(refers, svs)), s2["dec_multiref_ge512"], **WAVE,
                     name="dec_multiref_ge512")
    out = model.decode(_t(s2["dec_codes"]), _t(s2["dec_text"]), refers, noise_scale=0.0, sv=svs)
    assert_close(out, s2["dec_multiref_out"], **WAVE, name="dec_multiref_out")


def test_training_forward_and_losses(case, configs, v2pro_dir):
    version, s2, loaded = case
    model = loaded.model.eval()
    with torch.no_grad():
        out = model(_t(s2["tr_ssl"]), _t(s2["tr_spec"]), _t(s2["tr_spec_lengths"]), _t(s2["tr_text"]),
                    _t(s2["tr_text_lengths"]), _t(s2["tr_sv_emb"]), posterior_noise=_t(s2["tr_rng_enc_q_eps"]),
                    slice_uniform=_t(s2["tr_rng_slice_u"]))
        ge512 = model.mrte_style(out.ge)
    np.testing.assert_array_equal(out.slice_starts.numpy(), s2["tr_ids_slice"])
    np.testing.assert_array_equal(out.mask.numpy(), s2["tr_y_mask"])
    assert float(out.commit_loss) == float(s2["tr_kl_ssl"])
    for name, ours in [("tr_y_hat", out.wave), ("tr_z", out.z), ("tr_z_p", out.z_p), ("tr_m_p", out.prior_mean),
                       ("tr_logs_p", out.prior_log_std), ("tr_m_q", out.post_mean), ("tr_logs_q", out.post_log_std),
                       ("tr_quantized", out.quantized), ("tr_ge", out.ge), ("tr_ge512", ge512)]:
        assert_close(ours, s2[name], **WAVE, name=name)
    train = configs[f"s2_config_{version}"]["train"]
    audio = AudioConfig.from_official(configs[f"s2_config_{version}"]["data"])
    assert_close(mel_spectrogram(out.wave.squeeze(1), audio), s2["tr_y_hat_mel"], **WAVE, name="tr_y_hat_mel")
    frames = train["segment_size"] // audio.hop_length
    mel = spec_to_mel(_t(s2["tr_spec"]), audio)
    target = torch.stack([mel[b, :, int(st):int(st) + frames] for b, st in enumerate(s2["tr_ids_slice"])])
    assert_close(target, s2["tr_y_mel"], **WAVE, name="tr_y_mel")
    t = {k: _t(v) for k, v in s2.items() if k.startswith("tr_")}
    assert_close(mel_l1(t["tr_y_mel"], t["tr_y_hat_mel"]) * train["c_mel"], s2["loss_mel"], **LOSS, name="loss_mel")
    kl = kl_loss(t["tr_z_p"], t["tr_logs_q"], t["tr_m_p"], t["tr_logs_p"], t["tr_y_mask"]) * train["c_kl"]
    assert_close(kl, s2["loss_kl"], **LOSS, name="loss_kl")
    disc = load_discriminator(v2pro_dir / "tiny_s2D_v2Pro.pth").eval()
    n = len([k for k in s2 if re.fullmatch(r"tr_y_d_r_\d+", k)])
    assert len(disc.discriminators) == n
    with torch.no_grad():
        scores = disc(_t(s2["tr_y_seg"]), _t(s2["tr_y_hat"]))
    for i in range(n):
        assert_close(scores.real_scores[i], s2[f"tr_y_d_r_{i}"], **WAVE, name=f"tr_y_d_r_{i}")
        assert_close(scores.fake_scores[i], s2[f"tr_y_d_g_{i}"], **WAVE, name=f"tr_y_d_g_{i}")
    assert_close(discriminator_loss(scores.real_scores, scores.fake_scores)[0], s2["loss_disc"], **LOSS,
                 name="loss_disc")
    assert_close(generator_loss(scores.fake_scores)[0], s2["loss_gen"], **LOSS, name="loss_gen")
    assert_close(feature_loss(scores.real_features, scores.fake_features), s2["loss_fm"], **LOSS, name="loss_fm")


def test_discriminator_alone(v2pro_dir):
    s2 = load_npz(v2pro_dir, "s2_v2pro.npz")
    disc = load_discriminator(v2pro_dir / "tiny_s2D_v2Pro.pth").eval()
    with torch.no_grad():
        out = disc(_t(s2["D_in_r"]), _t(s2["D_in_g"]))
    for i in range(len(disc.discriminators)):
        assert_close(out.real_scores[i], s2[f"D_y_d_r_{i}"], **WAVE, name=f"D_y_d_r_{i}")
        assert_close(out.fake_scores[i], s2[f"D_y_d_g_{i}"], **WAVE, name=f"D_y_d_g_{i}")
        for j, fmap in enumerate(out.fake_features[i]):
            assert_close(fmap, s2[f"D_fmap_g_{i}_{j}"], **WAVE, name=f"D_fmap_g_{i}_{j}")


def test_export_round_trip_is_identity(case, v2pro_dir, tmp_path):
    """official export -> our model -> our export: same head bytes, keys, order, fp16 values, config."""
    version, _, loaded = case
    reference_path = v2pro_dir / VERSIONS[version][1]
    reference = load_official_file(reference_path)
    ours = save_sovits_export(loaded.model, tmp_path / "voice.pth", hparams=loaded.hparams, info=reference["info"])
    assert ours.read_bytes()[:2] == reference_path.read_bytes()[:2]
    assert header_version(ours) == version
    again = load_official_file(ours)
    assert list(again) == list(reference) and list(again["weight"]) == list(reference["weight"])
    for key, value in reference["weight"].items():
        assert again["weight"][key].dtype == value.dtype and torch.equal(again["weight"][key], value), key
    assert again["config"] == reference["config"] and again["info"] == reference["info"]
    assert load_sovits(ours).version == version
