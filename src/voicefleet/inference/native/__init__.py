"""Native CPU kernels, compiled from C on first use and loaded with ctypes.

PyTorch has no CPU kernel that reads int8 weights at memory speed for one or a few rows (its
weight-only int8 kernel reaches about half the machine's bandwidth at one row), and a GPT decoding
step is exactly that product, issued ~100 times per step between ~600 small tensor operations
whose fixed cost is a third of the step. `gpt_int8.c` holds a small AVX-512 kernel for the
product and a whole decoding step built on it. This module builds it with the system C compiler
into a per-user cache, once per source/compiler/flags, and returns None (callers keep PyTorch's
kernels) when it cannot: no AVX-512, no compiler, a failed build, or ``VOICEFLEET_NATIVE=0``. The
reason is logged once.

The build cache is ``$VOICEFLEET_CACHE_DIR/native`` (default ``~/.cache/voicefleet/native``).
Concurrent processes (Ray workers) may build at the same time: each writes a temporary file and
renames it into place.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

ABI_VERSION = 4
FP16_MAX = 65504.0  # the native step keeps its KV cache in fp16, clamped to this range
PACK_BLOCK = 4  # output channels per packed block (VF_BLOCK in gpt_int8.c)
PACK_CHUNK = 16  # inputs per packed run (VF_CHUNK)
CFLAGS = ("-O3", "-mavx512f", "-mfma", "-fopenmp", "-shared", "-fPIC")
_SOURCE = "gpt_int8.c"


def cache_dir() -> Path:
    root = os.environ.get("VOICEFLEET_CACHE_DIR")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "voicefleet" / "native"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


class NativeUnavailable(RuntimeError):
    """Why the native kernels cannot be used here (logged once; PyTorch kernels are used instead)."""


def _build(source: bytes, compiler: str) -> Path:
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeUnavailable(f"the C compiler {compiler!r} does not run: {e}") from e
    digest = hashlib.sha256(
        b"\0".join([source, " ".join(CFLAGS).encode(), version.encode(), platform.machine().encode(),
                    torch.__version__.encode()])
    ).hexdigest()[:16]
    target = cache_dir() / digest / "libvoicefleet_gpt_int8.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / _SOURCE
        src.write_bytes(source)
        out = Path(tmp) / target.name
        proc = subprocess.run([compiler, *CFLAGS, str(src), "-o", str(out)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["(no output)"])[0]
            raise NativeUnavailable(f"building {_SOURCE} with {compiler} failed: {first}")
        os.replace(out, target)  # atomic: a concurrent build of the same digest writes the same bytes
    logger.info("built the native int8 kernel: %s", target)
    return target


class Int8Weights(Protocol):
    """A quantised linear layer as the kernels read it (`voicefleet.inference.fast.Int8Bf16Linear`,
    whose tensors the kernels use in place: there is no second copy of the weights)."""

    weight_packed: Tensor  # `Int8RowsKernel.pack` of the (out_features, in_features) int8 matrix
    scales: Tensor  # (out_features,) float32, contiguous: weight ~ scales[:, None] * int8 matrix
    bias: Tensor | None  # (out_features,) float32, contiguous
    out_features: int
    in_features: int


@dataclass(frozen=True)
class Int8RowsKernel:
    """y = x @ (q * scale[:, None]).T (+ bias) for a few fp32 rows, with q packed by `pack`."""

    lib: ctypes.CDLL

    @staticmethod
    def supports(out_features: int, in_features: int) -> bool:
        return in_features % PACK_CHUNK == 0 and out_features > 0

    @staticmethod
    def pack(q: Tensor) -> Tensor:
        """(N, K) int8 -> the kernel's layout [ceil(N/4)][K/16][4][16] (padding channels are zero).

        The same int8 values in the order one thread reads them: one sequential stream per block
        of 4 channels. Reading the plain (N, K) matrix instead (4 interleaved row streams) made the
        whole GPT v2 decoding step about 7% slower on one core of an AVX-512 EPYC, even with
        software prefetching, and twice as slow without."""
        n, k = q.shape
        padded = -(-n // PACK_BLOCK) * PACK_BLOCK
        if padded != n:
            q = torch.cat([q, q.new_zeros(padded - n, k)])
        blocks = q.reshape(padded // PACK_BLOCK, PACK_BLOCK, k // PACK_CHUNK, PACK_CHUNK)
        return blocks.transpose(1, 2).contiguous()

    def __call__(self, x: Tensor, packed: Tensor, out_features: int, scale: Tensor, bias: Tensor | None,
                 threads: int | None = None) -> Tensor:
        """x: (M, K) float32 with unit stride in K; scale, bias: (N,) float32 contiguous -> (M, N) float32.

        Each output is summed by one thread in a fixed order, so results do not depend on `threads`.
        """
        if x.dtype != torch.float32 or x.stride(-1) != 1:
            x = x.float().contiguous()
        m, k = x.shape
        y = torch.empty(m, out_features, dtype=torch.float32)
        self.lib.vf_int8_rows(
            x.data_ptr(), m, x.stride(0), k, packed.data_ptr(), out_features, scale.data_ptr(),
            bias.data_ptr() if bias is not None else None, y.data_ptr(), out_features,
            threads or torch.get_num_threads(),
        )
        return y


class _Linear(ctypes.Structure):
    _fields_ = [("weight", ctypes.c_void_p), ("scale", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("out_features", ctypes.c_int64), ("in_features", ctypes.c_int64)]


class _Layer(ctypes.Structure):
    _fields_ = [("qkv", _Linear), ("out", _Linear), ("up", _Linear), ("down", _Linear),
                ("norm1_weight", ctypes.c_void_p), ("norm1_bias", ctypes.c_void_p),
                ("norm2_weight", ctypes.c_void_p), ("norm2_bias", ctypes.c_void_p),
                ("norm1_eps", ctypes.c_double), ("norm2_eps", ctypes.c_double)]


class _Update(ctypes.Structure):
    _fields_ = [("a", ctypes.c_void_p), ("bt", ctypes.c_void_p), ("rank", ctypes.c_int64)]


class RowsUpdate(Protocol):
    """A linear's low-rank (LoRA) update as the step kernel reads it
    (`voicefleet.inference.fast_adapters.RowsUpdate`): y += (x @ a.T) @ bt."""

    a: Tensor  # (rank, in_features) float32, contiguous
    bt: Tensor  # (rank, out_features) float32, contiguous: B transposed, the scaling folded in


@dataclass(frozen=True)
class StepUpdates:
    """The table of one adapter's updates for `GptStepKernel` (4 per layer: qkv, out, up, down);
    keeps the tensors it points to alive."""

    table: ctypes.Array
    tensors: tuple


@dataclass(frozen=True)
class NativeLayer:
    """One post-norm decoder layer as the step kernel reads it."""

    qkv: Int8Weights
    out: Int8Weights
    up: Int8Weights
    down: Int8Weights
    norm1: tuple[Tensor, Tensor, float]  # weight, bias, eps
    norm2: tuple[Tensor, Tensor, float]


class GptStepKernel:
    """One decoding step of a post-norm GPT (all layers) in a single native call.

    Linears use the int8 product above (fp32 activations); attention reads a KV cache stored in
    fp16 (half the bytes of fp32; attention over a long cache is bound by reading it), with
    scores, softmax and sums in fp32. Needs head_dim to be a multiple of 16. An adapter voice's
    LoRA updates (`updates`) are added to the linears' outputs in the same call, in fp32.

    Holds the layers' pointers; the tensors in `layers` must outlive it (it keeps references).
    """

    def __init__(self, lib: ctypes.CDLL, layers: list[NativeLayer], heads: int):
        self.lib, self.layers, self.heads = lib, layers, heads
        self.dim = layers[0].qkv.in_features
        self._table = (_Layer * len(layers))(*[self._layer(layer) for layer in layers])

    @staticmethod
    def _linear(l: Int8Weights) -> _Linear:
        bias = l.bias.data_ptr() if l.bias is not None else None
        return _Linear(l.weight_packed.data_ptr(), l.scales.data_ptr(), bias, l.out_features, l.in_features)

    def _layer(self, l: NativeLayer) -> _Layer:
        return _Layer(self._linear(l.qkv), self._linear(l.out), self._linear(l.up), self._linear(l.down),
                      l.norm1[0].data_ptr(), l.norm1[1].data_ptr(), l.norm2[0].data_ptr(), l.norm2[1].data_ptr(),
                      float(l.norm1[2]), float(l.norm2[2]))

    def updates(self, per_layer: list[tuple[RowsUpdate | None, ...]]) -> StepUpdates:
        """The table of an adapter's updates: per layer, those of its (qkv, out, up, down) linears
        (None: not adapted). Shapes are checked against the layers'."""
        if len(per_layer) != len(self.layers):
            raise ValueError(f"updates for {len(per_layer)} layers, the step has {len(self.layers)}")
        entries, tensors = [], []
        for layer, updates in zip(self.layers, per_layer):
            for linear, update in zip((layer.qkv, layer.out, layer.up, layer.down), updates):
                if update is None:
                    entries.append(_Update(None, None, 0))
                    continue
                rank = update.a.shape[0]
                expected = ((rank, linear.in_features), (rank, linear.out_features))
                if (tuple(update.a.shape), tuple(update.bt.shape)) != expected or not (
                        update.a.dtype == update.bt.dtype == torch.float32
                        and update.a.is_contiguous() and update.bt.is_contiguous()):
                    raise ValueError(f"an update of shapes {tuple(update.a.shape)}, {tuple(update.bt.shape)} "
                                     f"for a linear {linear.in_features} -> {linear.out_features}")
                entries.append(_Update(update.a.data_ptr(), update.bt.data_ptr(), rank))
                tensors += [update.a, update.bt]
        return StepUpdates((_Update * len(entries))(*entries), tuple(tensors))

    def __call__(self, h: Tensor, kv: Tensor, length: int, key_bias: Tensor | None,
                 threads: int | None = None, updates: StepUpdates | None = None) -> Tensor:
        """h: (rows, dim) fp32 contiguous, overwritten with the step's output (and returned);
        kv: (layers, 2, rows, heads, capacity, head_dim) fp16 contiguous, position length-1 written;
        key_bias: (rows, length) fp32 contiguous additive mask (0 / -inf) or None; updates: an
        adapter's updates (`updates`), added to every row, or None."""
        rows = h.shape[0]
        status = self.lib.vf_gpt_step(
            self._table, len(self.layers), h.data_ptr(), rows, self.dim, self.heads, kv.data_ptr(), kv.shape[4],
            length, key_bias.data_ptr() if key_bias is not None else None, threads or torch.get_num_threads(),
            updates.table if updates is not None else None,
        )
        if status != 0:
            raise MemoryError("the native GPT step could not allocate its scratch memory")
        return h


