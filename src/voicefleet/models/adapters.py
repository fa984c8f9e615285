"""LoRA adapters over a frozen GPT or SoVITS backbone, and their file format.

An adapter adds a low-rank update to chosen linear and 1-d convolution layers of one stage:

    y = base(x) + scaling * B(A(x)),    scaling = alpha / rank

For a linear layer A is (rank, in) and B is (out, rank). For a convolution A is a convolution
with the base's kernel size, stride, padding and dilation into `rank` channels and B a 1x1
convolution back to `out`, so the update equals adding `scaling * B @ A` to the base kernel and
merging is exact. B starts at zero, so a fresh adapter leaves the backbone's output unchanged.

The backbone is never modified: forward hooks on the target layers add the update of whichever
adapter is active in the calling context (`use_adapter`), so one backbone in memory serves many
adapters, concurrently from several threads, and its state dict, files and loaders stay as they
are. `use_adapter` also takes one adapter per batch row (None = the bare backbone for that row).

Weight-normed convolutions (the flow's WaveNets, the decoder's residual blocks) are handled
through their effective weight: the update applies to the output, and `merge_` writes the merged
kernel back through the parametrization (new `g` and `v`), so a merged model keeps its official
layout. `base_fingerprint` hashes a stage's effective weights; an adapter records the fingerprint
of the backbone it was trained on and `check_base` refuses any other.

File format (`save_adapter` / `load_adapter`): one safetensors file per stage holding only the A
and B tensors (`<layer>.lora_A`, `<layer>.lora_B`, float16 like the official voice files) and
metadata: format, stage, rank, alpha, targets and the base fingerprint.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from voicefleet.models.adapter_config import (ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION, ADAPTER_SUFFIX, DEFAULT_ALPHA,
                                              DEFAULT_RANK, DEFAULT_TARGETS, TARGET_GROUPS, AdapterError, AdapterSpec,
                                              AdapterStage, read_adapter_metadata, spec_from_metadata)

__all__ = ["DEFAULT_ALPHA", "DEFAULT_RANK", "DEFAULT_TARGETS", "TARGET_GROUPS", "AdapterError", "AdapterSpec",
           "AdapterStage", "Adapter", "AdapterFile", "LoRALayer", "ADAPTER_MODULE", "attach", "detach",
           "use_adapter", "adapted_iter", "active_adapter", "attach_all", "merge_", "base_fingerprint_of", "check_base", "save_adapter", "load_adapter",
           "is_adapter_file", "target_layers", "install_for_training", "adapter_of"]

FORMAT, FORMAT_VERSION, SUFFIX = ADAPTER_FORMAT, ADAPTER_FORMAT_VERSION, ADAPTER_SUFFIX
# The attribute name under which a training run registers its adapter inside the model, so that
# DDP synchronises the adapter's gradients and checkpoints carry it; never part of a fingerprint.
ADAPTER_MODULE = "lora"
# SoVITS modules a voice file does not need for synthesis; left out of the fingerprint so that a
# backbone loaded for serving (posterior encoder dropped) matches the one trained on.
_UNFINGERPRINTED = {"sovits": ("posterior_encoder.", f"{ADAPTER_MODULE}."), "gpt": (f"{ADAPTER_MODULE}.",)}


def _is_target_kind(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv1d) and module.groups == 1 and module.padding_mode == "zeros"


def target_layers(model: nn.Module, spec: AdapterSpec) -> dict[str, nn.Module]:
    """The layers of `model` an adapter of `spec` adapts, by module name, in model order."""
    pattern = re.compile("|".join(f"(?:{TARGET_GROUPS[spec.stage][t]})" for t in spec.targets))
    found = {name: m for name, m in model.named_modules()
             if name and "parametrizations" not in name and pattern.fullmatch(name) and _is_target_kind(m)}
    if not found:
        raise AdapterError(f"no {spec.stage} layers match the adapter targets {', '.join(spec.targets)}: "
                           "is this the right stage's model?")
    return found


class LoRALayer(nn.Module):
    """The low-rank update of one linear or 1-d convolution layer (A then B, times `scaling`)."""

    def __init__(self, base: nn.Module, rank: int, scaling: float, device: torch.device | str | None = None):
        super().__init__()
        self.scaling = scaling
        self.is_conv = isinstance(base, nn.Conv1d)
        device = base.weight.device if device is None else device  # `base` may hold shapes only (on "meta")
        if self.is_conv:
            out_ch, in_ch, kernel = base.weight.shape
            self.conv_args = {"stride": base.stride, "padding": base.padding, "dilation": base.dilation}
            self.lora_A = nn.Parameter(torch.empty(rank, in_ch, kernel, device=device))
            self.lora_B = nn.Parameter(torch.zeros(out_ch, rank, 1, device=device))
        else:
            out_ch, in_ch = base.weight.shape
            self.lora_A = nn.Parameter(torch.empty(rank, in_ch, device=device))
            self.lora_B = nn.Parameter(torch.zeros(out_ch, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)  # as nn.Linear's weights (and peft's A)

    def forward(self, x: Tensor) -> Tensor:
        """The update for input x: (batch, ..., in) for a linear layer, (batch, in, frames) for a conv."""
        a, b = self.lora_A.to(x.dtype), self.lora_B.to(x.dtype)
        if self.is_conv:
            return F.conv1d(F.conv1d(x, a, **self.conv_args), b) * self.scaling
        return F.linear(F.linear(x, a), b) * self.scaling

    def delta_weight(self) -> Tensor:
        """The update as a kernel to add to the base weight: (out, in) or (out, in, kernel)."""
        if self.is_conv:
            return torch.einsum("or,rik->oik", self.lora_B[..., 0], self.lora_A) * self.scaling
        return (self.lora_B @ self.lora_A) * self.scaling


class Adapter(nn.Module):
    """One voice's LoRA layers for one stage, keyed by the adapted layer's module name.

    Its parameters are the only trainable ones of an adapter run; the base model stays frozen.
    """

    def __init__(self, spec: AdapterSpec, layers: dict[str, LoRALayer], base_fingerprint: str):
        super().__init__()
        self.spec = spec
        self.base_fingerprint = base_fingerprint
        self.names = list(layers)
        # ModuleDict keys may not contain dots
        self.layers = nn.ModuleDict({_key(name): layer for name, layer in layers.items()})

    @classmethod
    def create(cls, model: nn.Module, spec: AdapterSpec, base_fingerprint: str | None = None) -> "Adapter":
        """A fresh adapter (B = 0: the identity) for `model`'s target layers."""
        layers = {name: LoRALayer(m, spec.rank, spec.scaling) for name, m in target_layers(model, spec).items()}
        return cls(spec, layers, base_fingerprint or base_fingerprint_of(model, spec.stage))

    def layer(self, name: str) -> LoRALayer | None:
        key = _key(name)
        return self.layers[key] if key in self.layers else None

    def items(self) -> Iterator[tuple[str, LoRALayer]]:
        for name in self.names:
            yield name, self.layers[_key(name)]

    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())


