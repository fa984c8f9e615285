"""Official GPT v2 (s1) checkpoint files <-> `voicefleet.models.gpt.GPT`.

Formats read:

* the WebUI export `<exp>-e<epoch>.ckpt`: `OrderedDict(weight=<state dict, float16>,
  config=<plain dict>, info="GPT-e<epoch>")`;
* the published pretrained `s1bert25hz-...ckpt`, which the official TTS also reads through its
  `weight` and `config` entries;
* a Lightning training checkpoint (`state_dict` + `hyper_parameters["config"]`), as long as it holds
  nothing the safe loader refuses (see `load_official_file`).

Weights are `model.*` keys of the official Lightning module. `save_gpt` writes the export layout
exactly. Key conversion is one table of prefix renames (`gpt_keymap`).
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from voicefleet.models.config import ConfigError, GPTConfig
from voicefleet.models.gpt import GPT
from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.checkpoint.keymap import KeyMap, check_state_dict, shapes_of
from voicefleet.models.checkpoint.pickle_io import load_official_file, save_official_file, to_plain

logger = logging.getLogger(__name__)

KIND = "GPT v2 (s1) weights"

# official prefix -> ours, for everything outside the transformer layers
_TOP_LEVEL_RULES = (
    ("model.bert_proj.", "bert_proj."),
    ("model.ar_text_embedding.word_embeddings.", "text_embedding."),
    ("model.ar_text_position.", "text_position."),
    ("model.ar_audio_embedding.word_embeddings.", "audio_embedding."),
    ("model.ar_audio_position.", "audio_position."),
    ("model.ar_predict_layer.", "head."),
)
# official name -> ours inside layer i (prefixes `model.h.layers.{i}.` / `layers.{i}.`)
_LAYER_RULES = (
    ("self_attn.in_proj_weight", "attn.qkv.weight"),
    ("self_attn.in_proj_bias", "attn.qkv.bias"),
    ("self_attn.out_proj.", "attn.out."),
    ("linear1.", "ffn.up."),
    ("linear2.", "ffn.down."),
    ("norm1.", "norm1."),
    ("norm2.", "norm2."),
)
_OFFICIAL_LAYER = re.compile(r"^model\.h\.layers\.(\d+)\.")
_OUR_LAYER = re.compile(r"^layers\.(\d+)\.")


def gpt_keymap(n_layer: int) -> KeyMap:
    """The official <-> voicefleet key table of a GPT with `n_layer` layers."""
    rules = list(_TOP_LEVEL_RULES)
    for i in range(n_layer):
        rules += [(f"model.h.layers.{i}.{theirs}", f"layers.{i}.{ours}") for theirs, ours in _LAYER_RULES]
    return KeyMap(rules)


def _count_layers(keys, pattern: re.Pattern) -> int:
    found = [int(m.group(1)) for k in keys if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def gpt_state_from_official(official: Mapping[str, torch.Tensor], *, n_layer: int | None = None,
                            path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Official `model.*` state dict -> ours (same tensors, same order).

    `n_layer` defaults to the number of layers the keys mention. A key no rule covers raises.
    """
    if n_layer is None:
        n_layer = _count_layers(official, _OFFICIAL_LAYER)
    return gpt_keymap(n_layer).to_ours(official, path=path)


def gpt_state_to_official(ours: Mapping[str, torch.Tensor], *, n_layer: int | None = None,
                          path: str | Path | None = None) -> OrderedDict[str, torch.Tensor]:
    """Our state dict -> official `model.*` keys (same tensors, same order)."""
    if n_layer is None:
        n_layer = _count_layers(ours, _OUR_LAYER)
    return OrderedDict(gpt_keymap(n_layer).to_official(ours, path=path))


@dataclass(frozen=True)
class GPTCheckpointInfo:
    """What a GPT file says about itself besides the weights.

    Attributes:
        info: the `info` string ("GPT-e<epoch>" for exports), None if the file has none.
        config: the full official config dict (`train`, `data`, `model`, ...), to save back with.
        layout: "export" (`weight`/`config`/`info`) or "lightning" (`state_dict`).
        dtype: dtype of the stored weights (float16 for exports).
    """

    info: str | None
    config: dict[str, Any]
    layout: str
    dtype: torch.dtype


def _describe_other_kind(obj: Any) -> str | None:
    """If `obj` looks like another GPT-SoVITS file kind, say which."""
    if not isinstance(obj, Mapping):
        return f"a {type(obj).__name__}, not a checkpoint dict"
    if {"model", "optimizer", "iteration"} <= set(obj):
        return "a SoVITS training checkpoint (G_*.pth / D_*.pth: model/optimizer/iteration)"
    weights = obj.get("weight")
    if isinstance(weights, Mapping):
        keys = list(weights)
        if any(k.startswith(("enc_p.", "dec.", "ssl_proj.", "quantizer.", "flow.", "ref_enc.")) for k in keys):
            return "a SoVITS generator (s2G) .pth"
        if any(k.startswith("discriminators.") for k in keys):
            return "a SoVITS discriminator (s2D) .pth"
    return None


