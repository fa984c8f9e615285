"""SoVITS v2 generator parity with the official implementation (compat fixtures).

Every expected value is read from the fixture folder; nothing about its sizes is assumed, so
the same tests run against any fixture set with the compat layout.
"""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from tests.conftest import assert_close, load_npz
from voicefleet.models.builders import sovits_v2
from voicefleet.models.checkpoint import CheckpointError, load_official_file, save_official_file
from voicefleet.models.checkpoint.sovits_io import (
    load_sovits,
    save_sovits_export,
    save_sovits_pretrained,
    sovits_state_to_official,
)

WAVE = dict(atol=1e-4, rtol=1e-4)  # compat README section 8: waveforms, latents, log-mels


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


@pytest.fixture(scope="module")
def s2(compat_dir):
    return load_npz(compat_dir, "s2.npz")


@pytest.fixture(scope="module")
def spec(compat_dir):
    return load_npz(compat_dir, "spec.npz")


@pytest.fixture(scope="module")
def tiny(compat_dir):
    return load_sovits(compat_dir / "tiny_s2G.pth")


@pytest.fixture(scope="module")
def full_official_shapes():
    model = sovits_v2()
    return model, {k: list(v.shape) for k, v in sovits_state_to_official(model.state_dict(), model.config).items()}


def _manifest(compat_dir, name):
    return json.loads((compat_dir / name).read_text(), object_pairs_hook=OrderedDict)


def test_full_size_keys_and_shapes_equal_pretrained_manifest(compat_dir, full_official_shapes):
    _, ours = full_official_shapes
    manifest = _manifest(compat_dir, "keys_s2G_v2_pretrained.json")
    assert list(ours) == list(manifest), "key set or order differs from the official state_dict"
    for key, (shape, _dtype) in manifest.items():
        assert ours[key] == shape, f"{key}: {ours[key]} != {shape}"


def test_full_size_export_keys_equal_export_manifest(compat_dir, full_official_shapes, tmp_path):
    model, _ = full_official_shapes
    manifest = _manifest(compat_dir, "keys_s2G_v2_export.json")
    path = save_sovits_export(model, tmp_path / "voice.pth", info="1epoch_2iteration")
    raw = load_official_file(path)
    assert list(raw.keys()) == ["weight", "config", "info"]
    assert list(raw["weight"]) == list(manifest)
    for key, (shape, dtype) in manifest.items():
        t = raw["weight"][key]
        assert list(t.shape) == shape and str(t.dtype).removeprefix("torch.") == dtype, key


def test_full_size_parameter_count(compat_dir, full_official_shapes):
    model, _ = full_official_shapes
    counts = json.loads((compat_dir / "file_formats.json").read_text())["parameter_counts"]
    assert sum(p.numel() for p in model.parameters()) == counts["s2G_v2_parameters"]
    export_elems = sum(v.numel() for k, v in model.state_dict().items() if not k.startswith("posterior_encoder."))
    assert export_elems == counts["s2G_v2_state_dict_elements_export(no enc_q)"]


def test_tiny_pretrained_loads_strictly(tiny, compat_configs):
    assert tiny.has_posterior
    model_cfg = compat_configs["s2_config"]["model"]
    assert tiny.config.hidden_channels == model_cfg["hidden_channels"]
    assert tiny.config.gin_channels == model_cfg["gin_channels"]
    # MRTE widths follow the official rule (hidden = gin), which is how the fixture was reduced.
    assert tiny.config.mrte_hidden == compat_configs["mrte_override"]["hidden_size"]


def test_extract_latent_codes_exact(tiny, s2):
    assert_close(tiny.model.ssl_proj(_t(s2["el_ssl"])).detach(), s2["el_ssl_proj"], **WAVE, name="ssl_proj")
    codes = tiny.model.extract_latent(_t(s2["el_ssl"]))
    np.testing.assert_array_equal(codes.numpy(), s2["el_codes"])


