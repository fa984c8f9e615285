"""Many adapter voices on one replica: memory per resident voice, voice-switch latency, and load over
32 adapter voices against 4 full voices.

    .venv/bin/python benchmarks/many_voices.py --size full --parts memory,latency --voices 1,10,100,500
    .venv/bin/python benchmarks/many_voices.py --size full --parts load --requests 40
    .venv/bin/python benchmarks/many_voices.py --size full --parts memory --voices 100 --keep-spectrogram

The models are random-initialised at the official sizes (`--size full`) or tiny: they cost what
trained ones do. Adapters are random at the default rank and targets of both stages; `--distinct`
adapter files and reference clips are cycled over the voices, and every voice is loaded through
`load_adapter_voice` from its files, so each holds its own tensors.

- memory (in this process): the resident set (RSS) of a replica's models (HuBERT, BERT and the
  adapter backbone) and its growth with 1, 10, 100, 500 resident adapter voices, beside what the
  voice cache accounts for them (`voice_nbytes`) and whether the default `adapter_memory_mb` holds
  them. Freed memory is returned to the system (`malloc_trim`) before each reading.
  `--keep-spectrogram` measures the code before `Reference.compact` (a voice kept its reference's
  spectrogram).
- latency (in this process, as a replica resolves a voice and synthesises it): a request for the
  adapter voice of the previous request, for another resident adapter voice, for a non-resident
  one (loaded first), beside a resident / non-resident full voice and the bare backbone. The
  conditions take turns within each repeat, so a drift of a shared machine hits them alike.
- load (a local Serve app on 127.0.0.1, one replica, 2 synthesis threads, fp32): the first and
  a later request of each adapter voice over HTTP, then closed-loop load of `--clients` clients
  over `--adapter-voices` adapter voices and over `--full-voices` full voices, alternating
  `--repeats` times (the client of `serve_load.py`).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

PARTS = ("memory", "latency", "load")
SAMPLE_RATE = 32000
PROMPT_TEXT, PROMPT_LANG = "这是我的声音，今天天气很好。", "zh"
LATENCY_TEXT = "今天天气很好，我们一起去公园散步。"
MIB = 2**20


# --------------------------------------------------------------------------- arguments and tables

def parse_parts(text: str) -> list[str]:
    """'memory,latency' -> ['memory', 'latency'] (in the order given, once each)."""
    parts = list(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts must be a comma-separated subset of {','.join(PARTS)}, got {text!r}")
    return parts


def parse_counts(text: str) -> list[int]:
    """'1,10,100' -> [1, 10, 100]: positive voice counts, increasing (they are cumulative readings)."""
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"voice counts must be integers, got {text!r}") from None
    if not counts or any(c < 1 for c in counts) or counts != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"voice counts must be positive and increasing, e.g. 1,10,100,500; got {text!r}")
    return counts


def memory_rows(readings: list[tuple[int, int, int]], base_rss: int, budget_bytes: float) -> list[list[str]]:
    """Table rows from (voices resident, RSS bytes, accounted bytes) readings after the models (`base_rss`)."""
    if base_rss <= 0:
        raise ValueError(f"the replica's base memory must be positive, got {base_rss}")
    rows, prev_n, prev_rss = [], 0, base_rss
    for n, rss, accounted in readings:
        if n <= prev_n:
            raise ValueError(f"readings must be for increasing voice counts, got {n} after {prev_n}")
        added = rss - base_rss
        rows.append([n, f"{rss / MIB:,.0f}", f"{added / MIB:,.1f}", f"{100 * added / base_rss:.1f}%",
                     f"{(rss - prev_rss) / (n - prev_n) / MIB:.2f}", f"{added / n / MIB:.2f}",
                     f"{accounted / n / MIB:.2f}", "yes" if accounted <= budget_bytes else "no"])
        prev_n, prev_rss = n, rss
    return rows


def summarise(times: list[float]) -> list[str]:
    """p50, min and max of a list of seconds, as table cells."""
    if not times:
        raise ValueError("no timings to summarise")
    a = np.asarray(times)
    return [f"{np.median(a):.3f}", f"{a.min():.3f}", f"{a.max():.3f}", str(a.size)]


# --------------------------------------------------------------------------- the machine

def rss_bytes() -> int:
    """This process's resident set (Linux), after returning freed heap pages to the system."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the reading then includes freed, unreturned pages
        pass
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_note(start: tuple[float, float, float]) -> str:
    end = os.getloadavg()
    return f"load average (1 min) {start[0]:.1f} at the start, {end[0]:.1f} at the end"


