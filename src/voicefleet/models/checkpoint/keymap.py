"""Pure state-dict converters between official GPT-SoVITS key names and voicefleet's.

A `KeyMap` is one table of (official prefix, our prefix) pairs; the longest matching prefix
wins. Weight-norm tensors are named `<name>.weight_g` / `<name>.weight_v` by the old
`torch.nn.utils.weight_norm` the official code uses, and `<name>.parametrizations.weight.original0`
/ `original1` by the parametrization voicefleet's modules use; the converter maps those suffixes
too. Converting a key no rule covers raises, so nothing is dropped or invented silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch

from voicefleet.models.checkpoint.errors import CheckpointError

_WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".parametrizations.weight.original0"),
    (".weight_v", ".parametrizations.weight.original1"),
)


@dataclass(frozen=True)
class KeyMap:
    """Prefix renames between an official state dict and ours, driven by one table."""

    rules: Sequence[tuple[str, str]]  # (official prefix, our prefix)

    def _rename(self, key: str, src: int, path: str | Path | None) -> str:
        best = None
        for rule in self.rules:
            if key.startswith(rule[src]) and (best is None or len(rule[src]) > len(best[src])):
                best = rule
        if best is None:
            side = "official" if src == 0 else "voicefleet"
            raise CheckpointError(path, f"unexpected {side} key; no conversion rule covers it", key=key)
        return best[1 - src] + key[len(best[src]):]

    def to_ours(self, official: Mapping[str, torch.Tensor], *, path: str | Path | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in official.items():
            new = self._rename(key, 0, path)
            for old_suffix, our_suffix in _WEIGHT_NORM_SUFFIXES:
                if new.endswith(old_suffix):
                    new = new[: -len(old_suffix)] + our_suffix
            out[new] = value
        return out

    def to_official(self, ours: Mapping[str, torch.Tensor], *, path: str | Path | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in ours.items():
            new = key
            for old_suffix, our_suffix in _WEIGHT_NORM_SUFFIXES:
                if new.endswith(our_suffix):
                    new = new[: -len(our_suffix)] + old_suffix
            out[self._rename(new, 1, path)] = value
        return out


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, Sequence[int]],
    *,
    path: str | Path | None,
    kind: str,
    allow_missing: Sequence[str] = (),
) -> None:
    """Raise `CheckpointError` unless `state` has exactly the `expected` keys with those shapes.

    `allow_missing` lists key prefixes that may be absent (e.g. `enc_q.` in exported SoVITS files).
    Every problem is checked before anything is copied into a model.
    """
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"{kind}: expected a tensor, found {type(value).__name__}", key=key)
        if key not in expected:
            raise CheckpointError(path, f"{kind}: unexpected key (not part of this model)", key=key)
        want = tuple(expected[key])
        if tuple(value.shape) != want:
            raise CheckpointError(
                path, f"{kind}: shape {list(value.shape)} does not match the model's {list(want)}", key=key)
        if not value.is_floating_point() and value.dtype not in (torch.int64, torch.int32, torch.bool):
            raise CheckpointError(path, f"{kind}: unexpected dtype {value.dtype}", key=key)
    missing = [k for k in expected if k not in state and not any(k.startswith(p) for p in allow_missing)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(path, f"{kind}: missing from the file{more}", key=missing[0])


def shapes_of(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a module's state dict."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}
