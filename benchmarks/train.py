"""Training throughput on Ray Train: steps/s and samples/s per stage, size and worker count.

    .venv/bin/python benchmarks/train.py [--sizes tiny,full] [--workers 1,2] [--steps 6]

Runs the real `train_stage` (TorchTrainer, DDP over gloo on CPU, nccl on GPU with --gpu) on a
synthetic prepared dataset, with a random pretrained folder of the chosen size. Throughput is
measured by the workers themselves (`steps_per_s` in their reports, after the first evaluation),
so Ray start-up and model loading are not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _report import report  # noqa: E402

from tests.platform.training.synthetic import learnable_examples, write_dataset  # noqa: E402
from voicefleet.models.pretrained import init_pretrained  # noqa: E402
from voicefleet.platform.cluster import ensure_ray  # noqa: E402
from voicefleet.platform.training.api import train_stage  # noqa: E402
from voicefleet.platform.training.config import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,full")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--stages", default="sovits,gpt")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()

    ensure_ray()
    work = Path(tempfile.mkdtemp(prefix="vf-train-bench-"))
    examples = learnable_examples(16, seed=0) + learnable_examples(2, seed=1, prefix="val")
    dataset = write_dataset(work / "dataset", examples, ["train"] * 16 + ["val"] * 2)
    rows = []
    for size in args.sizes.split(","):
        pretrained = init_pretrained(work / f"pretrained-{size}", size)
        for stage in args.stages.split(","):
            for workers in map(int, args.workers.split(",")):
                half = max(1, args.steps // 2)
                cfg = TrainConfig(stage=stage, run_name=f"bench-{stage}-{size}-{workers}-{uuid.uuid4().hex[:6]}",
                                  storage_path=str(work / "runs"), num_workers=workers, use_gpu=args.gpu,
                                  batch_size=args.batch_size, max_steps=2 * half, eval_every=half,
                                  checkpoint_every=half, epochs=1000)
                result = train_stage(cfg, dataset, pretrained.root)
                history = json.loads((Path(result.output_dir) / "report.json").read_text())
                rate = history["final_metrics"]["steps_per_s"]
                rows.append([stage, size, workers, args.batch_size * workers, f"{rate:.3f}",
                             f"{rate * args.batch_size * workers:.2f}"])
                print(rows[-1], flush=True)
    device = "GPU" if args.gpu else "CPU"
    report(f"Fine-tuning throughput on Ray Train ({device})",
           ["stage", "size", "workers", "global batch", "steps/s", "samples/s"], rows,
           notes=f"{2 * max(1, args.steps // 2)} steps per run; rate over the steps of one run attempt after "
                 "its first step (worker-measured); synthetic ~1 s clips; 2-core machine: 2 workers share the cores.")


if __name__ == "__main__":
    main()