# --------------------------------------------------------------------------- voices

def write_reference(path: Path, seconds: float, base_hz: float) -> Path:
    import soundfile as sf

    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(base_hz + 25 * np.sin(2 * np.pi * 0.6 * t)) / SAMPLE_RATE
    wave = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6)) * 0.5
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path


def write_adapters(pretrained: str, folder: str, count: int) -> None:
    """`count` random adapter files per stage at the default rank and targets (B ~ N(0, 0.01^2))."""
    import torch

    from voicefleet.models import adapters as lora
    from voicefleet.models.adapter_config import ADAPTER_SUFFIX
    from voicefleet.models.checkpoint.gpt_io import load_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits
    from voicefleet.models.pretrained import find_pretrained

    paths = find_pretrained(pretrained)
    for s, (stage, model) in enumerate((("gpt", load_gpt(paths.gpt)[0]), ("sovits", load_sovits(paths.sovits_g).model))):
        fingerprint = lora.base_fingerprint_of(model, stage)
        for i in range(count):
            adapter = lora.Adapter.create(model, lora.AdapterSpec(stage), fingerprint)
            g = torch.Generator().manual_seed(2 * i + s)
            with torch.no_grad():
                for _, layer in adapter.items():
                    layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.01)
            lora.save_adapter(adapter, Path(folder) / f"{i}.{stage}{ADAPTER_SUFFIX}")


class Workbench:
    """The pretrained folder, reference clips and adapter files, and (built on first use) the
    replica's shared models: the `Synthesizer` and the adapter backbone."""

    def __init__(self, root: Path, size: str, distinct: int, reference_s: float):
        from voicefleet.models.pretrained import find_pretrained, init_pretrained

        folder = root / f"pretrained-{size}"
        self.paths = find_pretrained(folder) if folder.is_dir() else init_pretrained(folder, size, seed=0)
        self.distinct = distinct
        refs = root / f"references-{reference_s:g}s"
        refs.mkdir(exist_ok=True)
        self.references = [write_reference(refs / f"{i}.wav", reference_s, 100 + 15 * i) for i in range(distinct)]
        adapters = root / f"adapters-{size}"
        if len(list(adapters.glob("*.safetensors"))) < 2 * distinct:
            adapters.mkdir(exist_ok=True)
            # in a child process: building and freeing the base models here would leave freed heap
            # that the voices then reuse, hiding their memory from the readings
            child = multiprocessing.get_context("spawn").Process(
                target=write_adapters, args=(str(self.paths.root), str(adapters), distinct))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise SystemExit(f"writing the random adapters failed (exit code {child.exitcode})")
        self.adapters = [{stage: adapters / f"{i}.{stage}.lora.safetensors" for stage in ("gpt", "sovits")}
                         for i in range(distinct)]
        self._synth = self._backbone = None

    @property
    def synth(self):
        if self._synth is None:
            from voicefleet.inference.pipeline import Synthesizer

            self._synth = Synthesizer.from_pretrained(self.paths)
        return self._synth

    @property
    def backbone(self):
        if self._backbone is None:
            from voicefleet.inference.adapted import Backbone

            self._backbone = Backbone.load(self.paths)
        return self._backbone

    def adapter_voice(self, i: int):
        from voicefleet.inference.adapted import load_adapter_voice

        files = self.adapters[i % self.distinct]
        return load_adapter_voice(self.synth, self.backbone, f"voice-{i}", gpt=files["gpt"], sovits=files["sovits"],
                                  reference=self.references[i % self.distinct], prompt_text=PROMPT_TEXT,
                                  prompt_lang=PROMPT_LANG)

    def full_voice(self, name: str):
        return self.synth.load_voice(name, self.paths.gpt, self.paths.sovits_g, self.references[0], PROMPT_TEXT,
                                     PROMPT_LANG)

    def release(self) -> None:
        self._synth = self._backbone = None
        gc.collect()


