"""Discriminator files of v2 and v2Pro load by their period count; a mismatch names the file and both versions."""

from __future__ import annotations

import re

import pytest
import torch

from voicefleet.models.checkpoint import CheckpointError
from voicefleet.models.checkpoint.discriminator_io import config_from_state_dict, load_discriminator, save_discriminator
from voicefleet.models.config import DiscriminatorConfig
from voicefleet.models.discriminator import MultiPeriodDiscriminator

TINY = dict(s_channels=(4, 16, 64, 256, 256, 256), p_channels=(4, 16, 32, 64, 64))
V2PRO_PERIODS = (2, 3, 5, 7, 11, 17, 23)  # official MultiPeriodDiscriminator(version="v2Pro")


def _write(path, periods):
    """An s2D file in the official layout (`{'weight': discriminators.<i>.*}`) with these periods."""
    torch.manual_seed(0)
    return save_discriminator(MultiPeriodDiscriminator(DiscriminatorConfig(periods=periods, **TINY)), path)


def test_v2_file_loads(tmp_path):
    model = load_discriminator(_write(tmp_path / "s2D.pth", (2, 3, 5, 7, 11)))
    assert model.config.periods == (2, 3, 5, 7, 11) and len(model.discriminators) == 6


def test_v2pro_file_loads_with_its_seven_periods(tmp_path):
    path = _write(tmp_path / "s2Dv2Pro.pth", V2PRO_PERIODS)
    model = load_discriminator(path)
    assert model.config.periods == V2PRO_PERIODS and len(model.discriminators) == 8
    assert config_from_state_dict(torch.load(path, weights_only=True)["weight"], path=path).periods == V2PRO_PERIODS


def test_version_mismatch_names_both_versions_and_keeps_the_file(tmp_path):
    v2pro = _write(tmp_path / "s2Dv2Pro.pth", V2PRO_PERIODS)
    v2 = _write(tmp_path / "s2D.pth", (2, 3, 5, 7, 11))
    before = {p: p.read_bytes() for p in (v2, v2pro)}
    with pytest.raises(CheckpointError, match=re.escape(str(v2pro)) + ".*v2Pro.*discriminator.*v2 one is expected"):
        load_discriminator(v2pro, DiscriminatorConfig(**TINY))
    with pytest.raises(CheckpointError, match=re.escape(str(v2)) + ".*v2 .*v2Pro/v2ProPlus one is expected"):
        load_discriminator(v2, DiscriminatorConfig(periods=V2PRO_PERIODS, **TINY))
    assert {p: p.read_bytes() for p in (v2, v2pro)} == before


def test_unofficial_period_count_is_refused(tmp_path):
    path = _write(tmp_path / "six.pth", (2, 3, 5, 7, 11, 13))
    with pytest.raises(CheckpointError, match=r"six\.pth.*6 period discriminators.*v2: 5 \(2, 3, 5, 7, 11\)"):
        load_discriminator(path)