@functools.lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL | None:
    """The native library, built and loaded once per process; None (with one logged reason) if unavailable."""
    try:
        return _load()
    except NativeUnavailable as e:
        logger.warning("native GPT kernels unavailable, using PyTorch's (about 3x slower per GPT token): %s", e)
        return None


@functools.lru_cache(maxsize=1)
def int8_rows_kernel() -> Int8RowsKernel | None:
    """The int8 product of few rows, or None when the native library is unavailable."""
    lib = native_library()
    return Int8RowsKernel(lib) if lib is not None else None


def gpt_step_kernel(layers: list[NativeLayer], heads: int) -> GptStepKernel | None:
    """A whole-step kernel over these layers, or None when the native library is unavailable or
    the shapes are not covered."""
    dim = layers[0].qkv.in_features
    if dim % heads or (dim // heads) % PACK_CHUNK:
        return None
    lib = native_library()
    return GptStepKernel(lib, layers, heads) if lib is not None else None


def _load() -> ctypes.CDLL:
    if os.environ.get("VOICEFLEET_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        raise NativeUnavailable("disabled by VOICEFLEET_NATIVE=0")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise NativeUnavailable(f"it is written for x86-64, this machine is {platform.machine()}")
    flags = _cpu_flags()
    if not {"avx512f", "fma"} <= flags:
        raise NativeUnavailable("this CPU has no AVX-512F")
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise NativeUnavailable(f"no C compiler found (looked for {compiler!r}; set CC to use another)")
    source = resources.files(__package__).joinpath(_SOURCE).read_bytes()
    try:
        path = _build(source, compiler)
    except OSError as e:
        raise NativeUnavailable(f"cannot write the build cache {cache_dir()}: {e}") from e
    # torch is imported above, so the OpenMP runtime it ships is already loaded: the library binds
    # to that one (same soname) and shares its thread pool instead of starting a second one.
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        raise NativeUnavailable(f"cannot load {path}: {e}") from e
    lib.vf_abi_version.restype = ctypes.c_int
    if lib.vf_abi_version() != ABI_VERSION:
        raise NativeUnavailable(f"{path} has ABI {lib.vf_abi_version()}, expected {ABI_VERSION}")
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.vf_int8_rows.argtypes = [p, i64, i64, i64, p, i64, p, p, p, i64, ctypes.c_int]
    lib.vf_int8_rows.restype = None
    lib.vf_gpt_step.argtypes = [p, i64, p, i64, i64, i64, p, i64, i64, p, ctypes.c_int, p]
    lib.vf_gpt_step.restype = ctypes.c_int
    return lib