# --------------------------------------------------------------------------- parts

def memory_part(bench: Workbench, counts: list[int], keep_spectrogram: bool, title: str) -> None:
    from voicefleet.inference.adapted import voice_nbytes
    from voicefleet.inference.pipeline import Reference
    from voicefleet.serve.settings import ServeSettings
    from voicefleet.serve.voice_cache import VoiceCache

    if keep_spectrogram:  # the code before the fix: a resident voice keeps its reference's spectrogram
        Reference.compact = lambda self, *args, **kwargs: self
    load0 = os.getloadavg()
    _ = bench.synth, bench.backbone  # the replica's models, before any voice
    base = rss_bytes()
    budget = ServeSettings.model_fields["adapter_memory_mb"].default * MIB
    cache = VoiceCache(max_full=1, max_adapter=counts[-1], adapter_bytes=float("inf"))  # holds them all
    readings, load_s = [], []
    for i in range(counts[-1]):
        t0 = time.perf_counter()
        voice = bench.adapter_voice(i)
        load_s.append(time.perf_counter() - t0)
        cache.put(voice.name, voice, adapter=True, nbytes=voice_nbytes(voice))
        if i + 1 in counts:
            readings.append((i + 1, rss_bytes(), cache.stats()["adapter_bytes"]))
            logging.getLogger(__name__).warning("%d voices resident", i + 1)
    rows = memory_rows(readings, base, budget)
    kept = "spectrogram (before Reference.compact)" if keep_spectrogram else "style"
    report(title + (", reference spectrogram kept" if keep_spectrogram else ""),
           ["adapter voices", "RSS MiB", "added MiB", "added / replica", "MiB per voice (since last row)",
            "MiB per voice (all)", "accounted MiB per voice", "within default adapter_memory_mb"], rows,
           notes=f"Replica's models before any voice (HuBERT, BERT, adapter backbone): {base / MIB:,.0f} MiB RSS. "
                 f"Each voice: rank-8 GPT and SoVITS adapters (default targets, float16), its reference's {kept}, "
                 f"prompt tokens and transcript features; {bench.distinct} distinct adapter files and "
                 f"{len(bench.references)} reference clips cycled, every voice loaded "
                 f"from them. 'accounted' is what the voice cache counts against adapter_memory_mb "
                 f"(default {budget / MIB:,.0f} MiB). Voice load p50 {np.median(load_s):.2f} s. Random-initialised "
                 f"models. {load_note(load0)}.")


