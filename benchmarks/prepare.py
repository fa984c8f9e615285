"""Data preparation throughput on Ray Data (CPU): clips/s and audio-seconds/s, 1 and 2 workers.

    .venv/bin/python benchmarks/prepare.py [--clips 32] [--workers 1,2] [--hubert tiny,full]

A generated corpus of voice-like clips (3-5 s, half zh, half en) goes through `prepare_dataset`
with a tiny pretrained folder whose HuBERT is either the tiny one or a random one at the official
chinese-hubert-base size (`write_full_hubert`; random weights cost what real ones do). SoVITS and
BERT stay tiny, so the numbers are about the audio path (decode, checks, HuBERT, tokens) plus the
text front end.

Each configuration first runs a 4-clip warm-up (Ray's task workers start and import the audio
stack, which later runs reuse), then one timed run into a fresh folder. "End to end" is that run's
wall time, actor start-up and model loading included; "start-up" is the time until the first block
of rows comes out; "steady" counts the remaining rows over the remaining time. Workers = actors per
model stage (text + BERT, HuBERT + tokens); every actor runs torch on one thread.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

from voicefleet.models.feature_folders import write_full_hubert  # noqa: E402
from voicefleet.models.pretrained import init_pretrained  # noqa: E402
from voicefleet.platform.cluster import ensure_ray  # noqa: E402
from voicefleet.platform.data import PrepareConfig, StageResources, prepare_dataset  # noqa: E402
from voicefleet.platform.data.synthetic import voice_like  # noqa: E402

TEXTS = {"zh": "你好，今天天气很好，我们一起去公园散步吧。", "en": "The quick brown fox jumps over the lazy dog."}


def write_corpus(folder: Path, n: int, seed: int = 0) -> tuple[Path, float]:
    """`n` clean clips and their list file; returns (list path, total seconds)."""
    rng = np.random.default_rng(seed)
    (folder / "wavs").mkdir(parents=True)
    lines, seconds = [], 0.0
    for i in range(n):
        lang = "zh" if i % 2 == 0 else "en"
        duration = float(rng.uniform(3.0, 5.0))
        sf.write(folder / "wavs" / f"c{i:04d}.wav", voice_like(duration, 32000, seed=seed * 10_000 + i), 32000)
        lines.append(f"wavs/c{i:04d}.wav|spk{i % 2}|{lang}|{TEXTS[lang]}")
        seconds += duration
    (folder / "voice.list").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder / "voice.list", seconds


def config_for(workers: int) -> PrepareConfig:
    # at most 2 decode tasks at once: on 2 cores, more task worker processes starting together
    # (each importing torch) only delay the actors' start
    return PrepareConfig(cpu_num_cpus=0.25, cpu_concurrency=2, cpu_batch_size=4,
                         audio_stage=StageResources(concurrency=workers, num_cpus=0.5, batch_size=2),
                         text_stage=StageResources(concurrency=workers, num_cpus=0.25, batch_size=4))


def timed_run(list_path: Path, pretrained: Path, out: Path, config: PrepareConfig) -> tuple[float, float, int]:
    """(wall seconds, seconds until the first block of rows finished, rows in that block)."""
    marks: list[tuple[float, int]] = []
    start = time.perf_counter()
    result = prepare_dataset(list_path, pretrained, out, config=config,
                             progress=lambda done, total: marks.append((time.perf_counter() - start, done)))
    elapsed = time.perf_counter() - start
    if result.rejected:
        raise RuntimeError(f"benchmark clips were rejected: {result.rejects_by_reason}")
    first = next((t, n) for t, n in marks if n > 0)
    return elapsed, first[0], first[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=32, help="clips in the timed run")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--hubert", default="tiny,full")
    args = parser.parse_args()

    ensure_ray(num_cpus=os.cpu_count())
    rows = []
    with tempfile.TemporaryDirectory(prefix="vf-bench-prepare-") as tmp:
        tmp = Path(tmp)
        warmup, _ = write_corpus(tmp / "warmup", 4, seed=0)
        corpus, seconds = write_corpus(tmp / "corpus", args.clips, seed=1)
        for size in args.hubert.split(","):
            pretrained = init_pretrained(tmp / f"pretrained-{size}", "tiny", seed=0)
            if size == "full":
                shutil.rmtree(pretrained.hubert)
                write_full_hubert(pretrained.hubert, seed=0)
            for workers in (int(w) for w in args.workers.split(",")):
                config = config_for(workers)
                timed_run(warmup, pretrained.root, tmp / f"out-{size}-{workers}-w", config)
                wall, startup, first_rows = timed_run(corpus, pretrained.root, tmp / f"out-{size}-{workers}", config)
                steady_rows = args.clips - first_rows
                steady = steady_rows / max(wall - startup, 1e-6)
                rows.append([size, workers, args.clips, f"{seconds:.0f}", f"{wall:.1f}", f"{args.clips / wall:.2f}",
                             f"{seconds / wall:.1f}", f"{startup:.1f}", f"{steady:.2f}",
                             f"{steady * seconds / args.clips:.1f}"])
                print(rows[-1], flush=True)
    report("Data preparation throughput on Ray Data (CPU)",
           ["HuBERT", "workers", "clips", "audio s", "wall s", "clips/s", "audio s/s", "start-up s",
            "steady clips/s", "steady audio s/s"], rows,
           notes=(f"`benchmarks/prepare.py --clips {args.clips}`: voice-like 3-5 s clips, half zh / half en; tiny "
                  "SoVITS and BERT; wall time includes actor start-up and model loading; start-up = until the "
                  "first block of 4 rows is out; steady = the other rows over the rest of the time. Workers = "
                  "actors per model stage (text+BERT, HuBERT+tokens), one torch thread each; 2 cores, so 2 "
                  "workers start 4 actors on 2 cores."))


if __name__ == "__main__":
    main()
