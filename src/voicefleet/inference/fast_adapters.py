"""LoRA adapters on the reduced-precision CPU path (`voicefleet.inference.fast`), unmerged.

The fast modules are built once from the backbone and shared by every adapter voice; a request
adds its voice's low-rank update on top of whatever the fast module computes, never changing it:

    y = fast_base(x) + scaling * B(A(x))

* Linears the fast GPT calls as modules (the prompt pass) carry the ordinary adapter hooks
  (`voicefleet.models.adapters.attach_all(..., like=fp32_gpt)`): the update runs in fp32 on the
  layer's fp32 input and is added to its fp32 output.
* The lean decoding step (`Int8DecodingStep`) calls no modules: it takes the active GPT adapter
  when the decode starts (`GptStepUpdates`) and adds each linear's update itself, in the native
  step (fp32, inside the same call) or after each eager product (one `addmm`).
* The bf16 decoder (`Bf16Decoder`) likewise adds each adapted convolution's update itself
  (`decoder_updates`): A as a bf16 convolution with the layer's kernel, stride, padding and
  dilation into `rank` channels, then B as a 1x1 convolution, on the same channels-last tensors.
  Merging instead would rebuild every adapted kernel (out x in x kernel each) per request; the
  unmerged update costs about rank / channels of the layer's own product.

Only one adapter applies to every row of a call (`voicefleet.models.adapters.active_adapter`): a
voice's requests are decoded together, never with another voice's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from voicefleet.models.adapters import Adapter, LoRALayer

# the decoding step's linears per layer, in the order the native step reads them
STEP_LINEARS = ("attn.qkv", "attn.out", "ffn.up", "ffn.down")


@dataclass(frozen=True)
class RowsUpdate:
    """One linear's low-rank update in the layout the decoding step reads.

    a: (rank, in) float32; bt: (rank, out) float32, B transposed with the scaling folded in; both
    contiguous (the native step reads them in place).
    """

    a: Tensor
    bt: Tensor

    @classmethod
    def of(cls, layer: LoRALayer) -> "RowsUpdate":
        a = layer.lora_A.detach().float().contiguous()
        bt = (layer.lora_B.detach().float().t() * layer.scaling).contiguous()
        return cls(a, bt)

    @property
    def rank(self) -> int:
        return self.a.shape[0]

    def add_(self, rows: Tensor, out: Tensor) -> Tensor:
        """out (n, out) += update of rows (n, in); returns out."""
        return out.addmm_(rows.mm(self.a.t()), self.bt)


def gpt_step_updates(adapter: Adapter | None, n_layers: int) -> list[tuple[RowsUpdate | None, ...]] | None:
    """Per GPT layer, the updates of its (qkv, out, up, down) linears (None: not adapted), or
    None when `adapter` adapts none of them."""
    if adapter is None:
        return None
    updates = []
    for i in range(n_layers):
        layers = [adapter.layer(f"layers.{i}.{name}") for name in STEP_LINEARS]
        updates.append(tuple(RowsUpdate.of(layer) if layer is not None else None for layer in layers))
    return updates if any(u is not None for layer in updates for u in layer) else None


@dataclass(frozen=True)
class ConvUpdate:
    """One convolution's low-rank update as 2-d bf16 kernels of height 1 for channels-last inputs:
    a (rank, in, 1, kernel) and b (out, rank, 1, 1), the scaling folded into b."""

    a: Tensor
    b: Tensor

    @classmethod
    def of(cls, layer: LoRALayer) -> "ConvUpdate":
        a = layer.lora_A.detach().to(torch.bfloat16).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        b = (layer.lora_B.detach().float() * layer.scaling).to(torch.bfloat16).unsqueeze(2)
        return cls(a, b.contiguous(memory_format=torch.channels_last))

    def __call__(self, x: Tensor, stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int]) -> Tensor:
        """The update of bf16 channels-last x (batch, in, 1, time) -> (batch, out, 1, time_out)."""
        hidden = torch.nn.functional.conv2d(x, self.a, None, stride, padding, dilation)
        return torch.nn.functional.conv2d(hidden, self.b)


def decoder_updates(adapter: Adapter | None, names: list[str]) -> dict[str, ConvUpdate]:
    """The updates of the decoder convolutions `names` (full SoVITS module names) that `adapter` adapts."""
    if adapter is None:
        return {}
    found = {name: adapter.layer(name) for name in names}
    return {name: ConvUpdate.of(layer) for name, layer in found.items() if layer is not None}