def latency_part(bench: Workbench, repeats: int, max_tokens: int, title: str) -> dict[str, list[float]]:
    from voicefleet.inference.pipeline import SynthesisParams, Voice

    load0 = os.getloadavg()
    synth, backbone = bench.synth, bench.backbone
    resident = [bench.adapter_voice(i) for i in range(4)]
    full = bench.full_voice("full")
    bare = Voice("backbone", backbone.generator, backbone.sovits, resident[0].reference, resident[0].prompt)
    params = SynthesisParams(seed=7, max_tokens=max_tokens)

    def request(voice) -> float:
        t0 = time.perf_counter()
        synth.synthesize(voice, LATENCY_TEXT, "zh", params)
        return time.perf_counter() - t0

    for voice in (*resident, full, bare):  # warm-up: first-call allocations and kernels
        request(voice)
    times: dict[str, list[float]] = {k: [] for k in (
        "adapter voice, same as the previous request", "adapter voice, another resident one",
        "adapter voice, not resident: load", "adapter voice, not resident: load + request",
        "full voice, resident", "full voice, not resident: load", "full voice, not resident: load + request",
        "backbone alone (no adapters)")}
    keys = list(times)
    fresh = 10_000  # indices of voices never loaded before
    for r in range(repeats):
        request(resident[0])
        times[keys[0]].append(request(resident[0]))
        times[keys[1]].append(request(resident[1 + r % 3]))
        t0 = time.perf_counter()
        voice = bench.adapter_voice(fresh + r)
        times[keys[2]].append(time.perf_counter() - t0)
        times[keys[3]].append(times[keys[2]][-1] + request(voice))
        times[keys[4]].append(request(full))
        t0 = time.perf_counter()
        voice = bench.full_voice(f"full-{r}")
        times[keys[5]].append(time.perf_counter() - t0)
        times[keys[6]].append(times[keys[5]][-1] + request(voice))
        del voice
        times[keys[7]].append(request(bare))
    rows = [[k, *summarise(v)] for k, v in times.items()]
    fragments = len(synth.fragments(LATENCY_TEXT, "zh", params.text_split_method, backbone.gpt.config.bert_dim))
    audio_s = fragments * max_tokens / 25
    report(title, ["request", "p50 s", "min s", "max s", "n"], rows,
           notes=f"One request: '{LATENCY_TEXT}' (zh, {fragments} fragment(s) of {max_tokens} tokens decoded "
                 f"together = {audio_s:.1f} s of audio; "
                 f"the random GPT never stops early), fp32, {synth_threads()} torch threads, in one process as a replica "
                 f"resolves a voice. A voice's reference clip: {ref_seconds(bench):g} s. Conditions take turns in "
                 f"each repeat. Random-initialised models. {load_note(load0)}.")
    return times


def synth_threads() -> int:
    import torch

    return torch.get_num_threads()


def ref_seconds(bench: Workbench) -> float:
    import soundfile as sf

    return round(sf.info(bench.references[0]).duration, 1)


