"""Model builders: one logic-free function per size. Full size = the official v2 numbers.

`tiny` sizes are the reduced configs of the compatibility fixtures: small enough for unit tests
and CPU demos, built by the same code paths as the full models.
"""

from __future__ import annotations

from voicefleet.models.config import SoVITSConfig
from voicefleet.models.sovits import SoVITS


def sovits_v2_config() -> SoVITSConfig:
    return SoVITSConfig()


def sovits_tiny_config() -> SoVITSConfig:
    return SoVITSConfig(inter_channels=16, hidden_channels=32, filter_channels=64, n_heads=2, n_layers=2,
                        kernel_size=3, upsample_initial_channel=64, gin_channels=32)


def sovits_v2() -> SoVITS:
    return SoVITS(sovits_v2_config())


def sovits_tiny() -> SoVITS:
    return SoVITS(sovits_tiny_config())
