"""Shared test fixtures: the compat fixture folder and deterministic torch settings."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
DEFAULT_COMPAT_DIR = SHARED / "compat"

# Test data kept beside the repository (never inside it): NLTK's tagger for the English front end
# and the official text dictionaries. scripts/test.sh exports the same defaults.
for _var, _folder in (("NLTK_DATA", SHARED / "nltk_data"), ("VOICEFLEET_TEXT_DATA", SHARED / "gptsovits_text")):
    if _var not in os.environ and _folder.is_dir():
        os.environ[_var] = str(_folder)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where torch sees a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def compat_path() -> Path:
    return Path(os.environ.get("VOICEFLEET_COMPAT_DIR", DEFAULT_COMPAT_DIR))


@pytest.fixture(scope="session")
def compat_dir() -> Path:
    """The official-reference fixture folder (VOICEFLEET_COMPAT_DIR, default ../shared/compat)."""
    path = compat_path()
    if not (path / "README.md").is_file():
        pytest.skip(f"compat fixtures not found at {path} (set VOICEFLEET_COMPAT_DIR to the folder)")
    return path


@pytest.fixture(scope="session")
def compat_configs(compat_dir: Path) -> dict:
    return json.loads((compat_dir / "configs.json").read_text())


def load_npz(compat_dir: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(compat_dir / name) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def s1(compat_dir: Path) -> dict[str, torch.Tensor]:
    """The GPT reference arrays (s1.npz) as tensors; read once per session."""
    return {k: torch.from_numpy(v) for k, v in load_npz(compat_dir, "s1.npz").items()}


@pytest.fixture(scope="session")
def s2(compat_dir: Path) -> dict[str, torch.Tensor]:
    """The SoVITS reference arrays (s2.npz) as tensors; read once per session."""
    return {k: torch.from_numpy(v) for k, v in load_npz(compat_dir, "s2.npz").items()}


def assert_close(actual, expected, *, atol: float, rtol: float, name: str = "") -> None:
    """|a - b| <= atol + rtol * |b|, the tolerance form the compat README states."""
    a = actual.detach().cpu().double().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    assert a.shape == b.shape, f"{name}: shape {a.shape} != expected {b.shape}"
    err = np.abs(a - b)
    bound = atol + rtol * np.abs(b)
    worst = float((err - bound).max()) if err.size else 0.0
    assert worst <= 0, f"{name}: max |diff| {err.max():.3g} exceeds atol {atol} + rtol {rtol}*|ref|"


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory):
    """A random tiny pretrained folder in the official layout, written once per session."""
    from voicefleet.models.pretrained import init_pretrained

    return init_pretrained(tmp_path_factory.mktemp("pretrained") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_pretrained_v2proplus(tmp_path_factory):
    """A random tiny v2ProPlus pretrained folder (official layout: v2Pro/, sv/, s1v3.ckpt), once per session."""
    from voicefleet.models.pretrained import init_pretrained

    return init_pretrained(tmp_path_factory.mktemp("pretrained") / "tiny-v2proplus", "tiny", seed=0,
                           version="v2ProPlus")


@pytest.fixture(scope="session")
def reference_wav(tmp_path_factory) -> Path:
    """A 4 s voice-like 32 kHz clip (gliding harmonic tone)."""
    import soundfile as sf

    sr = 32000
    t = np.arange(4 * sr) / sr
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / sr
    wave = sum(0.3 / k * np.sin(k * phase) for k in range(1, 8)) * 0.5
    path = tmp_path_factory.mktemp("audio") / "reference.wav"
    sf.write(path, wave.astype(np.float32), sr)
    return path


@pytest.fixture(scope="session")
def ray_metrics_port() -> int:
    """A free local port for the session's Ray to export Prometheus metrics on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session(ray_metrics_port):
    """One local Ray for the whole test session: 2 CPUs, no dashboard, a capped object store, its
    metrics on a fixed port (as `voicefleet serve --metrics-port`)."""
    import ray

    from voicefleet.platform.cluster import ensure_ray

    ensure_ray(num_cpus=2, object_store_bytes=300 * 1024 * 1024, configure_logging=False,
               metrics_export_port=ray_metrics_port)
    yield ray
    ray.shutdown()
