"""The official speaker-verification checkpoint (`sv/pretrained_eres2netv2w24s4ep4.ckpt`).

The file is a bare ERes2NetV2 state dict (no wrapper, no config), float32, whose key names are
ours too (`models.speaker`). Sizes are inferred from the tensors when no config is given, so the
official file and reduced ones load alike; every key and shape is checked before anything is
copied.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping

import torch

from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.checkpoint.keymap import check_state_dict, shapes_of
from voicefleet.models.checkpoint.pickle_io import load_official_file, save_official_file
from voicefleet.models.config import ConfigError, SpeakerVerifierConfig
from voicefleet.models.speaker import ERes2NetV2

logger = logging.getLogger(__name__)

KIND = "speaker-verification (ERes2NetV2) checkpoint"
_BLOCK = re.compile(r"^layer([1-4])\.(\d+)\.")


def _shape(state: Mapping[str, torch.Tensor], key: str, path: Path) -> tuple[int, ...]:
    if key not in state or not isinstance(state[key], torch.Tensor):
        raise CheckpointError(path, f"not a {KIND}: missing (needed to infer its sizes)", key=key)
    return tuple(state[key].shape)


def config_from_state_dict(state: Mapping[str, torch.Tensor], path: Path) -> SpeakerVerifierConfig:
    """Infer the ERes2NetV2 sizes from an official state dict's shapes."""
    m = _shape(state, "conv1.weight", path)[0]
    depth = {stage: 0 for stage in range(1, 5)}
    for key in state:
        if match := _BLOCK.match(key):
            stage, index = int(match.group(1)), int(match.group(2))
            depth[stage] = max(depth[stage], index + 1)
    width = _shape(state, "layer1.0.convs.0.weight", path)[0]
    scale = sum(1 for k in state if re.fullmatch(r"layer1\.0\.convs\.\d+\.weight", k))
    expansion = _shape(state, "layer1.0.conv3.weight", path)[0] // m
    embedding, pooled = _shape(state, "seg_1.weight", path)
    try:
        return SpeakerVerifierConfig(base_width=-(-width * 64 // m), scale=scale, expansion=expansion, m_channels=m,
                                     num_blocks=tuple(depth[s] for s in range(1, 5)),
                                     feat_dim=pooled // (2 * m * expansion), embedding_size=embedding)
    except ConfigError as e:
        raise CheckpointError(path, f"{KIND}: its shapes do not form a valid model: {e}") from None


def load_speaker_verifier(path: str | Path, config: SpeakerVerifierConfig | None = None) -> ERes2NetV2:
    """An ERes2NetV2 in eval mode (float32, CPU) from an official sv checkpoint."""
    path = Path(path)
    state = load_official_file(path)
    if not isinstance(state, Mapping) or "conv1.weight" not in state:
        found = list(state)[:3] if isinstance(state, Mapping) else type(state).__name__
        raise CheckpointError(path, f"is not a speaker-verification (ERes2NetV2) checkpoint: expected a bare "
                                    f"state dict with 'conv1.weight', found {found}")
    config = config or config_from_state_dict(state, path)
    model = ERes2NetV2(config)
    check_state_dict(state, shapes_of(model), path=path, kind=KIND)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    logger.info("loaded the speaker-verification network from %s (%d channels, embedding %d)", path,
                config.m_channels, config.stats_dim)
    return model.eval()


def save_speaker_verifier(model: ERes2NetV2, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the bare state dict, as the official file is."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_official_file(state, path, overwrite=overwrite)
