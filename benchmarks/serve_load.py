"""Closed-loop load on the voicefleet Serve app: N clients over M voices.

    .venv/bin/python benchmarks/serve_load.py --size tiny --clients 4 --voices 3 --requests 40
    .venv/bin/python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 8   # a running app

Without --url it builds a tiny random pretrained folder, registers M zero-shot voices, starts local
Ray + the app on 127.0.0.1, and shuts it down afterwards. Each client sends its next request when
the previous one finished (closed loop), cycling through the voices, after one warm-up request per
voice (so voice loading is not timed); requests ask for pcm so audio length is exact. Reports requests/s, latency percentiles, time to first audio byte (streaming),
real-time factor under load (latency / audio seconds) and failures; appends to RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

SAMPLE_RATE = 32000
TEXT = "今天天气很好。我们一起去公园散步，然后回家吃饭。"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_local_app(size: str, voices: int, workdir: Path, precision: str = "fp32",
                    batch_max_size: int = 1, adaptive_threads: bool = False, pretrained=None) -> tuple[str, list[str]]:
    """Register `voices` zero-shot voices and serve them; `pretrained`: an existing folder's paths
    (default: a random one of `size` written under `workdir`)."""
    import soundfile as sf
    from ray import serve

    from voicefleet.models.pretrained import init_pretrained
    from voicefleet.platform.cluster import ensure_ray
    from voicefleet.platform.voices import registry_for
    from voicefleet.serve.app import build_app
    from voicefleet.serve.settings import ServeSettings

    paths = pretrained or init_pretrained(workdir / "pretrained", size, seed=0)
    registry = registry_for(str(workdir / "storage"))
    ids = []
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    for i in range(voices):
        phase = 2 * np.pi * np.cumsum(120 + 20 * i + 25 * np.sin(2 * np.pi * 0.6 * t)) / SAMPLE_RATE
        ref = workdir / f"ref{i}.wav"
        sf.write(ref, (0.3 * np.sin(phase) + 0.1 * np.sin(2 * phase)).astype(np.float32), SAMPLE_RATE)
        registry.register(f"bench-{i}", gpt=paths.gpt, sovits=paths.sovits_g, reference=ref, prompt_text="你好。",
                          prompt_lang="zh")
        ids.append(f"bench-{i}")
    ensure_ray()
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    settings = ServeSettings(storage=str(workdir / "storage"), pretrained=str(paths.root),
                             max_voices_per_replica=max(1, voices), max_ongoing_requests=8, precision=precision,
                             batch_max_size=batch_max_size, adaptive_threads=adaptive_threads)
    serve.run(build_app(settings), name="voicefleet", route_prefix="/", blocking=False)
    return f"http://127.0.0.1:{port}", ids


def kill_a_synthesis_replica() -> str:
    """Kill one VoiceSynthesizer replica actor of the local app (Serve must replace it)."""
    import ray

    names = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                   if "VoiceSynthesizer" in a["name"] and "REPLICA" in a["name"].upper())
    ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
    return names[0]


def request_tokens(max_tokens: int, vary: float, n: int) -> int:
    """Request n's token cap: `max_tokens`, or spread over +-`vary` of it (the same for every run).

    Random benchmark weights never end a fragment early, so the cap sets each fragment's length;
    real requests have a new length nearly every time, which costs kernels built per length."""
    if vary <= 0:
        return max_tokens
    spread = np.random.default_rng(n).uniform(1 - vary, 1 + vary)
    return max(1, round(max_tokens * spread))


async def run_load(url: str, voices: list[str], clients: int, requests: int, duration_s: float, stream: bool,
                   max_tokens: int, kill_after_s: float | None = None, vary_tokens: float = 0.0) -> dict:
    import httpx

    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("serve_load.py only loads 127.0.0.1 / localhost")
    results: list[dict] = []
    counter = iter(range(requests))
    deadline = time.monotonic() + duration_s

    async def client(c: int, http: httpx.AsyncClient):
        for n in counter:
            if time.monotonic() > deadline:
                return
            body = {"voice": voices[n % len(voices)], "text": TEXT, "lang": "zh", "seed": n, "format": "pcm",
                    "max_tokens": request_tokens(max_tokens, vary_tokens, n), "stream": stream}
            t0 = time.monotonic()
            first, size, status = None, 0, 0
            try:
                async with http.stream("POST", f"{url}/v1/tts", json=body) as r:
                    status = r.status_code
                    async for chunk in r.aiter_raw():
                        if first is None and chunk:
                            first = time.monotonic() - t0
                        size += len(chunk)
            except httpx.HTTPError:
                status = 0
            results.append({"ok": status == 200, "latency": time.monotonic() - t0, "ttfb": first,
                            "audio_s": size / 2 / SAMPLE_RATE})

    async with httpx.AsyncClient(timeout=300) as http:
        for voice in voices:  # warm-up: every voice loaded once, so the load measures steady state
            await http.post(f"{url}/v1/tts", json={"voice": voice, "text": "你好。", "max_tokens": 5})
        t0 = time.monotonic()

        async def killer():
            await asyncio.sleep(kill_after_s)
            await asyncio.get_running_loop().run_in_executor(None, kill_a_synthesis_replica)

        extra = [killer()] if kill_after_s is not None else []
        await asyncio.gather(*(client(c, http) for c in range(clients)), *extra)
        wall = time.monotonic() - t0
    ok = [r for r in results if r["ok"]]
    lat = np.array([r["latency"] for r in ok]) if ok else np.array([np.nan])
    ttfb = np.array([r["ttfb"] for r in ok if r["ttfb"] is not None]) if ok else np.array([np.nan])
    audio = sum(r["audio_s"] for r in ok)
    return {"requests": len(results), "failed": len(results) - len(ok), "rps": len(ok) / wall,
            "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95), "p99": np.percentile(lat, 99),
            "ttfb_p50": np.percentile(ttfb, 50) if ttfb.size else float("nan"),
            "rtf": float(lat.sum() / audio) if audio else float("nan"), "wall": wall,
            "audio_per_s": audio / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", help="a running app on 127.0.0.1 (default: start a local one)")
    p.add_argument("--size", choices=["tiny", "full"], default="tiny")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--voices", type=int, default=3)
    p.add_argument("--requests", type=int, default=40, help="total request cap")
    p.add_argument("--duration", type=float, default=120, help="seconds cap")
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--vary-tokens", type=float, default=0.0,
                   help="spread each request's token cap over +- this fraction of --max-tokens (lengths vary "
                        "as in real traffic)")
    p.add_argument("--precision", choices=["fp32", "fast"], default="fp32", help="local app only")
    p.add_argument("--batch-size", type=int, default=1, help="local app only: requests per batched GPT decode")
    p.add_argument("--adaptive-threads", action="store_true",
                   help="local app only: a request running alone uses every synthesis core")
    p.add_argument("--stream-only", action="store_true", help="run the streaming load only")
    p.add_argument("--kill-after", type=float, default=5.0,
                   help="local app only: also run a load during which a synthesis replica is killed after this "
                        "many seconds (0 disables)")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            import httpx

            url = args.url.rstrip("/")
            voices = [v["voice_id"] for v in httpx.get(f"{url}/v1/voices").json()["voices"]][: args.voices]
        else:
            url, voices = start_local_app(args.size, args.voices, Path(tmp), args.precision, args.batch_size,
                                          args.adaptive_threads)
        rows = []
        modes = [("stream", True, None)] if args.stream_only else [("whole", False, None), ("stream", True, None)]
        if not args.url and args.kill_after > 0:
            modes.append(("whole, replica killed", False, args.kill_after))
        for name, stream, kill_after in modes:
            m = asyncio.run(run_load(url, voices, args.clients, args.requests, args.duration, stream,
                                     args.max_tokens, kill_after, args.vary_tokens))
            rows.append([name, args.clients, len(voices), m["requests"], m["failed"],
                         f"{m['rps']:.2f}", f"{m['p50']:.3f}", f"{m['p95']:.3f}", f"{m['p99']:.3f}",
                         f"{m['ttfb_p50']:.3f}", f"{m['rtf']:.3f}", f"{m['audio_per_s']:.2f}"])
        if not args.url:
            from ray import serve

            serve.shutdown()
    setup = "external" if args.url else (f"{args.size}, {args.precision}, batch {args.batch_size}"
                                         + (", adaptive threads" if args.adaptive_threads else ""))
    tokens = f"max_tokens {args.max_tokens}" + (f" +- {args.vary_tokens:.0%}" if args.vary_tokens > 0 else "")
    report(f"Serve closed-loop load ({setup}, {tokens})",
           ["mode", "clients", "voices", "requests", "failed", "req/s", "p50 s", "p95 s", "p99 s",
            "first byte p50 s", "RTF", "audio s / wall s"], rows,
           notes="Latency per request end to end over HTTP; RTF = summed latency / summed audio seconds "
                 "(under load, so above the single-request RTF). 1 synthesis replica, 2 synthesis threads.")


if __name__ == "__main__":
    main()
