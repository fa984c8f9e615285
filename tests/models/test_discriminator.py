"""MultiPeriodDiscriminator: official key layout, checkpoint I/O, and parity with compat `s2.npz`."""

from __future__ import annotations

import json
import re
from collections import OrderedDict

import pytest
import torch

from tests.conftest import assert_close, load_npz
from voicefleet.models.builders_discriminator import discriminator_tiny, discriminator_v2
from voicefleet.models.checkpoint import CheckpointError, load_official_file, shapes_of
from voicefleet.models.checkpoint.discriminator_io import (
    config_from_state_dict, load_discriminator, official_to_ours, ours_to_official, save_discriminator,
)
from voicefleet.models.config import DiscriminatorConfig
from voicefleet.models.discriminator import MultiPeriodDiscriminator

# compat README section 8 (activations of a float32 model)
TOL = dict(atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_config(compat_configs) -> DiscriminatorConfig:
    override = compat_configs["discriminator_override"]
    return DiscriminatorConfig(s_channels=tuple(override["s_channels"]), p_channels=tuple(override["p_channels"]))


@pytest.fixture(scope="module")
def tiny_file(compat_dir):
    return compat_dir / "tiny_s2D.pth"


@pytest.fixture(scope="module")
def s2(compat_dir):
    return load_npz(compat_dir, "s2.npz")


def _n_discriminators(arrays: dict, prefix: str) -> int:
    return len({int(m.group(1)) for k in arrays if (m := re.fullmatch(prefix + r"(\d+)", k))})


def test_full_size_layout_matches_official_manifest(compat_dir):
    manifest = json.loads((compat_dir / "keys_s2D_v2.json").read_text())
    with torch.device("meta"):  # shapes only: no 47M-parameter init
        model = discriminator_v2()
    official = ours_to_official(model.state_dict())
    assert list(official) == list(manifest)
    for key, (shape, dtype) in manifest.items():
        assert list(official[key].shape) == shape, key
        assert str(official[key].dtype).removeprefix("torch.") == dtype, key


def test_full_size_parameter_count(compat_dir):
    counts = json.loads((compat_dir / "file_formats.json").read_text())["parameter_counts"]
    with torch.device("meta"):
        model = discriminator_v2()
    assert sum(p.numel() for p in model.parameters()) == counts["s2D_v2_parameters"]


def test_tiny_builder_matches_fixture_config(tiny_config):
    assert discriminator_tiny().config == tiny_config


def test_tiny_file_loads_strictly(tiny_file, tiny_config):
    official = load_official_file(tiny_file)["weight"]
    for config in (None, tiny_config):
        model = load_discriminator(tiny_file, config)
        assert model.config == tiny_config
        state = ours_to_official(model.state_dict())
        assert list(state) == list(official)
        for key, value in official.items():
            assert torch.equal(state[key], value.float()), key


def test_forward_parity(tiny_file, s2):
    model = load_discriminator(tiny_file).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = model(torch.from_numpy(s2["D_in_r"]), torch.from_numpy(s2["D_in_g"]))
    n = _n_discriminators(s2, "D_y_d_r_")
    assert len(out.real_scores) == len(out.fake_scores) == n
    for i in range(n):
        assert_close(out.real_scores[i], s2[f"D_y_d_r_{i}"], **TOL, name=f"D_y_d_r_{i}")
        assert_close(out.fake_scores[i], s2[f"D_y_d_g_{i}"], **TOL, name=f"D_y_d_g_{i}")
        n_maps = _n_discriminators(s2, f"D_fmap_r_{i}_")
        assert len(out.real_features[i]) == len(out.fake_features[i]) == n_maps
        for j in range(n_maps):
            assert_close(out.real_features[i][j], s2[f"D_fmap_r_{i}_{j}"], **TOL, name=f"D_fmap_r_{i}_{j}")
            assert_close(out.fake_features[i][j], s2[f"D_fmap_g_{i}_{j}"], **TOL, name=f"D_fmap_g_{i}_{j}")


def _write(path, obj):
    torch.save(obj, path)
    return path


def test_wrong_shape_names_the_key(tiny_file, tiny_config, tmp_path):
    official = OrderedDict(load_official_file(tiny_file)["weight"])
    key = next(k for k in official if k.startswith("discriminators.2.") and k.endswith("weight_v"))
    official[key] = torch.zeros(official[key].shape[0] + 1, *official[key].shape[1:])
    bad = _write(tmp_path / "bad.pth", {"weight": official})
    for config in (None, tiny_config):
        with pytest.raises(CheckpointError, match=re.escape(key)) as err:
            load_discriminator(bad, config)
        assert err.value.key == key and "bad.pth" in str(err.value)


def test_wrong_widths_for_given_config(tiny_file):
    with pytest.raises(CheckpointError, match="shape"):
        load_discriminator(tiny_file, DiscriminatorConfig())


def test_missing_and_unknown_keys(tiny_file, tmp_path):
    official = OrderedDict(load_official_file(tiny_file)["weight"])
    dropped = OrderedDict(official)
    last = list(dropped)[-1]
    del dropped[last]
    with pytest.raises(CheckpointError, match=re.escape(last)):
        load_discriminator(_write(tmp_path / "missing.pth", {"weight": dropped}))
    extra = OrderedDict(official)
    extra["discriminators.1.extra.bias"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="extra"):
        load_discriminator(_write(tmp_path / "extra.pth", {"weight": extra}))


def test_generator_file_is_rejected(compat_dir):
    with pytest.raises(CheckpointError, match="generator"):
        load_discriminator(compat_dir / "tiny_s2G.pth")


def test_not_a_weight_dict(tmp_path):
    with pytest.raises(CheckpointError, match="weight"):
        load_discriminator(_write(tmp_path / "list.pth", [1, 2, 3]))
    with pytest.raises(CheckpointError, match="weight"):
        load_discriminator(_write(tmp_path / "other.pth", {"state": {}}))


def test_converters_round_trip(tiny_file):
    official = load_official_file(tiny_file)["weight"]
    ours = official_to_ours(official)
    assert any(".post." in k for k in ours) and not any("conv_post" in k for k in ours)
    back = ours_to_official(ours)
    assert list(back) == list(official)
    assert all(back[k] is official[k] for k in official)


def test_save_load_round_trip(tiny_file, tmp_path):
    model = load_discriminator(tiny_file)
    saved = save_discriminator(model, tmp_path / "D.pth")
    written = load_official_file(saved)
    assert list(written) == ["weight"]
    original = load_official_file(tiny_file)["weight"]
    assert list(written["weight"]) == list(original)
    for key, value in original.items():
        assert torch.equal(written["weight"][key], value), key
    reloaded = load_discriminator(saved)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    with pytest.raises(CheckpointError, match="exists"):
        save_discriminator(model, saved)


def test_float16_file_loads_as_float32(tiny_file, tmp_path):
    half = OrderedDict((k, v.half()) for k, v in load_official_file(tiny_file)["weight"].items())
    model = load_discriminator(_write(tmp_path / "half.pth", {"weight": half, "info": "fp16"}))
    state = ours_to_official(model.state_dict())
    for key, value in half.items():
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], value.float()), key