def _key(name: str) -> str:
    return name.replace(".", "__")


# --------------------------------------------------------------------------- applying adapters

# What the hooks apply in this thread / task: a tuple of selections, each one adapter or one
# adapter (or None) per batch row. A layer takes the first selection of its own stage, so the
# adapters of a voice's two stages are active together.
_ACTIVE: contextvars.ContextVar[tuple] = contextvars.ContextVar("voicefleet_active_adapters", default=())
_HOOKED = "_voicefleet_lora_hook"


def _per_row(rows: tuple, stage: str, name: str, x: Tensor, output: Tensor) -> Tensor:
    if len(rows) != x.shape[0]:
        raise AdapterError(f"{len(rows)} per-row adapters for a batch of {x.shape[0]} rows at {name}")
    out = output.clone()
    by_layer: dict[int, tuple[LoRALayer, list[int]]] = {}
    for row, adapter in enumerate(rows):
        layer = adapter.layer(name) if adapter is not None and adapter.spec.stage == stage else None
        if layer is not None:
            by_layer.setdefault(id(layer), (layer, []))[1].append(row)
    for layer, index in by_layer.values():
        rows_t = torch.tensor(index, device=x.device)
        out.index_add_(0, rows_t, layer(x.index_select(0, rows_t)))
    return out


