"""Reduced-precision CPU inference for GPT and SoVITS (opt-in; fp32 stays the reference path).

Everything here is built, never patched: each builder (`quantize_gpt`, `fast_generator`,
`fast_sovits`, `fast_bert`, `optimize_for_cpu_inference`, and the `from_fp32` class methods of
the modules below) takes fp32 modules and returns new ones; the fp32 modules keep their classes,
weights and outputs, and stay usable.

What is changed and why (measured in `benchmarks/inference.py`, results in RESULTS.md):

* GPT linears keep an int8 copy of each weight (symmetric, one scale per output channel; one
  quantisation, `quantize_int8`, whichever kernel reads it) and a bf16 copy. A decoding step multiplies one row per sequence: that is memory-bound, so reading
  int8 weights is about 4x faster than fp32 through voicefleet's native kernel (fp32 rows; about
  2x faster than PyTorch's weight-only int8 kernel, which is used where the native one cannot be
  built). Many rows (the prompt pass, big batches) are compute-bound: those use the bf16 copy
  (AVX512-BF16 doubles the matrix rate). Activations stay fp32 between layers (LayerNorm, residuals, attention), only the
  matrix inputs of bf16 products are rounded to bf16.
* Decoding steps of the quantised GPT (`fast_generator`) run through `Int8DecodingStep`, which
  issues the fewest tensor operations it can (one stacked fp32 KV cache, scores scaled inside
  `baddbmm`, functional LayerNorm, no module calls): at one query per row the eager step's fixed
  cost per operation was about a third of a step.
* BERT (Chinese text features, computed per fragment) runs its linears in bf16 (`fast_bert`).
* bf16 weights are prepacked once into oneDNN's blocked layout (`pack_bf16_weight`) where this
  PyTorch build can: a plain bf16 `F.linear` reorders its weight on every call, which at the few
  rows of a BERT fragment costs about as much as the product itself. The packed product is
  checked bit-identical to `F.linear` at packing time, else the plain one is kept.
* The HiFi-GAN decoder (about 94% of SoVITS time) runs its convolutions in bf16, on
  channels-last tensors as 2-d convolutions of height 1 (`Bf16Decoder`); everything before it
  (text encoder, flow) stays fp32, and the last conv and tanh run in fp32.

The CPU needs AVX512-BF16 or AMX for the bf16 matrix rate; elsewhere bf16 can be slower than
fp32, so `cpu_supports_bf16()` is checked by callers that pick the mode automatically.
"""

from __future__ import annotations

import copy
import functools
import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from voicefleet.inference.fast_adapters import decoder_updates, gpt_step_updates
from voicefleet.inference.generation import CACHE_BLOCK, LayerKVCache, TokenGenerator
from voicefleet.inference.native import FP16_MAX, NativeLayer, gpt_step_kernel, int8_rows_kernel
from voicefleet.models.adapters import active_adapter
from voicefleet.models.features import BertFeatures
from voicefleet.models.gpt import GPT
from voicefleet.models.modules.hifigan import LRELU_SLOPE, HiFiGANGenerator
from voicefleet.models.sovits import SoVITS

logger = logging.getLogger(__name__)

INT8_MAX_ROWS = 12  # up to this many rows per call the int8 weight-only kernel is the faster one (measured: 1-2 threads)


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 dot products (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


_PACK_ROWS = 64  # rows oneDNN is told to expect when it picks the packed layout (any count works)


@functools.lru_cache(maxsize=1)
def packed_linear_available() -> bool:
    """True when this PyTorch build has oneDNN's prepacked linear (x86 builds with mkldnn)."""
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
                and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


class PackedBf16Weight:
    """A bf16 linear weight reordered once into oneDNN's blocked layout.

    ``packed(rows, bias)`` is ``F.linear(rows, weight, bias)`` for bf16 ``(n, in)`` rows (bf16
    out) without the per-call weight reorder. Immutable, so copies share it.
    """

    def __init__(self, weight: Tensor):
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), _PACK_ROWS)

    def __call__(self, rows: Tensor, bias: Tensor | None = None) -> Tensor:
        return torch.ops.mkldnn._linear_pointwise(rows, self.packed, bias, "none", [], "")

    def __deepcopy__(self, memo) -> "PackedBf16Weight":
        return self