def test_spectral_norm_round_trip(tiny_config, tmp_path):
    torch.manual_seed(0)
    config = DiscriminatorConfig(s_channels=tiny_config.s_channels, p_channels=tiny_config.p_channels,
                                 use_spectral_norm=True)
    model = MultiPeriodDiscriminator(config).eval()
    path = save_discriminator(model, tmp_path / "D_spectral.pth")
    keys = list(load_official_file(path)["weight"])
    assert any(k.endswith(".weight_orig") for k in keys) and not any("parametrizations" in k for k in keys)
    reloaded = load_discriminator(path).eval()
    assert reloaded.config == config
    real, fake = torch.randn(2, 1, 999), torch.randn(2, 1, 999)
    with torch.no_grad():
        a, b = model(real, fake), reloaded(real, fake)
    for x, y in zip(a.fake_scores, b.fake_scores):
        assert torch.equal(x, y)


def test_inferred_config(tiny_file, tiny_config):
    assert config_from_state_dict(load_official_file(tiny_file)["weight"]) == tiny_config


def test_shapes_of_tiny_model_match_file(tiny_file):
    official = load_official_file(tiny_file)["weight"]
    shapes = ours_to_official(shapes_of(discriminator_tiny()))
    assert {k: tuple(v.shape) for k, v in official.items()} == shapes


def test_period_padding_and_feature_shapes(tiny_config):
    torch.manual_seed(0)
    model = MultiPeriodDiscriminator(tiny_config).eval()
    samples = 1001
    with torch.no_grad():
        out = model(torch.randn(3, 1, samples), torch.randn(3, 1, samples))
    for disc, maps in zip(model.discriminators[1:], out.real_features[1:]):
        rows = -(-samples // disc.period)  # the end is reflect-padded to whole periods
        assert maps[0].shape[-1] == disc.period
        assert maps[0].shape[-2] == -(-rows // 3)  # kernel 5, stride 3, padding 2: ceil(rows / 3)
    with pytest.raises(ValueError, match="batch, 1, samples"):
        model(torch.randn(3, samples), torch.randn(3, samples))
