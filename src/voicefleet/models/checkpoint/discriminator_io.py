"""Official SoVITS discriminator files (`s2D*.pth`) <-> `MultiPeriodDiscriminator`.

An official discriminator file is `{'weight': state_dict}` (the pretrained `s2D2333k.pth`;
float16 or float32 on disk). Training resume files (`D_<step>.pth`) keep the same state dict under
`'model'` and are read too. The official key layout is

    discriminators.<i>.convs.<j>.{bias, weight_g, weight_v}
    discriminators.<i>.conv_post.{bias, weight_g, weight_v}

with `weight_orig / weight_u / weight_v` instead for a spectral-norm discriminator (the old
`torch.nn.utils.spectral_norm`). Ours differs only in `conv_post` -> `post` and in the
parametrization suffixes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Mapping

import torch

from voicefleet.models.config import PRO_PERIODS, ConfigError, DiscriminatorConfig
from voicefleet.models.discriminator import MultiPeriodDiscriminator
from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.checkpoint.keymap import KeyMap, check_state_dict, shapes_of
from voicefleet.models.checkpoint.pickle_io import load_official_file, save_official_file

logger = logging.getLogger(__name__)

KIND = "SoVITS discriminator"

# (official, ours) renames inside each `discriminators.<i>.`
_PER_DISCRIMINATOR_RULES = (
    ("convs.", "convs."),
    ("conv_post.", "post."),
)

# Spectral norm: old-API suffixes (official) <-> parametrization suffixes (ours). Weight-norm
# suffixes are handled by KeyMap; `weight_v` means different tensors in the two norms, so a state
# dict is treated as spectral-norm only when it has `weight_orig` keys.
_SPECTRAL_SUFFIXES = (
    (".weight_orig", ".parametrizations.weight.original"),
    (".weight_u", ".parametrizations.weight.0._u"),
    (".weight_v", ".parametrizations.weight.0._v"),
)

# The official code fixes the periods by model version; files only tell how many there are.
# v1/v2 have these five; v2Pro/v2ProPlus add 17 and 23 (seven).
V2_PERIODS = DiscriminatorConfig().periods
PERIODS_BY_COUNT = {len(V2_PERIODS): V2_PERIODS, len(PRO_PERIODS): PRO_PERIODS}
VERSIONS_BY_PERIOD_COUNT = {len(V2_PERIODS): "v2", len(PRO_PERIODS): "v2Pro/v2ProPlus"}

_INDEX = re.compile(r"^discriminators\.(\d+)\.")


def _discriminator_count(keys, path) -> int:
    indices = {int(m.group(1)) for k in keys if (m := _INDEX.match(k))}
    if not indices:
        first = next(iter(keys), None)
        hint = " (this looks like a SoVITS generator file)" if first and first.split(".")[0] in {
            "enc_p", "dec", "enc_q", "flow", "ref_enc", "ssl_proj", "quantizer"} else ""
        raise CheckpointError(path, f"no 'discriminators.<i>.' keys: not a {KIND} state dict{hint}", key=first)
    return max(indices) + 1


def _periods_for_count(n_periods: int, path) -> tuple[int, ...]:
    """The official periods of a file with `n_periods` period discriminators (v2: 5, v2Pro: 7)."""
    if n_periods in PERIODS_BY_COUNT:
        return PERIODS_BY_COUNT[n_periods]
    known = "; ".join(f"{VERSIONS_BY_PERIOD_COUNT[n]}: {n} ({', '.join(map(str, p))})"
                      for n, p in PERIODS_BY_COUNT.items())
    raise CheckpointError(path, f"{KIND}: {n_periods} period discriminators; no official version has that many "
                                f"({known})")


def discriminator_keymap(n_discriminators: int) -> KeyMap:
    """The official <-> ours prefix table for `n_discriminators` sub-discriminators (scale + periods)."""
    return KeyMap(tuple(
        (f"discriminators.{i}.{official}", f"discriminators.{i}.{ours}")
        for i in range(n_discriminators) for official, ours in _PER_DISCRIMINATOR_RULES
    ))


def _swap_suffix(key: str, pairs, src: int) -> str:
    for pair in pairs:
        if key.endswith(pair[src]):
            return key[: -len(pair[src])] + pair[1 - src]
    return key


def official_to_ours(state: Mapping[str, torch.Tensor], *, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Official discriminator state dict -> ours (pure; raises `CheckpointError` on unknown keys)."""
    keymap = discriminator_keymap(_discriminator_count(state.keys(), path))
    if any(k.endswith(".weight_orig") for k in state):
        ours_suffixed = {_swap_suffix(k, _SPECTRAL_SUFFIXES, 0): v for k, v in state.items()}
        # Prefixes only: no weight-norm suffixes are left to rewrite.
        return keymap.to_ours(ours_suffixed, path=path)
    return keymap.to_ours(state, path=path)


