"""A running voicefleet Serve app (module scope) on 127.0.0.1 with three registered voices."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_reference(path: Path, base_hz: float, seconds: float = 4.0) -> Path:
    sr = 32000
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(base_hz + 25 * np.sin(2 * np.pi * 0.6 * t)) / sr
    wave = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6)) * 0.5
    sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
    return path


VOICES = {"alpha": 140.0, "beta": 210.0, "gamma": 110.0}


@pytest.fixture(scope="package")
def storage(tmp_path_factory, tiny_pretrained) -> Path:
    from voicefleet.platform.voices import registry_for

    root = tmp_path_factory.mktemp("serve-storage")
    registry = registry_for(str(root))
    for voice_id, hz in VOICES.items():
        ref = write_reference(root / f"{voice_id}.wav", hz)
        registry.register(voice_id, gpt=tiny_pretrained.gpt, sovits=tiny_pretrained.sovits_g, reference=ref,
                          prompt_text="你好。", prompt_lang="zh")
    return root


@pytest.fixture(scope="package")
def serve_settings(storage, tiny_pretrained):
    from voicefleet.serve.settings import ServeSettings

    return ServeSettings(storage=str(storage), pretrained=str(tiny_pretrained.root), max_voices_per_replica=2,
                         num_cpus=1, synthesis_threads=2, max_ongoing_requests=8, max_text_chars=500,
                         max_upload_bytes=2 * 1024 * 1024)


@pytest.fixture(scope="package")
def base_url(ray_session, serve_settings):
    """The app served by Ray Serve on a free local port; shut down after the package."""
    pytest.importorskip("httpx", reason="httpx is not installed (pip install httpx==0.28.1)")
    pytest.importorskip("python_multipart", reason="python-multipart (needed by POST /v1/voices) is not installed")
    from ray import serve

    from voicefleet.serve.app import build_app, wait_until_ready

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(serve_settings), name="voicefleet", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url, timeout_s=120)
    yield url
    serve.shutdown()