def _hook(stage: str, name: str):
    def hook(module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        for selection in _ACTIVE.get():
            if isinstance(selection, Adapter):
                if selection.spec.stage != stage:
                    continue
                layer = selection.layer(name)
                return output if layer is None else output + layer(args[0])
            if any(a is not None and a.spec.stage == stage for a in selection):
                return _per_row(selection, stage, name, args[0], output)
        return output

    return hook


def attach(model: nn.Module, spec_or_adapter: AdapterSpec | Adapter, *, like: nn.Module | None = None) -> nn.Module:
    """Install the adapter hooks on `model`'s target layers (once per layer; idempotent).

    Hooks do nothing unless an adapter of the model's stage is active (`use_adapter`), so a model
    with hooks attached still computes the bare backbone everywhere else. Returns `model`.

    With `like` (a spec only), the layers are those `like` has as targets, hooked in `model` by
    name: `model` is a reduced-precision copy of `like` whose layers are no longer `nn.Linear` /
    `nn.Conv1d` (`voicefleet.inference.fast`). Names `model` lacks are left to the copy, which
    then applies the active adapter itself (its bf16 decoder does).
    """
    if like is not None:
        if isinstance(spec_or_adapter, Adapter):
            raise TypeError("attach(..., like=) takes a spec, not an adapter")
        modules = dict(model.named_modules())
        stage = spec_or_adapter.stage
        layers = {n: modules[n] for n in target_layers(like, spec_or_adapter) if n in modules}
    elif isinstance(spec_or_adapter, Adapter):
        stage, names = spec_or_adapter.spec.stage, spec_or_adapter.names
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise AdapterError(f"the model has no layer {missing[0]!r} that the adapter adapts "
                               f"({len(missing)} missing): not a {stage} model of this shape")
        layers = {n: modules[n] for n in names}
    else:
        stage, layers = spec_or_adapter.stage, target_layers(model, spec_or_adapter)
    for name, module in layers.items():
        if not hasattr(module, _HOOKED):
            setattr(module, _HOOKED, module.register_forward_hook(_hook(stage, name)))
    return model


def attach_all(model: nn.Module, stage: AdapterStage, *, like: nn.Module | None = None) -> nn.Module:
    """Hooks on every layer any adapter of `stage` may target (a backbone serving many adapters);
    `like`: as in `attach`."""
    return attach(model, AdapterSpec(stage, targets=tuple(TARGET_GROUPS[stage])), like=like)


def detach(model: nn.Module) -> nn.Module:
    """Remove every adapter hook from `model`."""
    for module in model.modules():
        handle = module.__dict__.pop(_HOOKED, None)
        if handle is not None:
            handle.remove()
    return model


@contextlib.contextmanager
def use_adapter(*selections: Adapter | Sequence[Adapter | None] | None):
    """Within the block (this thread / asyncio task only), hooked layers add the update of the
    given adapter of their stage; a sequence gives one adapter per batch row (None: the bare
    backbone for that row). Several selections apply together (e.g. a voice's GPT and SoVITS
    adapters); None is skipped. Never hold it across a `yield`: use `adapted_iter`."""
    active = tuple(s if isinstance(s, Adapter) else tuple(s) for s in selections if s is not None)
    token = _ACTIVE.set(active)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def adapted_iter(iterator: Iterator, *selections: Adapter | Sequence[Adapter | None] | None) -> Iterator:
    """`iterator`'s items, each computed with the adapters active (and inactive between items, so
    that whichever thread pulls the next item gets them and nothing leaks to the consumer)."""
    while True:
        with use_adapter(*selections):
            try:
                item = next(iterator)
            except StopIteration as done:
                return done.value
        yield item


def active_adapters() -> tuple:
    return _ACTIVE.get()


def active_adapter(stage: AdapterStage) -> Adapter | None:
    """The adapter the hooks of a `stage` layer would apply in this context, for code that applies
    it itself rather than through hooks (the reduced-precision decoding step and decoder). A
    per-row selection counts when every row names the same adapter; one that mixes adapters (or
    adapted and bare rows) raises `AdapterError`, since such callers apply one update to all rows."""
    for selection in _ACTIVE.get():
        if isinstance(selection, Adapter):
            if selection.spec.stage == stage:
                return selection
            continue
        rows = [a if a is not None and a.spec.stage == stage else None for a in selection]
        if all(a is None for a in rows):
            continue
        if any(a is not rows[0] for a in rows):
            raise AdapterError(f"different {stage} adapters per row, where one update applies to every row")
        return rows[0]
    return None


@torch.no_grad()
def merge_(model: nn.Module, adapter: Adapter) -> nn.Module:
    """Add the adapter's updates into `model`'s weights, in place (weight-normed layers get new
    `g` and `v`); the result computes what the backbone plus the active adapter computed."""
    modules = dict(model.named_modules())
    for name, layer in adapter.items():
        if name not in modules:
            raise AdapterError(f"the model has no layer {name!r} that the adapter adapts")
        module = modules[name]
        merged = module.weight + layer.delta_weight().to(module.weight)
        if parametrize.is_parametrized(module, "weight"):
            module.weight = merged  # through the parametrization's right_inverse: new g, v
        else:
            module.weight.copy_(merged)
    return model


def install_for_training(model: nn.Module, spec: AdapterSpec) -> Adapter:
    """Freeze `model`, give it a fresh adapter (hooked, and registered as `model.lora` so that DDP
    synchronises its gradients and checkpoints carry it) and return the adapter, the only
    trainable part. The hooks apply it inside `use_adapter(adapter)`."""
    adapter = Adapter.create(model, spec)
    model.requires_grad_(False)
    attach(model, adapter)
    model.add_module(ADAPTER_MODULE, adapter)
    adapter.requires_grad_(True)
    return adapter


def adapter_of(model: nn.Module) -> Adapter | None:
    """The adapter `install_for_training` registered in `model`, if any."""
    found = getattr(model, ADAPTER_MODULE, None)
    return found if isinstance(found, Adapter) else None


# --------------------------------------------------------------------------- base fingerprint


def effective_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The state dict with each parametrized weight (weight norm) replaced by the weight it computes,
    so a weight-normed model and its folded copy give the same tensors."""
    out: dict[str, Tensor] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if ".parametrizations." in name:
            owner, rest = name.split(".parametrizations.", 1)
            tensor_name = rest.split(".", 1)[0]
            key = f"{owner}.{tensor_name}"
            if key not in out:
                module = model.get_submodule(owner)
                with torch.no_grad():
                    out[key] = getattr(module, tensor_name)
            continue
        out[name] = tensor
    return out


@torch.no_grad()
def base_fingerprint_of(model: nn.Module, stage: AdapterStage) -> str:
    """sha256 over a stage's effective weights (names, shapes and float32 values), as 'sha256:<hex>'."""
    skip = _UNFINGERPRINTED[stage]
    digest = hashlib.sha256()
    for name, tensor in sorted(effective_tensors(model).items()):
        if name.startswith(skip):
            continue
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def check_base(adapter: Adapter | "AdapterFile", fingerprint: str, *, what: str = "adapter") -> None:
    """Refuse to apply an adapter to a base other than the one it was trained on."""
    if adapter.base_fingerprint != fingerprint:
        raise AdapterError(
            f"{what} was trained on a different {adapter.spec.stage} base (fingerprint "
            f"{adapter.base_fingerprint[:19]}...) than the one loaded ({fingerprint[:19]}...): "
            "use the pretrained weights it was trained on, or train it again on these")


# --------------------------------------------------------------------------- file format


@dataclass
class AdapterFile:
    """An adapter as read from disk, before it is bound to a model."""

    spec: AdapterSpec
    base_fingerprint: str
    tensors: dict[str, Tensor] = field(repr=False)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def build(self, model: nn.Module, *, fingerprint: str | None = None, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> Adapter:
        """An `Adapter` for `model` (checked against its fingerprint, computed unless given), on
        `device` (default: the model's; give one when `model` holds shapes only, on "meta")."""
        check_base(self, fingerprint or base_fingerprint_of(model, self.spec.stage))
        modules = dict(model.named_modules())
        names = list(dict.fromkeys(k.rsplit(".", 1)[0] for k in self.tensors))
        layers: dict[str, LoRALayer] = {}
        for name in names:
            if name not in modules or not _is_target_kind(modules[name]):
                raise AdapterError(f"the adapter adapts {name!r}, which this {self.spec.stage} model lacks")
            layer = LoRALayer(modules[name], self.spec.rank, self.spec.scaling, device)
            for part in ("lora_A", "lora_B"):
                tensor = self.tensors.get(f"{name}.{part}")
                target = getattr(layer, part)
                if tensor is None or tuple(tensor.shape) != tuple(target.shape):
                    raise AdapterError(f"adapter tensor {name}.{part} is "
                                       f"{'missing' if tensor is None else tuple(tensor.shape)}, "
                                       f"expected {tuple(target.shape)}")
                with torch.no_grad():
                    target.copy_(tensor.to(target))
            layers[name] = layer.to(dtype).requires_grad_(False)
        return Adapter(self.spec, layers, self.base_fingerprint)


def adapter_tensors(adapter: Adapter, dtype: torch.dtype = torch.float16) -> dict[str, Tensor]:
    return {f"{name}.{part}": getattr(layer, part).detach().to("cpu", dtype).contiguous()
            for name, layer in adapter.items() for part in ("lora_A", "lora_B")}


def save_adapter(adapter: Adapter, path: str | Path, *, dtype: torch.dtype = torch.float16) -> Path:
    """Write the adapter (tensors in `dtype`, float16 by default) as one safetensors file, staged
    beside `path` and renamed into place."""
    from safetensors.torch import save_file

    path = Path(path)
    spec = adapter.spec
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "stage": spec.stage,
                "rank": str(spec.rank), "alpha": repr(float(spec.alpha)), "targets": json.dumps(list(spec.targets)),
                "base_fingerprint": adapter.base_fingerprint}
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.partial")
    save_file(adapter_tensors(adapter, dtype), str(staged), metadata=metadata)
    staged.replace(path)
    return path


def load_adapter(path: str | Path) -> AdapterFile:
    """Read an adapter file (no code runs: safetensors holds tensors and strings only)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"adapter file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise AdapterError(f"{path} is not a readable adapter file: {e}") from None
    if meta.get("format") != FORMAT:
        raise AdapterError(f"{path} is not a voicefleet LoRA adapter (format {meta.get('format')!r})")
    if int(meta.get("format_version", "0")) > FORMAT_VERSION:
        raise AdapterError(f"{path} has adapter format version {meta['format_version']}; this voicefleet reads "
                           f"up to {FORMAT_VERSION}")
    try:
        spec = spec_from_metadata(meta)
        fingerprint = meta["base_fingerprint"]
    except (KeyError, AdapterError) as e:
        raise AdapterError(f"{path} has incomplete adapter metadata: {e}") from None
    return AdapterFile(spec, fingerprint, tensors)


def is_adapter_file(path: str | Path) -> bool:
    """True for a safetensors file whose metadata names the adapter format (reads the header only)."""
    return read_adapter_metadata(path) is not None