def ours_to_official(state: Mapping[str, torch.Tensor], *, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Our discriminator state dict -> official keys (pure; the inverse of `official_to_ours`)."""
    keymap = discriminator_keymap(_discriminator_count(state.keys(), path))
    official = keymap.to_official(state, path=path)
    if any(k.endswith(_SPECTRAL_SUFFIXES[0][1]) for k in state):
        official = {_swap_suffix(k, _SPECTRAL_SUFFIXES, 1): v for k, v in official.items()}
    return official


def _width(state: Mapping[str, torch.Tensor], key: str, path) -> int:
    if key not in state:
        raise CheckpointError(path, f"{KIND}: missing from the file (needed to infer the layer widths)", key=key)
    return int(state[key].shape[0])


def config_from_state_dict(state: Mapping[str, torch.Tensor], *, path: str | Path | None = None) -> DiscriminatorConfig:
    """Infer a `DiscriminatorConfig` from an official state dict's shapes.

    Widths are read from the biases of the scale discriminator and the first period one; the
    periods are the official ones of the version with that many (v2: 5, v2Pro/v2ProPlus: 7).
    Every other tensor is checked against the result afterwards by the loader.
    """
    periods = _periods_for_count(_discriminator_count(state.keys(), path) - 1, path)
    s_channels = tuple(_width(state, f"discriminators.0.convs.{j}.bias", path) for j in range(6))
    p_channels = tuple(_width(state, f"discriminators.1.convs.{j}.bias", path) for j in range(5))
    spectral = any(k.endswith(".weight_orig") for k in state)
    try:
        return DiscriminatorConfig(periods=periods, s_channels=s_channels, p_channels=p_channels,
                                   use_spectral_norm=spectral)
    except ConfigError as e:
        raise CheckpointError(path, f"{KIND}: the file's layer widths do not form a valid model: {e}") from None


def _state_dict_from_file(obj, path: Path) -> Mapping[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(path, f"expected a dict with a 'weight' entry, found {type(obj).__name__}")
    for entry in ("weight", "model"):  # exported/pretrained files, then training resume files
        if entry in obj and isinstance(obj[entry], Mapping):
            others = sorted(k for k in obj if k != entry)
            if others:
                logger.debug("%s: ignoring top-level entries %s", path, others)
            return obj[entry]
    raise CheckpointError(path, f"expected a dict with a 'weight' state dict, found top-level keys {sorted(obj)[:8]}")


def load_discriminator(path: str | Path, config: DiscriminatorConfig | None = None) -> MultiPeriodDiscriminator:
    """Build a `MultiPeriodDiscriminator` from an official discriminator file, weights as float32.

    With `config=None` the widths and periods are inferred from the file (so full-size and reduced
    files of v2 and v2Pro both load); with a config, the file must match it (a v2 file where a
    v2Pro discriminator is expected says so, naming both versions). Every key and shape is checked before anything is copied; a mismatch raises
    `CheckpointError` naming the file and the key.
    """
    path = Path(path)
    state = _state_dict_from_file(load_official_file(path), path)
    n_periods = _discriminator_count(state.keys(), path) - 1
    if config is not None and len(config.periods) != n_periods:
        found = VERSIONS_BY_PERIOD_COUNT.get(n_periods, f"a {n_periods}-period")
        wanted = VERSIONS_BY_PERIOD_COUNT.get(len(config.periods), f"a {len(config.periods)}-period")
        raise CheckpointError(path, f"is a GPT-SoVITS {found} {KIND} ({n_periods} period discriminators), "
                                    f"but a {wanted} one is expected here ({len(config.periods)} periods)")
    if config is None:
        config = config_from_state_dict(state, path=path)
    model = MultiPeriodDiscriminator(config)
    expected = ours_to_official(shapes_of(model), path=path)
    check_state_dict(state, expected, path=path, kind=KIND)
    ours = official_to_ours(state, path=path)
    ours = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in ours.items()}
    model.load_state_dict(ours, strict=True)
    logger.info("loaded %s from %s (%d tensors, periods %s)", KIND, path, len(ours), list(config.periods))
    return model


def save_discriminator(model: MultiPeriodDiscriminator, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `{'weight': official_state_dict}` (the model's dtype), atomically; see `save_official_file`."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_official_file({"weight": ours_to_official(state, path=path)}, path, overwrite=overwrite)