def test_decode_intermediates_and_waveform(tiny, s2, spec):
    model = tiny.model
    with torch.no_grad():
        ge = model.style(_t(spec["spec"]))
        assert_close(ge, s2["dec_ge"], **WAVE, name="ge")
        quantized = model.quantizer.decode(_t(s2["dec_codes"]))
        assert_close(quantized, s2["dec_quantized"], **WAVE, name="quantized")
        up = torch.nn.functional.interpolate(quantized, size=quantized.shape[-1] * 2, mode="nearest")
        lengths = torch.tensor([up.shape[-1]])
        prior = model.text_encoder(up, lengths, _t(s2["dec_text"]), torch.tensor([s2["dec_text"].shape[-1]]), ge)
        assert_close(prior.hidden, s2["dec_enc_p_x"], **WAVE, name="enc_p x")
        assert_close(prior.mean, s2["dec_m_p"], **WAVE, name="m_p")
        assert_close(prior.log_std, s2["dec_logs_p"], **WAVE, name="logs_p")
        np.testing.assert_array_equal(prior.mask.numpy(), s2["dec_y_mask"])
        z = model.flow(prior.mean, prior.mask, g=ge, reverse=True)
        assert_close(z, s2["dec_z"], **WAVE, name="flow reverse")
    out = model.decode(_t(s2["dec_codes"]), _t(s2["dec_text"]), _t(spec["spec"]), noise_scale=0.0, speed=1)
    assert_close(out, s2["dec_out"], **WAVE, name="dec_out")


def test_decode_speed_multiref_and_noise(tiny, s2, spec):
    model, codes, text = tiny.model, _t(s2["dec_codes"]), _t(s2["dec_text"])
    fast = model.decode(codes, text, _t(spec["spec"]), noise_scale=0.0, speed=1.25)
    assert_close(fast, s2["dec_speed_out"], **WAVE, name="speed 1.25")
    multi = model.decode(codes, text, [_t(spec["spec"]), _t(spec["spec2"])], noise_scale=0.0)
    assert_close(multi, s2["dec_multiref_out"], **WAVE, name="multi-reference")
    noisy = model.decode(codes, text, _t(spec["spec"]), noise_scale=0.5, noise=_t(s2["dec_noise_eps"]))
    assert_close(noisy, s2["dec_noise_out"], **WAVE, name="noise 0.5")


def test_export_file_loads_and_decodes(compat_dir, s2, spec):
    loaded = load_sovits(compat_dir / "tiny_s2G_export.pth")
    assert not loaded.has_posterior and loaded.info == "1epoch_1iteration"
    out = loaded.model.decode(_t(s2["dec_codes"]), _t(s2["dec_text"]), _t(spec["spec"]), noise_scale=0.0)
    assert_close(out, s2["dec_export_out"], **WAVE, name="dec_export_out")


def test_training_forward_matches_reference(tiny, s2):
    model = tiny.model.eval()
    with torch.no_grad():
        out = model(_t(s2["tr_ssl"]), _t(s2["tr_spec"]), _t(s2["tr_spec_lengths"]), _t(s2["tr_text"]),
                    _t(s2["tr_text_lengths"]), posterior_noise=_t(s2["tr_rng_enc_q_eps"]),
                    slice_uniform=_t(s2["tr_rng_slice_u"]))
    np.testing.assert_array_equal(out.slice_starts.numpy(), s2["tr_ids_slice"])
    np.testing.assert_array_equal(out.mask.numpy(), s2["tr_y_mask"])
    assert float(out.commit_loss) == float(s2["tr_kl_ssl"])
    for name, ours in [("tr_y_hat", out.wave), ("tr_z", out.z), ("tr_z_p", out.z_p), ("tr_m_p", out.prior_mean),
                       ("tr_logs_p", out.prior_log_std), ("tr_m_q", out.post_mean), ("tr_logs_q", out.post_log_std),
                       ("tr_quantized", out.quantized), ("tr_ge", out.ge)]:
        assert_close(ours, s2[name], **WAVE, name=name)


