"""Deterministic, speaker-stratified train/validation split by clip-id hash.

A clip goes to validation when the hash of its clip id, read as a number in [0, 1), is below the
validation fraction: the split depends on which clips exist, never on their order, and a clip keeps
its side when others are added (except for the two guarantees below). Per speaker with at least
two clips (and a fraction above 0): if no clip fell into validation, the one with the smallest hash
goes there; if every clip did, the one with the largest hash goes back to training.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

TRAIN, VAL = "train", "val"


def clip_hash(clip_id: str) -> float:
    """sha256 of the clip id as a number in [0, 1)."""
    return int.from_bytes(hashlib.sha256(clip_id.encode("utf-8")).digest()[:8], "big") / 2**64


def assign_splits(clips: Iterable[tuple[str, str]], val_fraction: float) -> dict[str, str]:
    """Map each clip id to "train" or "val".

    Args:
        clips: (clip_id, speaker) pairs; clip ids must be unique.
        val_fraction: target share of validation clips per speaker, in [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_speaker: dict[str, list[tuple[float, str]]] = defaultdict(list)
    seen = set()
    for clip_id, speaker in clips:
        if clip_id in seen:
            raise ValueError(f"duplicate clip id {clip_id!r}")
        seen.add(clip_id)
        by_speaker[speaker].append((clip_hash(clip_id), clip_id))
    splits = {}
    for members in by_speaker.values():
        members.sort()
        val = {c for h, c in members if h < val_fraction}
        if val_fraction > 0 and len(members) >= 2:
            if not val:
                val.add(members[0][1])
            if len(val) == len(members):
                val.discard(members[-1][1])
        splits.update({c: VAL if c in val else TRAIN for _, c in members})
    return splits
