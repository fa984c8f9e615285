"""Discriminator files of other model versions are refused with a message naming the file and the version."""

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


def test_v2pro_file_is_refused(tmp_path):
    path = _write(tmp_path / "s2Dv2Pro.pth", V2PRO_PERIODS)
    for config in (None, DiscriminatorConfig(**TINY)):
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*v2Pro") as err:
            load_discriminator(path, config)
        assert "discriminator" in str(err.value)
    with pytest.raises(CheckpointError, match="v2Pro"):
        config_from_state_dict(torch.load(path, weights_only=True)["weight"], path=path)


def test_unofficial_period_count_is_refused(tmp_path):
    path = _write(tmp_path / "six.pth", (2, 3, 5, 7, 11, 13))
    with pytest.raises(CheckpointError, match=r"six\.pth.*6 period discriminators.*v2 discriminators \(5 periods"):
        load_discriminator(path)


def test_explicit_config_for_another_layout_is_honoured(tmp_path):
    # the caller asked for that layout itself: only inference from the file is limited to v2
    config = DiscriminatorConfig(periods=V2PRO_PERIODS, **TINY)
    model = load_discriminator(_write(tmp_path / "seven.pth", V2PRO_PERIODS), config)
    assert model.config.periods == V2PRO_PERIODS
