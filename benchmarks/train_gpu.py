"""Mixed precision against fp32 for one training step of each stage: step time and loss agreement.

    python benchmarks/train_gpu.py                                   # one GPU, official sizes
    python benchmarks/train_gpu.py --tiny --steps 2 --warmup 1 --no-record   # smoke test, runs on CPU

Random weights at the official sizes (`voicefleet.models.builders*`: `sovits_v2`,
`discriminator_v2`, `gpt_v2`; `--tiny`: the tiny builders), one synthetic batch, and the training
stages themselves (`SoVITSStage`, `GPTStage`: autocast, GradScaler for fp16, clipping, AdamW).
Each precision starts from the same weights, batch and seed, with dropout off, so:

- step time: median of `--steps` timed steps after `--warmup` untimed ones (CUDA synchronised);
- loss agreement: the first step's losses (computed before its update) against fp32's.

AMP runs only on a GPU (the stages refuse it on CPU); on CPU the table has the fp32 rows only.
Appends the table to benchmarks/RESULTS.md with the GPU's name and the date (not with
`--no-record`). Imports no Ray: torch, numpy and voicefleet's model and stage modules only.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.gpu.common import amp_precisions, make_examples, without_dropout  # noqa: E402
from voicefleet.models.builders import sovits_tiny, sovits_v2  # noqa: E402
from voicefleet.models.builders_discriminator import discriminator_tiny, discriminator_v2  # noqa: E402
from voicefleet.models.builders_gpt import gpt_tiny, gpt_v2  # noqa: E402
from voicefleet.platform.training.batches import collate_gpt, collate_sovits  # noqa: E402
from voicefleet.platform.training.stages import GPTStage, OptimConfig, SoVITSStage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
# the losses compared with fp32, per stage (SoVITS: x45 log-mel L1, KL, and the generator's total)
COMPARED = {"sovits": ("mel", "kl", "total"), "gpt": ("ce",)}


def build(stage: str, tiny: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    if stage == "sovits":
        g = sovits_tiny() if tiny else sovits_v2()
        torch.nn.init.normal_(g.quantizer.codebook.embed)  # a random codebook, as a trained one would be spread
        return {"g": without_dropout(g), "d": without_dropout(discriminator_tiny() if tiny else discriminator_v2())}
    return {"gpt": without_dropout(gpt_tiny() if tiny else gpt_v2())}


def make_stage(stage: str, models: dict[str, torch.nn.Module], device: torch.device, precision: str):
    cfg = OptimConfig(lr=1e-4, precision=precision)
    if stage == "sovits":
        return SoVITSStage(models["g"], models["d"], device, cfg)
    return GPTStage(models["gpt"], device, cfg)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(stage: str, initial: dict[str, torch.nn.Module], batch, device: torch.device, precision: str,
        steps: int, warmup: int) -> tuple[dict[str, float], list[float], float]:
    """(first step's metrics, timed step seconds, peak GPU memory in GiB) for one precision."""
    models = {k: copy.deepcopy(m).to(device) for k, m in initial.items()}
    trainer = make_stage(stage, models, device, precision)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(1)  # the same training slice and noise for every precision
    first = trainer.train_step(batch)
    for _ in range(max(0, warmup - 1)):
        trainer.train_step(batch)
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        trainer.train_step(batch)
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    del models, trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return first, times, peak


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{platform.processor() or platform.machine()} (CPU), torch {torch.__version__}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] + ["| " + " | ".join(r) + " |"
                                                                               for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", default="sovits,gpt")
    parser.add_argument("--steps", type=int, default=20, help="Timed steps per precision (median reported).")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (the first one gives the losses).")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="Length of the shortest synthetic clip.")
    parser.add_argument("--precisions", default=None,
                        help="Mixed precisions to compare with fp32 (default: bf16 where supported, and fp16).")
    parser.add_argument("--tiny", action="store_true", help="Tiny models (a CPU smoke test) instead of official sizes.")
    parser.add_argument("--no-record", action="store_true", help="Print only; do not append to RESULTS.md.")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mixed = args.precisions.split(",") if args.precisions else amp_precisions()
    precisions = ["fp32"] + (mixed if device.type == "cuda" else [])
    examples = make_examples(args.batch_size, seed=0, seconds=args.seconds)
    size = "tiny" if args.tiny else "official"
    rows = []
    for stage in args.stages.split(","):
        initial = build(stage, args.tiny)
        batch = (collate_sovits(examples) if stage == "sovits" else collate_gpt(examples)).to(device)
        base_first, base_ms = None, None
        for precision in precisions:
            first, times, peak = run(stage, initial, batch, device, precision, args.steps, args.warmup)
            ms = 1000 * statistics.median(times)
            if precision == "fp32":
                base_first, base_ms = first, ms
            losses = ", ".join(
                f"{k} {first[k]:.4g}" + ("" if precision == "fp32" else
                                         f" ({100 * (first[k] - base_first[k]) / abs(base_first[k]):+.2f}%)")
                for k in COMPARED[stage])
            rows.append([stage, size, precision, f"{ms:.1f}", f"{base_ms / ms:.2f}x", losses,
                         "-" if peak != peak else f"{peak:.2f}"])
            print(" | ".join(rows[-1]), flush=True)
        del initial

    headers = ["stage", "size", "precision", "step ms (median)", "speed-up vs fp32",
               "first-step losses (vs fp32)", "peak GiB"]
    title = f"Training step, mixed precision vs fp32 ({size} size, batch {args.batch_size})"
    notes = (f"{args.steps} timed steps after {args.warmup} warm-up steps per row; same weights, batch and seed, "
             "dropout off. Losses: the first step's, before its update; SoVITS mel = 45 x log-mel L1.")
    lines = [f"\n## {title}\n", f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} — {machine(device)}\n",
             *table(headers, rows), "", notes]
    print("\n".join(lines))
    if not args.no_record:
        with RESULTS.open("a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