def test_export_round_trip_is_identity(tiny, compat_dir, tmp_path):
    """official file -> our model -> official export: same keys, order, values (fp16) and config."""
    reference = load_official_file(compat_dir / "tiny_s2G_export.pth")
    ours = save_sovits_export(tiny.model, tmp_path / "voice.pth", hparams=tiny.hparams, info=reference["info"])
    again = load_official_file(ours)
    assert list(again.keys()) == list(reference.keys())
    assert list(again["weight"]) == list(reference["weight"])
    for key, value in reference["weight"].items():
        assert again["weight"][key].dtype == value.dtype, key
        assert torch.equal(again["weight"][key], value), key
    assert again["config"] == reference["config"]
    assert again["info"] == reference["info"]


def test_pretrained_round_trip_is_identity(tiny, compat_dir, tmp_path):
    reference = load_official_file(compat_dir / "tiny_s2G.pth")["weight"]
    path = save_sovits_pretrained(tiny.model, tmp_path / "s2G.pth", hparams=tiny.hparams)
    again = load_official_file(path)["weight"]
    assert list(again) == list(reference)
    assert all(torch.equal(again[k], reference[k]) for k in reference)


def test_official_unpickler_reads_our_export(tiny, tmp_path):
    """GPT-SoVITS loads exports with plain torch.load and its own `utils.HParams` class."""
    import subprocess
    import sys
    import textwrap

    path = save_sovits_export(tiny.model, tmp_path / "voice.pth", hparams=tiny.hparams)
    fake_pkg = tmp_path / "official"
    fake_pkg.mkdir()
    (fake_pkg / "utils.py").write_text(textwrap.dedent("""
        class HParams:
            def __getitem__(self, key):
                return getattr(self, key)
    """))
    script = textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(fake_pkg)!r})
        d = torch.load({str(path)!r}, map_location="cpu", weights_only=False)
        hps = d["config"]
        assert type(hps).__module__ == "utils" and type(hps).__name__ == "HParams"
        print(hps.data.filter_length, hps["model"]["hidden_channels"], hps.train.segment_size, d["info"])
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    cfg = tiny.config
    assert result.stdout.split() == [str(cfg.audio.filter_length), str(cfg.hidden_channels), str(cfg.segment_size),
                                     "0epoch_0iteration"]


def test_wrong_shape_names_the_key(compat_dir, tmp_path):
    raw = load_official_file(compat_dir / "tiny_s2G.pth")
    key = "dec.conv_pre.weight"
    bad = OrderedDict(raw)
    bad["weight"] = dict(raw["weight"])
    bad["weight"][key] = torch.zeros(*[s + 1 for s in raw["weight"][key].shape])
    path = save_official_file(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth.*decoder\.conv_pre\.weight.*shape"):
        load_sovits(path)


def test_unexpected_and_missing_keys_are_reported(compat_dir, tmp_path):
    raw = load_official_file(compat_dir / "tiny_s2G.pth")
    extra = dict(raw, weight={**raw["weight"], "enc_p.surprise.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="surprise"):
        load_sovits(save_official_file(extra, tmp_path / "extra.pth"))
    weight = dict(raw["weight"])
    del weight["flow.flows.2.pre.bias"]
    with pytest.raises(CheckpointError, match=r"missing.*flow\.flows\.1\.pre\.bias"):
        load_sovits(save_official_file(dict(raw, weight=weight), tmp_path / "missing.pth"))


def test_wrong_kind_truncated_and_garbage_files(compat_dir, tmp_path):
    with pytest.raises(CheckpointError, match="GPT"):
        load_sovits(compat_dir / "tiny_s1.ckpt")
    with pytest.raises(CheckpointError, match="discriminator"):
        load_sovits(compat_dir / "tiny_s2D.pth")
    data = (compat_dir / "tiny_s2G_export.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_sovits(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        load_sovits(tmp_path / "text.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_sovits(tmp_path / "absent.pth")
    v2pro = tmp_path / "v2pro.pth"
    v2pro.write_bytes(b"05" + data[2:])
    with pytest.raises(CheckpointError, match="v2Pro"):
        load_sovits(v2pro)


def test_file_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pth"
    torch.save({"weight": {}, "config": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_sovits(path)
