"""Discriminator builders: one logic-free function per size, official numbers only."""

from __future__ import annotations

from voicefleet.models.config import PRO_PERIODS, DiscriminatorConfig
from voicefleet.models.discriminator import MultiPeriodDiscriminator


def discriminator_v2() -> MultiPeriodDiscriminator:
    """The official SoVITS v2 discriminator (46,747,132 parameters)."""
    return MultiPeriodDiscriminator(DiscriminatorConfig())


def discriminator_tiny() -> MultiPeriodDiscriminator:
    """The reduced discriminator of the compat fixtures (`configs.json` `discriminator_override`)."""
    return MultiPeriodDiscriminator(DiscriminatorConfig(
        periods=(2, 3, 5, 7, 11),
        s_channels=(4, 16, 64, 256, 256, 256),
        p_channels=(4, 16, 32, 64, 64),
    ))


def discriminator_v2pro() -> MultiPeriodDiscriminator:
    """The official v2Pro/v2ProPlus discriminator: periods 17 and 23 added (63,189,440 parameters)."""
    return MultiPeriodDiscriminator(DiscriminatorConfig(periods=PRO_PERIODS))


def discriminator_tiny_v2pro() -> MultiPeriodDiscriminator:
    """The reduced v2Pro discriminator of the fixtures (v2 tiny widths, 7 periods)."""
    return MultiPeriodDiscriminator(DiscriminatorConfig(
        periods=PRO_PERIODS,
        s_channels=(4, 16, 64, 256, 256, 256),
        p_channels=(4, 16, 32, 64, 64),
    ))
