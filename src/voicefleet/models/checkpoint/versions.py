"""Which GPT-SoVITS version a SoVITS file holds, decided from the file itself as officially.

The official loader (`get_sovits_version_from_path_fast`) asks, in order:

1. the md5 of the file's first 8192 bytes: the official pretrained generators have fixed answers;
2. the first two bytes: exports of later versions replace the zip header `PK` by a version tag
   (`05` = v2Pro, `06` = v2ProPlus; `00`-`04` are v1..v4 variants);
3. otherwise (a `PK` file) the file size, which tells v1/v2/v3 apart.

It then trusts that answer over the `version` stored in the file's config. voicefleet follows
1 and 2, and replaces 3 by the keys: a `PK` file with `sv_emb.*` is a v2Pro-family generator
(the official size rule would build it as v2 and silently drop those weights); which of the two
comes from its config, else from the decoder's first kernel (20 in v2ProPlus, 16 in v2Pro).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from voicefleet.models.checkpoint.errors import CheckpointError

# first two bytes -> model version (official `head2version`, model column)
HEAD_VERSIONS = {b"00": "v1", b"01": "v2", b"02": "v3", b"03": "v3 LoRA", b"04": "v4 LoRA",
                 b"05": "v2Pro", b"06": "v2ProPlus"}
VERSION_HEADS = {"v2Pro": b"05", "v2ProPlus": b"06"}  # what voicefleet writes into its exports
READABLE_HEADS = {b"05", b"06"}  # tagged files voicefleet reads (the rest are other architectures)
ZIP_HEAD = b"PK"

# md5 of the first 8192 bytes of official pretrained generators -> model version
PRETRAINED_MD5 = {
    "dc3c97e17592963677a4a1681f30c653": "v2",
    "6642b37f3dbb1f76882b69937c95a5f3": "v2",
    "43797be674a37c1c83ee81081941ed0f": "v3",
    "4f26b9476d0c5033e04162c486074374": "v4",
    "c7e9fce2223f3db685cdfa1e6368728a": "v2Pro",
    "66b313e39455b57ab1b0bc0b239c9d0a": "v2ProPlus",
}
PRO_KEY = "sv_emb.weight"  # official key only v2Pro-family generators have
PLUS_FIRST_KERNEL = 20  # `dec.ups.0` kernel size of v2ProPlus (v2Pro: 16)


def read_head(path: str | Path) -> tuple[bytes, str]:
    """The file's first two bytes and the md5 of its first 8192 bytes."""
    with open(path, "rb") as f:
        start = f.read(8192)
    return start[:2], hashlib.md5(start).hexdigest()


def header_version(path: str | Path) -> str | None:
    """The version the official rules 1-2 give the file (None for a plain `PK` file)."""
    head, md5 = read_head(path)
    if md5 in PRETRAINED_MD5:
        return PRETRAINED_MD5[md5]
    return HEAD_VERSIONS.get(head)


def sovits_version(path: str | Path, weight: Mapping[str, Any], config_version: Any) -> str:
    """The model version of a SoVITS generator file: header first, then its keys (see module doc)."""
    tagged = header_version(path)
    has_pro_keys = PRO_KEY in weight
    if tagged is not None:
        if tagged in ("v2Pro", "v2ProPlus") and not has_pro_keys:
            raise CheckpointError(path, f"is tagged as a GPT-SoVITS {tagged} file but holds a v2 model (no "
                                        f"'{PRO_KEY}'); the file is inconsistent", key=PRO_KEY)
        return tagged
    if not has_pro_keys:
        return "v2"
    if config_version in ("v2Pro", "v2ProPlus"):
        return config_version
    ups = weight.get("dec.ups.0.weight_v", weight.get("dec.ups.0.weight"))
    return "v2ProPlus" if ups is not None and ups.shape[-1] == PLUS_FIRST_KERNEL else "v2Pro"


def same_family(found: str, expected: str) -> bool:
    """v2Pro and v2ProPlus share inputs and data; v2 needs none of the speaker-verification parts."""
    pro = ("v2Pro", "v2ProPlus")
    return found == expected or (found in pro and expected in pro)