def load_part(bench: Workbench, args: argparse.Namespace, title: str) -> None:
    import asyncio

    import httpx

    from serve_load import run_load, start_local_app
    from voicefleet.platform.voices import registry_for

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        url, full_ids = start_local_app(args.size, args.full_voices, Path(tmp), "fp32", pretrained=bench.paths)
        registry = registry_for(str(Path(tmp) / "storage"))
        adapter_ids = []
        for i in range(args.adapter_voices):
            # the full voices' reference clips and transcript: the same prompt lengths, so the same GPT work
            files = bench.adapters[i % bench.distinct]
            registry.register(f"lora-{i}", gpt=files["gpt"], sovits=files["sovits"],
                              reference=Path(tmp) / f"ref{i % len(full_ids)}.wav", prompt_text="你好。",
                              prompt_lang="zh")
            adapter_ids.append(f"lora-{i}")
        first, again = [], []
        with httpx.Client(timeout=600) as http:
            body = {"text": "你好。", "lang": "zh", "max_tokens": 10, "seed": 1, "format": "pcm"}
            http.post(f"{url}/v1/tts", json={**body, "voice": full_ids[0]}).raise_for_status()  # replica up
            for voice in adapter_ids:  # first: the voice is loaded (the first one also loads the backbone)
                for out in (first, again):
                    t0 = time.perf_counter()
                    http.post(f"{url}/v1/tts", json={**body, "voice": voice}).raise_for_status()
                    out.append(time.perf_counter() - t0)
        switch_rows = [["first adapter voice of the replica (the backbone is loaded with it)", f"{first[0]:.3f}",
                        "", "", "1"],
                       ["adapter voice, first request (loaded)", *summarise(first[1:] or first)],
                       ["adapter voice, next request (resident)", *summarise(again)]]
        rows, metrics = [], {"adapter": [], "full": []}
        for r in range(args.repeats):
            for kind, ids in (("adapter", adapter_ids), ("full", full_ids)):
                m = asyncio.run(run_load(url, ids, args.clients, args.requests, args.duration, False, args.max_tokens))
                metrics[kind].append(m)
                rows.append([f"{len(ids)} {kind} voices", r + 1, args.clients, m["requests"], m["failed"],
                             f"{m['rps']:.3f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}", f"{m['audio_per_s']:.2f}"])
        from ray import serve

        serve.shutdown()
    ratio = (np.mean([m["audio_per_s"] for m in metrics["adapter"]])
             / np.mean([m["audio_per_s"] for m in metrics["full"]]))
    note = (f"Random-initialised {args.size} models, fp32 (adapter voices are served at fp32), one replica with "
            f"2 synthesis threads x 1 torch thread, batching off, max_tokens {args.max_tokens} per fragment of the "
            f"two-sentence text; every voice (adapter and full) has one of the same 4 s reference clips and "
            f"transcript; each voice warmed before the timed load. {load_note(load0)}.")
    report(f"{title}: voice switch over HTTP", ["request", "p50 s", "min s", "max s", "n"], switch_rows,
           notes=f"'你好。' with max_tokens 10 to each of {len(adapter_ids)} adapter voices in turn, twice. {note}")
    report(f"{title}: closed-loop load", ["voices", "run", "clients", "requests", "failed", "req/s", "p50 s",
                                          "p99 s", "audio s / wall s"], rows,
           notes=f"Throughput over adapter voices / over full voices (mean of runs): {ratio:.2f} (target >= 0.80). "
                 f"{note}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=parse_parts, default=list(PARTS), help=f"comma-separated: {','.join(PARTS)}")
    p.add_argument("--size", choices=["tiny", "full"], default="tiny")
    p.add_argument("--voices", type=parse_counts, default=[1, 10, 100, 500],
                   help="memory: resident adapter voice counts to read at (increasing)")
    p.add_argument("--keep-spectrogram", action="store_true",
                   help="memory: measure the code before Reference.compact (voices keep their reference spectrogram)")
    p.add_argument("--distinct", type=int, default=8, help="distinct adapter files and reference clips, cycled")
    p.add_argument("--reference-seconds", type=float, default=6.0, help="length of the reference clips (3-10 s)")
    p.add_argument("--repeats", type=int, default=6, help="latency: repeats per condition; load: runs per voice kind")
    p.add_argument("--latency-tokens", type=int, default=25, help="latency: tokens decoded per request")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--adapter-voices", type=int, default=32)
    p.add_argument("--full-voices", type=int, default=4)
    p.add_argument("--requests", type=int, default=40, help="load: request cap per run")
    p.add_argument("--duration", type=float, default=240, help="load: seconds cap per run")
    p.add_argument("--max-tokens", type=int, default=40, help="load: token cap per fragment")
    p.add_argument("--workdir", type=Path, help="keep the pretrained folder, clips and adapters here between runs")
    args = p.parse_args()
    if not 3 <= args.reference_seconds <= 10:
        p.error(f"--reference-seconds must be 3-10 (the reference clip limits), got {args.reference_seconds}")
    for name in ("distinct", "repeats", "latency_tokens", "clients", "adapter_voices", "full_voices", "requests",
                 "max_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.keep_spectrogram and args.parts != ["memory"]:
        p.error("--keep-spectrogram changes the voices' memory only: run it with --parts memory")
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        bench = Workbench(root, args.size, args.distinct, args.reference_seconds)
        title = f"Many adapter voices on one replica ({args.size}, {args.reference_seconds:g} s references)"
        for part in args.parts:
            if part == "memory":
                memory_part(bench, args.voices, args.keep_spectrogram, f"{title}: memory")
            elif part == "latency":
                latency_part(bench, args.repeats, args.latency_tokens, f"{title}: voice-switch latency")
            else:
                bench.release()  # the replica loads its own copies
                load_part(bench, args, title)


if __name__ == "__main__":
    main()
