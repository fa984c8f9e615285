"""The native CPU kernels: the int8 product and the whole GPT decoding step against PyTorch
references, their build cache, and the fallback to PyTorch's kernels when they are unavailable."""

from __future__ import annotations

import logging
import os

import pytest
import torch
import torch.nn.functional as F

from voicefleet.inference import native
from voicefleet.models.builders_gpt import gpt_tiny
from voicefleet.inference.fast import Int8Bf16Linear, Int8DecodingStep, quantize_gpt, quantize_int8
from voicefleet.inference.generation import LayerKVCache

needs_native = pytest.mark.skipif(native.native_library() is None,
                                  reason="native kernels unavailable here (no AVX-512 or no C compiler)")


@pytest.fixture
def fresh_native(monkeypatch):
    """Forget the loaded library before and after the test (the test may change the environment)."""
    def clear():
        native.native_library.cache_clear()
        native.int8_rows_kernel.cache_clear()
    clear()
    yield monkeypatch
    monkeypatch.undo()
    clear()


def _quantized(n: int, k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    scale = w.abs().amax(dim=1) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.contiguous(), torch.randn(n, generator=g)


@needs_native
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 12])
@pytest.mark.parametrize("n,k", [(1025, 64), (96, 2048), (8, 16)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_int8_rows_matches_a_float64_product(rows, n, k, with_bias):
    kernel = native.int8_rows_kernel()
    q, scale, bias = _quantized(n, k)
    bias = bias if with_bias else None
    x = torch.randn(rows, k)
    ref = x.double() @ (q.double() * scale.double()[:, None]).T
    if bias is not None:
        ref = ref + bias.double()
    packed = kernel.pack(q)
    out = kernel(x, packed, n, scale, bias, threads=2)
    assert out.shape == (rows, n) and out.dtype == torch.float32
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-6
    # each output is summed by one thread in a fixed order: the thread count changes nothing
    assert torch.equal(out, kernel(x, packed, n, scale, bias, threads=1))


@needs_native
def test_int8_rows_reads_strided_rows():
    kernel = native.int8_rows_kernel()
    q, scale, bias = _quantized(40, 32)
    wide = torch.randn(3, 64)
    x = wide[:, 16:48]  # row stride 64, unit stride inside a row
    out = kernel(x, kernel.pack(q), 40, scale, bias)
    assert torch.equal(out, kernel(x.contiguous(), kernel.pack(q), 40, scale, bias))


def _reference_step(gpt, x, kv, length, key_bias):
    """The decoding step written with PyTorch ops over dequantised weights and an fp16 cache:
    what the native step must compute. kv: (layers, 2, rows, heads, capacity, head_dim) fp16."""
    rows, dim = x.shape
    heads = gpt.layers[0].attn.heads
    head_dim = dim // heads
    h = x.clone()

    def linear(m, inp):
        w = m.weight_packed.view(-1, m.in_features // 16, 4, 16).transpose(1, 2).reshape(-1, m.in_features)
        w = w[:m.out_features].double() * m.scales.double()[:, None]
        return (inp.double() @ w.T + m.bias.double()).float()

    for i, layer in enumerate(gpt.layers):
        qkv = linear(layer.attn.qkv, h).view(rows, 3, heads, head_dim)
        kv[i, 0, :, :, length - 1] = qkv[:, 1].clamp(-65504, 65504).half()
        kv[i, 1, :, :, length - 1] = qkv[:, 2].clamp(-65504, 65504).half()
        keys, values = kv[i, 0, :, :, :length].float(), kv[i, 1, :, :, :length].float()
        scores = torch.einsum("rhd,rhjd->rhj", qkv[:, 0], keys) * head_dim ** -0.5
        if key_bias is not None:
            scores = scores + key_bias[:, None, :]
        y = torch.einsum("rhj,rhjd->rhd", torch.softmax(scores, -1), values).reshape(rows, dim)
        h = F.layer_norm(h + linear(layer.attn.out, y), (dim,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
        up = torch.relu(linear(layer.ffn.up, h))
        h = F.layer_norm(h + linear(layer.ffn.down, up), (dim,), layer.norm2.weight, layer.norm2.bias,
                         layer.norm2.eps)
    return h


@needs_native
def test_native_step_matches_a_pytorch_reference_with_padding_and_cache_growth():
    torch.manual_seed(0)
    gpt = quantize_gpt(gpt_tiny().eval())
    rows, heads, head_dim, prompt = 3, 4, 32, 30
    caches = []
    for _ in gpt.layers:
        c = LayerKVCache()
        c.append(torch.randn(rows, heads, prompt, head_dim), torch.randn(rows, heads, prompt, head_dim))
        caches.append(c)
    step = Int8DecodingStep(gpt, caches)
    assert step.native is not None and step.cache.kv.dtype == torch.float16
    ref_kv = step.cache.kv.clone()
    pad = torch.ones(rows, prompt + 200, dtype=torch.bool)
    pad[1, :7] = False  # row 1 is left-padded
    with torch.inference_mode():
        for t in range(200):  # past one cache block: the stacked cache grows
            x = torch.randn(rows, 1, 128)
            n = prompt + t + 1
            mask = pad[:, None, None, :n]
            out = step(x, mask)
            if ref_kv.shape[4] < step.cache.kv.shape[4]:
                grown = torch.zeros_like(step.cache.kv)
                grown[:, :, :, :, :ref_kv.shape[4]] = ref_kv
                ref_kv = grown
            bias = torch.zeros(rows, n).masked_fill_(~pad[:, :n], float("-inf"))
            ref = _reference_step(gpt, x[:, 0], ref_kv, n, bias)
            torch.testing.assert_close(out, ref, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(step.cache.kv[..., :n, :].float(), ref_kv[..., :n, :].float(), atol=2e-3, rtol=1e-3)


@needs_native
def test_one_quantisation_feeds_the_native_and_the_pytorch_kernel(fresh_native):
    """Both int8 kernels read `quantize_int8`'s values and fp32 scales: PyTorch's the (out, in)
    matrix itself, the native one the same values in its blocked order (one copy either way)."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 90)  # 90 outputs: the native kernel's last block of 4 is partial
    x = torch.randn(3, 64)
    with_native = Int8Bf16Linear.from_fp32(linear)
    with torch.no_grad():
        native_out = with_native(x)
    fresh_native.setenv("VOICEFLEET_NATIVE", "0")
    native.native_library.cache_clear()
    native.int8_rows_kernel.cache_clear()
    without = Int8Bf16Linear.from_fp32(linear)
    with torch.no_grad():
        torch_out = without(x)
    assert with_native.native and not without.native
    q, scales = quantize_int8(linear.weight)
    for m in (with_native, without):
        assert torch.equal(m.scales, scales)
    assert torch.equal(without.weight_int8, q) and not hasattr(with_native, "weight_int8")
    assert torch.equal(with_native.weight_packed, native.Int8RowsKernel.pack(q))
    dequantised = x.double() @ (q.double() * scales.double()[:, None]).T + linear.bias.detach().double()
    assert float((native_out.double() - dequantised).norm() / dequantised.norm()) < 1e-6  # fp32 rows
    assert float((torch_out.double() - dequantised).norm() / dequantised.norm()) < 1e-2  # bf16 rows


def test_disabled_native_falls_back_to_pytorch_kernels(fresh_native, caplog):
    fresh_native.setenv("VOICEFLEET_NATIVE", "0")
    with caplog.at_level(logging.WARNING, logger="voicefleet.inference.native"):
        assert native.native_library() is None
    assert any("VOICEFLEET_NATIVE=0" in r.getMessage() for r in caplog.records)
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    fast = Int8Bf16Linear.from_fp32(linear)
    assert not fast.native and hasattr(fast, "weight_int8")
    x = torch.randn(2, 64)
    with torch.no_grad():
        ref = linear(x)
    assert float((fast(x) - ref).norm() / ref.norm()) < 0.02
    gpt = quantize_gpt(gpt_tiny().eval())
    cache = []
    for _ in gpt.layers:
        c = LayerKVCache()
        c.append(torch.randn(1, 4, 5, 32), torch.randn(1, 4, 5, 32))
        cache.append(c)
    step = Int8DecodingStep(gpt, cache)
    assert step.native is None and step.cache.kv.dtype == torch.float32
    with torch.inference_mode():
        assert step(torch.randn(1, 1, 128), None).shape == (1, 128)


@needs_native
def test_build_is_cached_and_a_failed_build_says_why(fresh_native, tmp_path):
    fresh_native.setenv("VOICEFLEET_CACHE_DIR", str(tmp_path))
    assert native.native_library() is not None
    built = list(tmp_path.glob("native/*/*.so"))
    assert len(built) == 1
    stamp = os.stat(built[0]).st_mtime_ns
    native.native_library.cache_clear()
    assert native.native_library() is not None  # loaded from the cache, not rebuilt
    assert os.stat(built[0]).st_mtime_ns == stamp and list(tmp_path.glob("native/*/*.so")) == built

    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo broken-cc 1.0 && exit 0\necho 'cc: cannot compile' >&2\nexit 1\n")
    broken.chmod(0o755)
    fresh_native.setenv("CC", str(broken))
    with pytest.raises(native.NativeUnavailable, match="cannot compile"):
        native._load()
    fresh_native.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.raises(native.NativeUnavailable, match="no C compiler"):
        native._load()