def pack_bf16_weight(weight: Tensor, bias: Tensor | None = None) -> PackedBf16Weight | None:
    """`weight` (bf16, ``(out, in)``) prepacked, or None where this build has no packed linear or
    its results on probe rows are not bit-identical to `F.linear` with the plain weight (and
    `bias`, bf16 or None)."""
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or not packed_linear_available():
        return None
    try:
        packed = PackedBf16Weight(weight)
        gen = torch.Generator().manual_seed(0)
        for rows in (1, 13, 70):
            x = torch.randn(rows, weight.shape[1], generator=gen).to(torch.bfloat16)
            if not torch.equal(packed(x, bias), F.linear(x, weight, bias)):
                logger.warning("prepacked bf16 linear differs from F.linear here; using the plain one")
                return None
    except RuntimeError as err:
        logger.warning("no prepacked bf16 linear (%s); using the plain one", err)
        return None
    return packed


class PackedBf16Linear(nn.Module):
    """A frozen bf16 linear with its weight prepacked (`PackedBf16Weight`): bf16 output equal to
    what bf16 autocast's `F.linear` gives for the same input, bit for bit."""

    def __init__(self, linear: nn.Linear, packed: PackedBf16Weight):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = packed
        bias = linear.bias.detach().to(torch.bfloat16) if linear.bias is not None else None
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        return self.packed(rows, self.bias).view(*x.shape[:-1], self.out_features)


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric per-output-channel int8 quantisation: weight (out, in) ~ scales[:, None] * q.

    Returns q (out, in) int8 in [-127, 127], contiguous, and scales (out,) float32: the only
    quantisation of the fast path. PyTorch's weight-only kernel reads q as it is; the native
    kernels (`voicefleet.inference.native`, the int8 product and the whole decoding step) read the
    same values reordered once into their blocked layout.
    """
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q.contiguous(), scales.contiguous()


class Int8Bf16Linear(nn.Module):
    """A frozen linear layer for inference: int8 weights for few rows, bf16 weights for many.

    Output is float32. The int8 weight and its scales come from `quantize_int8`, and one copy is
    kept, in the layout of the kernel that reads it. Few rows go through the native kernel
    (`voicefleet.inference.native`: fp32 rows, fp32 scales, weights read at memory speed;
    `weight_packed`) when it is available, else through PyTorch's weight-only int8 kernel (bf16
    rows, scales rounded to bf16; `weight_int8`); many rows through a bf16 product (with the
    weight prepacked where this build allows, `pack_bf16_weight`). Build one with `from_fp32`.
    """

    def __init__(self, weight_int8: Tensor, scales: Tensor, weight_bf16: Tensor, bias: Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight_int8.shape
        kernel = int8_rows_kernel()
        self.native = kernel is not None and kernel.supports(self.out_features, self.in_features)
        self.register_buffer("scales", scales)
        if self.native:
            self.register_buffer("weight_packed", kernel.pack(weight_int8))
        else:
            self.register_buffer("weight_int8", weight_int8)
            # PyTorch's int8 kernel takes its scales in the dtype of its rows
            self.register_buffer("scales_bf16", scales.to(torch.bfloat16), persistent=False)
        self.packed_bf16 = pack_bf16_weight(weight_bf16)
        if self.packed_bf16 is None:
            self.register_buffer("weight_bf16", weight_bf16)
        self.register_buffer("bias", bias)

    @classmethod
    def from_fp32(cls, linear: nn.Linear) -> "Int8Bf16Linear":
        """A new layer from `linear`'s weights (`linear` itself is not changed)."""
        q, scales = quantize_int8(linear.weight)
        bias = linear.bias.detach().float().clone() if linear.bias is not None else None
        return cls(q, scales, linear.weight.detach().to(torch.bfloat16), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows(x.reshape(-1, self.in_features)).view(*x.shape[:-1], self.out_features)

    def rows(self, rows: Tensor) -> Tensor:
        """(rows, in) -> (rows, out) float32, without reshapes (the decoding step's entry point)."""
        if rows.shape[0] <= INT8_MAX_ROWS:
            if self.native:
                return int8_rows_kernel()(rows, self.weight_packed, self.out_features, self.scales, self.bias)
            rows = rows.to(torch.bfloat16).contiguous()  # the int8 kernel needs a contiguous last dimension
            y = torch._weight_int8pack_mm(rows, self.weight_int8, self.scales_bf16)
        else:
            rows = rows.to(torch.bfloat16)
            y = self.packed_bf16(rows) if self.packed_bf16 is not None else F.linear(rows, self.weight_bf16)
        return y.float() if self.bias is None else self.bias + y  # the add converts to fp32


class StackedKVCache:
    """Keys and values of every layer in one tensor (layers, 2, batch, heads, capacity, head_dim),
    fp32 by default (fp16 for the native step, clamped to fp16's range).

    Filled up to `length`; grows in blocks. Per-layer 3-d views (batch * heads, capacity, head_dim)
    are kept ready so that a decoding step issues no indexing of its own.
    """

    def __init__(self, layer_caches: list[LayerKVCache], dtype: torch.dtype = torch.float32):
        first = layer_caches[0]
        self.length = first.length
        batch, heads, _, head_dim = first.keys.shape
        self.kv = first.keys.new_empty(len(layer_caches), 2, batch, heads, self.length + CACHE_BLOCK, head_dim,
                                       dtype=dtype)
        limit = FP16_MAX if dtype == torch.float16 else None
        for i, c in enumerate(layer_caches):
            for j, part in enumerate((c.keys, c.values)):
                part = part[:, :, :self.length]
                self.kv[i, j, :, :, :self.length] = part.clamp(-limit, limit) if limit else part
        self._views()

    def _views(self) -> None:
        layers, _, batch, heads, capacity, head_dim = self.kv.shape
        self.keys = [self.kv[i, 0].view(batch * heads, capacity, head_dim) for i in range(layers)]
        self.values = [self.kv[i, 1].view(batch * heads, capacity, head_dim) for i in range(layers)]

    def advance(self) -> None:
        """Make room for one more position (index `length - 1` afterwards)."""
        if self.length == self.kv.shape[4]:
            grown = self.kv.new_empty(*self.kv.shape[:4], self.length + CACHE_BLOCK, self.kv.shape[5])
            grown[:, :, :, :, :self.length] = self.kv
            self.kv = grown
            self._views()
        self.length += 1

    def newest(self) -> list[Tensor]:
        """Per layer, the (2, batch, heads, head_dim) view of the newest position."""
        return [layer.select(3, self.length - 1) for layer in self.kv]

    def keep_rows(self, rows: Tensor) -> None:
        self.kv = self.kv.index_select(2, rows)
        self._views()


class Int8DecodingStep:
    """The one-token decoding step of a quantised GPT with as few operations as possible.

    With the native library (`voicefleet.inference.native`) the whole step, every layer, is one
    native call over the same int8 weights and fp32 activations, with the stacked cache in fp16
    (attention over a long cache is bound by reading it; scores and sums stay fp32). Without it, the step is eager PyTorch with the fewest tensor operations it can issue: at one query per
    row a step is bound by reading the int8 weights and by the fixed cost of each operation, so it
    calls the int8 kernel, adds biases while converting to fp32, scales attention scores inside
    `baddbmm` and calls LayerNorm functionally, with no module calls, reshapes of the cache or
    masks built per layer. Numerics are those of the quantised layers either way.

    The GPT adapter active when the step is built (an adapter voice's decode,
    `voicefleet.models.adapters.use_adapter`) is added unmerged to each adapted linear's output,
    inside the native call or after each eager product (`voicefleet.inference.fast_adapters`).
    """

    def __init__(self, gpt: GPT, cache: list[LayerKVCache]):
        self.gpt = gpt
        attn = gpt.layers[0].attn
        self.heads, self.head_dim = attn.heads, attn.head_dim
        self.scale = self.head_dim ** -0.5
        self.updates = gpt_step_updates(active_adapter("gpt"), len(gpt.layers))
        self.native = _native_step(gpt, self.heads)
        self.native_updates = None
        if self.native is not None and self.updates is not None:
            self.native_updates = self.native.updates(self.updates)
        self.cache = StackedKVCache(cache, torch.float16 if self.native is not None else torch.float32)

    def keep_rows(self, rows: Tensor) -> None:
        self.cache.keep_rows(rows)

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """x: (batch, 1, dim) embedded token; mask: (batch, 1, 1, keys) bool or None -> (batch, dim)."""
        self.cache.advance()
        if self.native is not None:
            batch, n = x.shape[0], self.cache.length
            h = x.reshape(batch, x.shape[2]).to(torch.float32, memory_format=torch.contiguous_format, copy=True)
            key_bias = None
            if mask is not None:
                key_bias = x.new_zeros(batch, n).masked_fill_(~mask.reshape(batch, n), float("-inf"))
            return self.native(h, self.cache.kv, n, key_bias, updates=self.native_updates)
        return self._eager(x, mask)

    def _eager(self, x: Tensor, mask: Tensor | None) -> Tensor:
        cache = self.cache
        batch, dim = x.shape[0], x.shape[2]
        heads, head_dim = self.heads, self.head_dim
        n = cache.length
        if mask is None:
            bias = x.new_zeros(1, 1, n)
        else:
            bias = x.new_zeros(mask.shape).masked_fill_(~mask, float("-inf"))
            bias = bias.expand(batch, heads, 1, n).reshape(batch * heads, 1, n)
        h = x.reshape(batch, dim)
        no_updates = (None,) * 4
        for i, (layer, slot) in enumerate(zip(self.gpt.layers, cache.newest())):
            attn, ffn = layer.attn, layer.ffn
            qkv_u, out_u, up_u, down_u = self.updates[i] if self.updates is not None else no_updates
            qkv = _rows(attn.qkv, h, qkv_u).view(batch, 3, heads, head_dim)
            slot.copy_(qkv[:, 1:].transpose(0, 1))
            q = qkv[:, 0].reshape(batch * heads, 1, head_dim)
            scores = torch.baddbmm(bias, q, cache.keys[i][:, :n].transpose(1, 2), alpha=self.scale)
            y = torch.bmm(torch.softmax(scores, dim=-1), cache.values[i][:, :n])
            h = F.layer_norm(h + _rows(attn.out, y.view(batch, dim), out_u), (dim,),
                             layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
            up = torch.relu(_rows(ffn.up, h, up_u))
            h = F.layer_norm(h + _rows(ffn.down, up, down_u), (dim,),
                             layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
        return h


def _rows(linear: "Int8Bf16Linear", rows: Tensor, update) -> Tensor:
    """The quantised product of `rows`, plus the adapter's update of that linear when there is one."""
    out = linear.rows(rows)
    return out if update is None else update.add_(rows, out)


def _native_step(gpt: GPT, heads: int):
    """The native whole-step kernel for this GPT's layers, or None (no native library, or a
    layer the kernel does not cover). It reads the layers' own int8 weights and scales."""
    def linear(m) -> Int8Bf16Linear | None:
        return m if isinstance(m, Int8Bf16Linear) and m.native else None

    def norm(m: nn.LayerNorm) -> tuple[Tensor, Tensor, float] | None:
        if m.weight is None or m.bias is None or m.weight.dtype != torch.float32:
            return None
        return m.weight.detach().contiguous(), m.bias.detach().contiguous(), m.eps

    layers = []
    for layer in gpt.layers:
        parts = [linear(layer.attn.qkv), linear(layer.attn.out), linear(layer.ffn.up), linear(layer.ffn.down),
                 norm(layer.norm1), norm(layer.norm2)]
        if any(p is None for p in parts):
            return None
        layers.append(NativeLayer(*parts))
    return gpt_step_kernel(layers, heads) if layers else None


def quantize_gpt(gpt: GPT) -> GPT:
    """A new GPT (eval mode, frozen) whose linears are `Int8Bf16Linear` built from `gpt`'s; `gpt`
    is not changed. Decode with `fast_generator`, which also picks the lean decoding step."""
    fast = copy.deepcopy(gpt).eval()
    for name, module in list(fast.named_modules()):
        if isinstance(module, nn.Linear):
            fast.set_submodule(name, Int8Bf16Linear.from_fp32(module))
    return fast.requires_grad_(False)


def fast_generator(gpt: GPT) -> TokenGenerator:
    """Decoding with a quantised copy of `gpt` (`quantize_gpt`) and `Int8DecodingStep`."""
    return TokenGenerator(quantize_gpt(gpt), step=Int8DecodingStep)


class _ChannelsLastConv:
    """A frozen 1-d convolution (or transposed one) run as a bf16 2-d convolution of height 1 on
    channels-last tensors: ``(batch, channels, 1, time)`` with channels innermost."""

    def __init__(self, conv: nn.Conv1d | nn.ConvTranspose1d, name: str = ""):
        if conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"unsupported convolution for the bf16 decoder: {conv}")
        self.name = name  # the fp32 module's name in its SoVITS (what an adapter's layers are keyed by)
        self.transposed = isinstance(conv, nn.ConvTranspose1d)
        self.weight = conv.weight.detach().to(torch.bfloat16).unsqueeze(2).contiguous(memory_format=torch.channels_last)
        self.bias = conv.bias.detach().to(torch.bfloat16) if conv.bias is not None else None
        self.stride, self.padding, self.dilation = (1, conv.stride[0]), (0, conv.padding[0]), (1, conv.dilation[0])
        self.output_padding = (0, conv.output_padding[0]) if self.transposed else None

    def out_length(self, n: int) -> int:
        """Output length for an input of `n` frames (PyTorch's formulas)."""
        span = self.dilation[1] * (self.weight.shape[-1] - 1)
        if self.transposed:
            return (n - 1) * self.stride[1] - 2 * self.padding[1] + span + self.output_padding[1] + 1
        return (n + 2 * self.padding[1] - span - 1) // self.stride[1] + 1

    def __call__(self, x: Tensor) -> Tensor:
        if self.transposed:
            return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                      1, self.dilation)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


def _channels_last(x: Tensor) -> Tensor:
    """(batch, channels, time) or (batch, channels, 1, time) -> bf16 (batch, channels, 1, time), channels innermost."""
    if x.dim() == 3:
        x = x.unsqueeze(2)
    return x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)