def _unpack(obj: Any, path: Path) -> tuple[Mapping[str, torch.Tensor], dict[str, Any] | None, str | None, str]:
    other = _describe_other_kind(obj)
    if other is not None:
        raise CheckpointError(path, f"expected {KIND} (.ckpt with 'weight' and 'config'), but this looks like {other}")
    if isinstance(obj.get("weight"), Mapping):
        config = obj.get("config")
        info = obj.get("info")
        return obj["weight"], None if config is None else to_plain(config), info, "export"
    if isinstance(obj.get("state_dict"), Mapping):
        hyper = obj.get("hyper_parameters") or {}
        config = hyper.get("config") if isinstance(hyper, Mapping) else None
        return obj["state_dict"], None if config is None else to_plain(config), None, "lightning"
    raise CheckpointError(path, f"expected {KIND}: a dict with 'weight' (export) or 'state_dict' (Lightning); "
                                f"found top-level keys {sorted(map(str, obj))[:10]}")


def load_gpt(path: str | Path, *, config: GPTConfig | None = None) -> tuple[GPT, GPTConfig, GPTCheckpointInfo]:
    """Load an official (or voicefleet-written) GPT `.ckpt` into a float32 `GPT` in eval mode.

    The model is built from the file's `config['model']` (or `config` when the file has none);
    every key and shape is checked before any weight is copied. Raises `CheckpointError` naming the
    file (and key) for an unreadable file, another kind of file, or mismatched keys/shapes.
    """
    path = Path(path)
    weights, file_config, info, layout = _unpack(load_official_file(path), path)
    if config is None:
        if file_config is None or not isinstance(file_config.get("model"), Mapping):
            raise CheckpointError(path, "has no config['model'] section; pass config= to say how to build the model")
        try:
            config = GPTConfig.from_official(file_config["model"])
        except (ConfigError, TypeError) as e:
            raise CheckpointError(path, f"config['model'] cannot build a GPT: {e}") from None
    if not any(k.startswith("model.") for k in weights):
        raise CheckpointError(path, f"expected {KIND} with 'model.*' keys; found e.g. {list(weights)[:3]}")
    try:
        model = GPT(config)
    except ConfigError as e:
        raise CheckpointError(path, f"config['model'] cannot build a GPT: {e}") from None
    # check in the file's own key names, so errors name what the user can find in the file
    expected = gpt_keymap(config.n_layer).to_official(shapes_of(model))
    check_state_dict(weights, expected, path=path, kind=KIND)
    non_float = [k for k, v in weights.items() if not v.is_floating_point()]
    if non_float:
        raise CheckpointError(path, f"{KIND}: expected floating-point weights, found {weights[non_float[0]].dtype}",
                              key=non_float[0])
    model.load_state_dict(gpt_state_from_official(weights, n_layer=config.n_layer, path=path), strict=True)
    model.eval()
    dtypes = {v.dtype for v in weights.values()}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    logger.info("loaded %s from %s (%s, %s, info=%r)", KIND, path, layout, dtype, info)
    return model, config, GPTCheckpointInfo(info=info, config=file_config or {"model": config.to_official()},
                                            layout=layout, dtype=dtype)


def save_gpt(model: GPT, config: Mapping[str, Any], path: str | Path, info: str, *,
             overwrite: bool = False) -> Path:
    """Write `model` in the official GPT export layout, loadable by the official TTS unchanged.

    The file is `OrderedDict(weight=OrderedDict(model.* -> float16, official order), config=<plain
    dict>, info=info)`; official exports use `info = "GPT-e<epoch>"`. `config` is the full
    official config dict; its `model` section must describe `model`.
    """
    config = to_plain(config)
    if not isinstance(config.get("model"), Mapping):
        raise ValueError("config needs the official 'model' section (and normally 'train', 'data', ...)")
    described = GPTConfig.from_official(config["model"])
    if described != model.config:
        raise ValueError(f"config['model'] describes {described}, but the model is {model.config}")
    state = {k: v.detach().to(device="cpu", dtype=torch.float16).contiguous() for k, v in model.state_dict().items()}
    weight = gpt_state_to_official(state, n_layer=model.config.n_layer, path=path)
    payload = OrderedDict([("weight", weight), ("config", config), ("info", info)])
    return save_official_file(payload, path, overwrite=overwrite)