# The bf16 decoder pads its input to a multiple of this many frames (see `Bf16Decoder.forward`):
# 8 keeps the kernels of fragments of 1-3 s (15 buckets) within oneDNN's default primitive cache.
FRAME_BUCKET = 8


class Bf16Decoder(nn.Module):
    """Runs a HiFi-GAN generator's convolutions in bf16; the final conv and tanh in fp32.

    The bf16 part runs on channels-last tensors as 2-d convolutions of height 1: oneDNN reorders
    a (batch, channels, time) tensor for every 1-d convolution, and on channels-last tensors the
    whole decoder ran ~15% faster on one core (433 -> 366 ms for 1.7 s of audio; single large
    convolutions up to 2x). The products and their bf16 rounding are those of autocast's conv1d
    up to the accumulation order (outputs differ by about one bf16 unit in the last place).
    The SoVITS adapter active in the calling context adds its updates of the input and residual
    convolutions unmerged (`voicefleet.inference.fast_adapters`). Build one with `from_fp32`.
    """

    def __init__(self, pre: _ChannelsLastConv, cond: _ChannelsLastConv | None, ups: list[_ChannelsLastConv],
                 blocks: list[list[tuple[_ChannelsLastConv, _ChannelsLastConv]]], conv_post: nn.Conv1d,
                 num_kernels: int):
        super().__init__()
        self.pre, self.cond, self.ups, self.blocks = pre, cond, ups, blocks
        self.conv_post = conv_post  # fp32
        self.num_kernels = num_kernels
        self.conv_names = [c.name for c in (pre, cond, *ups, *(c for b in blocks for pair in b for c in pair))
                           if c is not None and c.name]

    @classmethod
    def from_fp32(cls, decoder: HiFiGANGenerator, name: str = "decoder") -> "Bf16Decoder":
        """A new decoder from `decoder`'s weights (weight norm folded; `decoder` is not changed);
        `name`: the decoder's module name in its SoVITS (adapter layers are keyed by full names)."""
        def conv(module: nn.Module, path: str) -> _ChannelsLastConv:
            return _ChannelsLastConv(module, f"{name}.{path}")

        blocks = [[(conv(c1, f"resblocks.{i}.convs1.{j}"), conv(c2, f"resblocks.{i}.convs2.{j}"))
                   for j, (c1, c2) in enumerate(zip(b.convs1, b.convs2))] for i, b in enumerate(decoder.resblocks)]
        return cls(conv(decoder.conv_pre, "conv_pre"), conv(decoder.cond, "cond") if hasattr(decoder, "cond") else None,
                   [conv(up, f"ups.{i}") for i, up in enumerate(decoder.ups)], blocks, _plain_conv1d(decoder.conv_post),
                   decoder.num_kernels)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        # oneDNN builds its convolution primitives per input length and caches 1024 of them: with
        # every fragment a new length, the decoder ran ~25% slower than on repeated lengths.
        # Lengths are padded up to a multiple of FRAME_BUCKET frames so that fragments share
        # primitives; every convolution's output past the true length is zeroed, which is exactly
        # the zero padding each layer sees without the extra frames (outputs differ only by bf16
        # rounding), and the waveform is cut to the true length.
        frames = x.shape[-1]
        padded = -(-frames // FRAME_BUCKET) * FRAME_BUCKET
        valid = frames
        updates = decoder_updates(active_adapter("sovits"), self.conv_names)

        def run(layer: _ChannelsLastConv, y: Tensor) -> Tensor:
            update = updates.get(layer.name)
            out = layer(y)
            if update is not None:
                out = out + update(y, layer.stride, layer.padding, layer.dilation)
            return out

        def conv(layer: _ChannelsLastConv, y: Tensor) -> Tensor:
            y = run(layer, y)
            if valid < y.shape[-1]:
                y[..., valid:] = 0
            return y

        valid = self.pre.out_length(valid)
        y = run(self.pre, _channels_last(F.pad(x, (0, padded - frames)) if padded > frames else x))
        if g is not None:
            y = _channels_last(y + self.cond(_channels_last(g)))
        if valid < y.shape[-1]:
            y[..., valid:] = 0
        for i, up in enumerate(self.ups):
            valid = up.out_length(valid)
            y = conv(up, F.leaky_relu(y, LRELU_SLOPE))
            acc = None
            for block in self.blocks[i * self.num_kernels:(i + 1) * self.num_kernels]:
                out = y
                for c1, c2 in block:
                    out = out + conv(c2, F.leaky_relu(conv(c1, F.leaky_relu(out, LRELU_SLOPE)), LRELU_SLOPE))
                acc = out if acc is None else acc + out
            y = _channels_last(acc / self.num_kernels)
        y = F.leaky_relu(y.squeeze(2)[..., :valid].float().contiguous())
        return torch.tanh(self.conv_post(y))


def _plain_conv1d(conv: nn.Conv1d) -> nn.Conv1d:
    """A frozen copy of `conv` with its effective weight (weight norm folded) and no parametrization."""
    # skip_init: no random initialisation, so building the fast path leaves torch's global RNG alone
    plain = torch.nn.utils.skip_init(nn.Conv1d, conv.in_channels, conv.out_channels, conv.kernel_size[0],
                                     stride=conv.stride[0], padding=conv.padding[0], dilation=conv.dilation[0],
                                     groups=conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                                     device=conv.weight.device)
    with torch.no_grad():
        plain.weight.copy_(conv.weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain.requires_grad_(False)


def fast_sovits(sovits: SoVITS) -> SoVITS:
    """A new SoVITS prepared for inference with its decoder in bf16 (`sovits` is not changed)."""
    if any(parametrize.is_parametrized(m) for m in sovits.modules()):
        # Deep copies of weight-normed modules share their parametrized classes, and folding one
        # would break the other: build a fresh model from the state dict instead.
        fresh = type(sovits)(sovits.config)
        fresh.load_state_dict(sovits.state_dict())
        fresh.prepare_for_inference()
    else:
        fresh = copy.deepcopy(sovits).eval()
    fresh.decoder = Bf16Decoder.from_fp32(fresh.decoder)
    return fresh.requires_grad_(False)


class _Bf16Autocast(nn.Module):
    """Runs the wrapped transformers model under bf16 autocast (its linears already hold bf16)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, *args, **kwargs):
        with torch.autocast(device_type=next(self.inner.parameters()).device.type, dtype=torch.bfloat16):
            return self.inner(*args, **kwargs)


def fast_bert(bert: BertFeatures) -> BertFeatures:
    """A copy of `bert` with bf16 linear weights, run under bf16 autocast (LayerNorm, softmax and
    the residual stream stay fp32). The full-size model runs ~2.2x faster on one core; features
    differ from fp32 by ~0.8% (relative L2)."""
    fast = copy.deepcopy(bert)
    linears = [(name, m) for name, m in fast.model.named_modules() if isinstance(m, nn.Linear)]
    packed_count = 0
    for name, linear in linears:
        linear.to(torch.bfloat16)
        packed = pack_bf16_weight(linear.weight, linear.bias)
        if packed is not None:  # the same product without reordering the weight on every call
            parent_name, _, child = name.rpartition(".")
            setattr(fast.model.get_submodule(parent_name) if parent_name else fast.model, child,
                    PackedBf16Linear(linear, packed))
            packed_count += 1
    logger.info("fast BERT: %d of %d linears in bf16 with prepacked weights", packed_count, len(linears))
    fast.model = _Bf16Autocast(fast.model)
    return fast


def optimize_for_cpu_inference(gpt: GPT, sovits: SoVITS) -> tuple[TokenGenerator, SoVITS]:
    """Both models in voicefleet's reduced-precision CPU mode: the GPT's decoding
    (`fast_generator`) and a new SoVITS (`fast_sovits`); the inputs are not changed."""
    if not cpu_supports_bf16():
        logger.warning("this CPU has no native bf16 support; the fast path may be slower than fp32")
    return fast_generator(gpt), fast_sovits(sovits)
