"""The two training recipes compared on one voice: `official` vs `voicefleet`, from the same base,
and LoRA adapters (`--adapter lora`) beside full fine-tuning.

    VOICEFLEET_TEXT_DATA=... NLTK_DATA=... .venv/bin/python benchmarks/recipes.py \
        [--base-steps 300] [--steps 160] [--round 20] [--threads 1] [--work DIR] \
        [--recipes official,voicefleet] [--adapter-ranks 8,32] [--alpha 16 --alpha-rule fixed]

A random tiny pretrained folder says nothing about a recipe, so the script first makes a base
that has learnt something, then fine-tunes it to another speaker with each recipe:

1. two espeak-ng voices read English sentences: the base speaker (A, a low male voice) and the
   target speaker (B, a raised female voice); eight sentences are held out of all training;
2. `prepare_dataset` (Ray Data) turns both list files into datasets, with a tiny random pretrained
   folder (`init_pretrained`);
3. the base: both stages of that tiny folder trained on A for `--base-steps` steps, written as a
   pretrained folder in the official layout (its HuBERT, quantizer and SSL projection are frozen by
   both recipes, so the prepared semantic tokens stay valid);
4. from the base, both stages fine-tuned on B with `--recipe official` and `--recipe voicefleet`
   for the same number of optimizer steps, with the sweep trial's engine
   (`voicefleet.tuning.finetune.VoiceFinetune`, the code Ray Train workers run for `voicefleet
   tune`, here in one process so that two shared cores go to training, not to Ray start-ups).
   Every `--round` steps: the sweep objective `val_objective` (held-out text -> GPT -> SoVITS,
   DTW log-mel L1 to the recording), SoVITS `val_recon` and GPT `val_ce`;
5. `evaluate_list` (`voicefleet eval`) on the held-out lines of B for the base and each fine-tuned
   voice (each given the same reference clip of B), plus the similarity of each synthesis to
   speaker A, and the real clips as the ceiling and floor of what the instruments give;
6. with `--adapter-ranks`, LoRA adapter runs (voicefleet recipe, the default targets, both stages)
   from the same base on the same data for the same steps, beside full fine-tuning: the same curves
   and scores (each adapter voice scored through its merged weights, as `voicefleet export` writes
   them: the same outputs to float tolerance), the adapter files' size against the full voice's, and
   what the adapters would weigh at the full v2 size (counted on the full-size models' target layers).

Prints the tables, writes `benchmarks/recipes.png` (`benchmarks/adapters.png` when adapters ran)
and appends to `benchmarks/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

from voicefleet.models import adapters as lora  # noqa: E402
from voicefleet.models.checkpoint.discriminator_io import save_discriminator  # noqa: E402
from voicefleet.models.checkpoint.gpt_io import load_gpt, save_gpt  # noqa: E402
from voicefleet.models.checkpoint.sovits_io import load_sovits, save_sovits_export, save_sovits_pretrained  # noqa: E402
from voicefleet.models.pretrained import PretrainedPaths, init_pretrained, official_s1_config  # noqa: E402
from voicefleet.platform.cluster import ensure_ray  # noqa: E402
from voicefleet.platform.data import PrepareConfig, StageResources, prepare_dataset  # noqa: E402
from voicefleet.platform.evaluation import VoiceSource, evaluate_list  # noqa: E402
from voicefleet.platform.training.config import TrainConfig  # noqa: E402
from voicefleet.platform.training.data import load_examples  # noqa: E402
from voicefleet.platform.training.stages import unwrap  # noqa: E402
from voicefleet.platform.voices import merged_stage  # noqa: E402
from voicefleet.tuning.config import AdapterPlan, SweepConfig  # noqa: E402
from voicefleet.tuning.finetune import VoiceFinetune, stage_configs  # noqa: E402

logger = logging.getLogger("recipes")
PLOT = Path(__file__).resolve().parent / "recipes.png"
ADAPTER_PLOT = Path(__file__).resolve().parent / "adapters.png"
# speaker -> espeak-ng arguments: two clearly different voices
VOICES = {"A": ["-v", "en-us+m3", "-s", "135", "-p", "35"], "B": ["-v", "en-us+f3", "-s", "150", "-p", "75"]}
HELD_OUT = 8  # the first sentences: never trained on, by either voice
SENTENCES = (
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Open the door and turn on the light.",
    "I would like a cup of coffee in the morning.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "Please call Stella and ask her to bring these things from the store.",
    "The train leaves the station at seven every evening.",
    "She keeps her old letters in a wooden box.",
    "We walked along the river until it got dark.",
    "The children played in the garden after lunch.",
    "My brother fixed the bicycle with a new chain.",
    "The market is closed on the first day of the year.",
    "He wrote the number on the back of his hand.",
    "The cat slept on the warm stone by the fire.",
    "Rain fell on the roof all through the night.",
    "They painted the kitchen a pale shade of green.",
    "The teacher read a story to the whole class.",
    "Bring a coat, the wind is cold on the hill.",
    "The old clock in the hall stopped at noon.",
    "We need more bread, milk and a dozen eggs.",
    "The plane landed safely in the heavy fog.",
    "Her voice was calm and her answer was short.",
    "The farmer sold his apples at the village fair.",
    "A small boat drifted slowly toward the shore.",
    "The meeting will start as soon as everyone is here.",
    "He left his keys on the table by the window.",
    "The dog ran across the field to greet us.",
    "Fresh snow covered the mountain road this morning.",
    "The library opens at nine and closes at six.",
    "She sang a quiet song to the sleeping baby.",
    "The bridge was built more than a hundred years ago.",
    "Turn left at the corner and walk two blocks.",
    "The soup tastes better with a little salt.",
    "Our neighbours planted a tree in front of their house.",
    "The lamp on the desk gives a soft yellow light.",
    "Every summer we travel to the sea for a week.",
    "The shop on the corner sells maps and postcards.",
    "He counted the coins twice before paying.",
    "The path through the forest is narrow and steep.",
    "A loud noise woke the whole street at midnight.",
    "The doctor told him to rest for a few days.",
    "Water boils faster when the pot has a lid.",
    "The painting shows a harbour at sunset.",
    "She found a silver ring in the sand.",
    "The horses waited patiently by the gate.",
    "Please write your name at the top of the page.",
    "The fire kept us warm during the long winter.",
    "The new road will open next month.",
    "He carried the heavy box up three flights of stairs.",
    "The orange juice was cold and very sweet.",
    "We watched the stars from the top of the tower.",
    "The museum has a fine collection of old coins.",
    "The baker wakes up before dawn every day.",
)


def speak(path: Path, speaker: str, text: str) -> Path:
    subprocess.run(["espeak-ng", *VOICES[speaker], "-w", str(path), text], check=True, capture_output=True)
    return path


def write_list(path: Path, rows: list[tuple[Path, str, str]]) -> Path:
    path.write_text("".join(f"{wav.relative_to(path.parent)}|{spk}|en|{text}\n" for wav, spk, text in rows),
                    encoding="utf-8")
    return path


def make_corpus(root: Path, n_base: int, n_target: int) -> dict:
    """Both voices' clips and list files: base.list (A), target.list (B), heldout.list (B's held-out
    lines), plus a 3-10 s reference clip of each speaker."""
    if shutil.which("espeak-ng") is None:
        raise SystemExit("this benchmark needs espeak-ng (apt-get install espeak-ng)")
    trainable = SENTENCES[HELD_OUT:]
    if max(n_base, n_target) > len(trainable):
        raise SystemExit(f"at most {len(trainable)} training sentences per voice")
    (root / "wavs").mkdir(parents=True, exist_ok=True)
    clips: dict[str, list[tuple[Path, str, str]]] = {}
    for speaker, texts in (("A", SENTENCES[:HELD_OUT] + trainable[:n_base]),
                           ("B", SENTENCES[:HELD_OUT] + trainable[-n_target:])):
        clips[speaker] = [(speak(root / "wavs" / f"{speaker}{i:03d}.wav", speaker, t), speaker, t)
                          for i, t in enumerate(texts)]
    out = {"base": write_list(root / "base.list", clips["A"][HELD_OUT:]),
           "target": write_list(root / "target.list", clips["B"][HELD_OUT:]),
           "heldout": write_list(root / "heldout.list", clips["B"][:HELD_OUT])}
    for speaker in ("A", "B"):  # two training sentences back to back: a 3-10 s reference clip
        (first, _, t1), (second, _, t2) = clips[speaker][HELD_OUT:HELD_OUT + 2]
        a, sr = sf.read(first, dtype="float32")
        b, _ = sf.read(second, dtype="float32")
        sf.write(root / f"ref{speaker}.wav", np.concatenate([a, np.zeros(sr // 4, np.float32), b]), sr)
        out[f"ref{speaker}"], out[f"ref{speaker}_text"] = root / f"ref{speaker}.wav", f"{t1} {t2}"
    return out


def finetune(recipe: str, pretrained: PretrainedPaths, dataset: Path, steps: int, round_steps: int, *,
             seed: int, batch_size: int, progress_label: str, adapter: AdapterPlan | None = None,
             **overrides) -> tuple[VoiceFinetune, list[dict]]:
    """Both stages trained in rounds as a sweep trial does (with `adapter`: LoRA adapters only, as an
    adapter sweep's trial); returns the models and one row per round (step 0 is the starting point)."""
    base = TrainConfig(stage="sovits", run_name="bench", recipe=recipe, seed=seed, batch_size=batch_size,
                       epochs=10_000, eval_every=round_steps, checkpoint_every=round_steps, **overrides)
    configs = stage_configs(base, {}, steps, base.schedule.min_warmup_steps, adapter)
    files = {"gpt": str(pretrained.gpt), "sovits_g": str(pretrained.sovits_g), "sovits_d": str(pretrained.sovits_d)}
    run = VoiceFinetune(configs, files, load_examples(dataset, "train"), load_examples(dataset, "val"),
                        device=torch.device("cpu"))
    rows = [{"step": 0, **run.evaluate(max_tokens=200)}]
    started = time.perf_counter()
    with Progress() as bar:
        task = bar.add_task(progress_label, total=steps)
        while run.steps("sovits") < steps:
            n = min(round_steps, steps - run.steps("sovits"))
            train = {**run.train("sovits", n), **run.train("gpt", n)}
            row = {"step": run.steps("sovits"), "lr_sovits": run.learning_rate("sovits"),
                   "lr_gpt": run.learning_rate("gpt"), **train, **run.evaluate(max_tokens=200),
                   "elapsed_s": time.perf_counter() - started}
            rows.append(row)
            bar.update(task, advance=n)
            logger.info("%s step %d: val_objective %.3f val_recon %.3f val_ce %.3f", progress_label, row["step"],
                        row["val_objective"], row["val_recon"], row["val_ce"])
    return run, rows


def save_as_pretrained(run: VoiceFinetune, source: PretrainedPaths, root: Path) -> PretrainedPaths:
    """The trained models as a pretrained folder in the official layout (HuBERT and BERT copied)."""
    paths = PretrainedPaths.of(root)
    paths.gpt.parent.mkdir(parents=True, exist_ok=True)
    for folder in ("hubert", "bert"):
        shutil.copytree(getattr(source, folder), getattr(paths, folder), dirs_exist_ok=True)
    gpt = unwrap(run.stages["gpt"].models["gpt"])
    save_gpt(gpt, official_s1_config(gpt.config, name="base"), paths.gpt, info="GPT-base", overwrite=True)
    save_sovits_pretrained(unwrap(run.stages["sovits"].models["generator"]), paths.sovits_g, info="base",
                           overwrite=True)
    save_discriminator(unwrap(run.stages["sovits"].models["discriminator"]), paths.sovits_d, overwrite=True)
    return paths


def export_voice(run: VoiceFinetune, folder: Path, name: str) -> tuple[Path, Path]:
    """The fine-tuned voice in the official export formats (what `voicefleet train` hands back)."""
    folder.mkdir(parents=True, exist_ok=True)
    gpt = unwrap(run.stages["gpt"].models["gpt"])
    gpt_path = save_gpt(gpt, official_s1_config(gpt.config, name=name), folder / f"{name}.ckpt", info="GPT-e1",
                        overwrite=True)
    sovits_path = save_sovits_export(unwrap(run.stages["sovits"].models["generator"]), folder / f"{name}.pth",
                                     name=name, overwrite=True)
    return gpt_path, sovits_path


def export_adapter_voice(run: VoiceFinetune, base: PretrainedPaths, folder: Path, name: str
                         ) -> tuple[tuple[Path, Path], dict[str, Path]]:
    """The adapter voice's files (`<name>.<stage>.lora.safetensors`, float16, as `voicefleet train
    --adapter lora` exports them) and the same voice merged into official files, for scoring."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {stage: lora.save_adapter(run.stages[stage].stage.adapter, folder / f"{name}.{stage}.lora.safetensors")
             for stage in ("gpt", "sovits")}
    gpt = merged_stage(load_gpt(base.gpt)[0], files["gpt"])
    sovits = merged_stage(load_sovits(base.sovits_g).model, files["sovits"])
    gpt_path = save_gpt(gpt, official_s1_config(gpt.config, name=name), folder / f"{name}.ckpt", info="GPT-e1",
                        overwrite=True)
    sovits_path = save_sovits_export(sovits, folder / f"{name}.pth", name=name, overwrite=True)
    return (gpt_path, sovits_path), files


def trained_parameters(run: VoiceFinetune) -> int:
    """Parameters the run trained in the voice's two networks (the discriminator is not part of a voice)."""
    models = [run.stages["gpt"].models["gpt"], run.stages["sovits"].models["generator"]]
    return sum(p.numel() for m in models for p in unwrap(m).parameters() if p.requires_grad)


def full_size_adapter_bytes(ranks: list[int], alpha: float) -> tuple[dict[int, int], int]:
    """What each rank's adapters (default targets, both stages, float16) and a full voice (GPT +
    SoVITS generator, float16) weigh at the full v2 size, counted on the full-size models."""
    from voicefleet.models.builders import sovits_v2
    from voicefleet.models.builders_gpt import gpt_v2

    models = {"gpt": gpt_v2(), "sovits": sovits_v2()}
    full = sum(p.numel() for m in models.values() for p in m.parameters()) * 2
    sizes = {}
    for rank in ranks:
        count = 0
        for stage, model in models.items():
            for layer in lora.target_layers(model, lora.AdapterSpec(stage, rank, alpha)).values():
                out_ch, in_ch, *kernel = layer.weight.shape
                count += rank * (in_ch * (kernel[0] if kernel else 1) + out_ch)
        sizes[rank] = count * 2
    return sizes, full


def check_frozen_parts(before: PretrainedPaths, after: PretrainedPaths) -> None:
    """The prepared semantic tokens come from HuBERT + SSL projection + quantizer: the base must not
    have changed them, or the datasets would no longer match it."""
    from voicefleet.models.checkpoint.sovits_io import load_sovits

    old, new = load_sovits(before.sovits_g).model.state_dict(), load_sovits(after.sovits_g).model.state_dict()
    changed = [k for k in old if k.startswith(("ssl_proj.", "quantizer.")) and not torch.equal(old[k], new[k])]
    if changed:
        raise SystemExit(f"the base changed frozen parameters {changed[:3]}: its tokens differ from the datasets'")


def plot(curves: dict[str, list[dict]], base_steps: int, path: Path, sizes: dict[str, int] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("val_objective", "sweep objective: held-out text -> GPT -> SoVITS,\nDTW log-mel L1 (lower is better)"),
              ("val_recon", "SoVITS validation reconstruction (mel L1)"), ("val_ce", "GPT validation cross-entropy")]
    fig, axes = plt.subplots(1, len(panels) + bool(sizes), figsize=(13 + 4 * bool(sizes), 3.8))
    if sizes:
        ax = axes[-1]
        ax.bar(list(sizes), [v / 1e6 for v in sizes.values()], color="tab:gray")
        ax.set_yscale("log")
        ax.set_ylabel("MB (float16)")
        ax.set_title("voice size at the full v2 size\n(GPT + SoVITS; adapters: default targets)", fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    for ax, (key, title) in zip(axes, panels):
        for name, rows in curves.items():
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=name,
                    linestyle="--" if name.startswith("lora") else "-")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer steps (each stage)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Fine-tuning a base (tiny, {base_steps} steps on espeak-ng voice A) to voice B", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-clips", type=int, default=40, help="training sentences of speaker A")
    parser.add_argument("--target-clips", type=int, default=24, help="training sentences of speaker B")
    parser.add_argument("--base-steps", type=int, default=300, help="steps of each stage that make the base")
    parser.add_argument("--base-lr", type=float, default=5e-4, help="SoVITS rate of the base training "
                        "(voicefleet recipe; a random tiny model learns nothing at the fine-tuning rate)")
    parser.add_argument("--steps", type=int, default=160, help="fine-tuning steps of each stage, per run")
    parser.add_argument("--round", type=int, default=20, help="steps between evaluations")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--recipes", default="official,voicefleet", help="full fine-tuning runs, by recipe")
    parser.add_argument("--adapter-ranks", default="", help="LoRA runs beside them (voicefleet recipe), one per "
                        "rank, e.g. 8,32 (default: none)")
    parser.add_argument("--adapter-lrs", default="", help="SoVITS base rates of the LoRA runs (the GPT's follows by "
                        "the recipe's ratio), each rank at each, e.g. 1e-4,1e-3 (default: the recipe's, as full "
                        "fine-tuning)")
    parser.add_argument("--alpha", type=float, default=SweepConfig.model_fields["lora_alpha"].default)
    parser.add_argument("--alpha-rule", choices=("fixed", "scaled"),
                        default=SweepConfig.model_fields["alpha_rule"].default, help="as `voicefleet tune`'s")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one; "
                        "a folder of an earlier run keeps its corpus, datasets and base)")
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    ranks = [int(r) for r in args.adapter_ranks.split(",") if r.strip()]
    lrs = [float(r) for r in args.adapter_lrs.split(",") if r.strip()] or [None]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("voicefleet.models", "voicefleet.inference", "voicefleet.platform.evaluation"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="vf-recipes-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    logger.info("speaking %d + %d training and %d held-out sentences with espeak-ng into %s", args.base_clips,
                args.target_clips, HELD_OUT, work)
    corpus = make_corpus(work / "corpus", args.base_clips, args.target_clips)
    tiny = (PretrainedPaths.of(work / "pretrained-tiny") if (work / "pretrained-tiny").exists()
            else init_pretrained(work / "pretrained-tiny", "tiny", seed=0))
    ensure_ray(num_cpus=2)
    resources = PrepareConfig(cpu_num_cpus=0.25, cpu_concurrency=2, cpu_batch_size=8,
                              audio_stage=StageResources(concurrency=1, num_cpus=0.5, batch_size=4),
                              text_stage=StageResources(concurrency=1, num_cpus=0.25, batch_size=8))
    datasets = {}
    for name in ("base", "target"):
        result = prepare_dataset(corpus[name], tiny.root, work / f"data-{name}", config=resources)
        if result.rejected:
            raise SystemExit(f"{name}: clips rejected by preparation: {result.rejects_by_reason}")
        datasets[name] = result.out_dir
    prepared_s = time.perf_counter() - started

    base_marker = work / f"pretrained-base.{args.base_steps}-steps"
    if base_marker.exists():
        logger.info("reusing the base of an earlier run in %s", work)
        base = PretrainedPaths.of(work / "pretrained-base")
    else:
        logger.info("training the base on speaker A: %d steps per stage", args.base_steps)
        base_run, _ = finetune("voicefleet", tiny, datasets["base"], args.base_steps,
                               max(args.round, args.base_steps // 3), seed=args.seed, batch_size=args.batch_size,
                               progress_label="base (speaker A)", sovits_lr=args.base_lr)
        base = save_as_pretrained(base_run, tiny, work / "pretrained-base")
        check_frozen_parts(tiny, base)
        del base_run
        base_marker.touch()
    base_s = time.perf_counter() - started - prepared_s

    runs = [(recipe, recipe, None, None) for recipe in recipes] + [
        (f"lora r{r}" + (f" lr {lr:g}" if lr else ""), "voicefleet", r, lr) for r in ranks for lr in lrs]
    curves, voices, times, sizes, trained = {}, {}, {}, {}, {}
    for name, recipe, rank, lr in runs:
        plan = None if rank is None else AdapterPlan(rank=rank, alpha=args.alpha, alpha_rule=args.alpha_rule,
                                                     targets={"sovits": None, "gpt": None})
        t0 = time.perf_counter()
        run, rows = finetune(recipe, base, datasets["target"], args.steps, args.round, seed=args.seed,
                             batch_size=args.batch_size, progress_label=f"{name} (speaker B)", adapter=plan,
                             **({"sovits_lr": lr} if lr else {}))
        times[name] = time.perf_counter() - t0
        curves[name], trained[name] = rows, trained_parameters(run)
        key = name.replace(" ", "-")
        if plan is None:
            voices[name] = export_voice(run, work / "voices", key)
            sizes[name] = sum(p.stat().st_size for p in voices[name])
        else:
            voices[name], files = export_adapter_voice(run, base, work / "voices", key)
            sizes[name] = sum(p.stat().st_size for p in files.values())
        del run
    (work / "curves.json").write_text(json.dumps(curves, indent=1))
    full_sizes = {}
    if ranks:
        at_rank, full = full_size_adapter_bytes(ranks, args.alpha)
        full_sizes = {name: full if rank is None else at_rank[rank] for name, _, rank, _ in runs}
    bars = {"full voice" if rank is None else f"lora r{rank}": full_sizes[name] for name, _, rank, _ in runs}
    plot(curves, args.base_steps, ADAPTER_PLOT if ranks else PLOT, bars if ranks else None)

    logger.info("scoring the held-out lines of speaker B with voicefleet eval")
    ref = dict(ref=corpus["refB"], ref_text=corpus["refB_text"], ref_lang="en")
    scored = {}
    candidates = [("base", "base (before fine-tuning)", (None, None)),
                  *[(name.replace(" ", "-"), f"fine-tuned, {name}", files) for name, files in voices.items()]]
    for key, label, (gpt, sovits) in candidates:
        out = work / "eval" / key
        result = evaluate_list(corpus["heldout"], out, voice=VoiceSource(gpt=gpt, sovits=sovits, **ref),
                               pretrained=base.root, seed=0, overwrite=True)
        # the same syntheses against speaker A: `voicefleet eval synth.list --against refA.wav`
        synth_list = write_list(work / "eval" / f"{key}-synth.list",
                                [(out / u["synthesis"], "synth", u["text"]) for u in result.utterances])
        other = evaluate_list(synth_list, work / "eval" / f"{key}-vs-A", against=corpus["refA"],
                              metrics="similarity", overwrite=True)
        scored[label] = (result.summary, other.summary["speaker_similarity"])
    real_b = evaluate_list(corpus["heldout"], work / "eval" / "real", against=corpus["refB"], overwrite=True)
    real_a = evaluate_list(corpus["heldout"], work / "eval" / "real-vs-A", against=corpus["refA"],
                           metrics="similarity", overwrite=True)
    total_s = time.perf_counter() - started

    lora_note = (f" LoRA runs: voicefleet recipe at its default rates (the same as full fine-tuning) unless the "
                 f"name gives the SoVITS base rate (the GPT's follows by the recipe's ratio 0.4), default "
                 f"targets (GPT attn,ffn; SoVITS text_encoder,flow), alpha {args.alpha:g} ({args.alpha_rule}), "
                 f"only the adapters trained (the SoVITS discriminator trains as in every run); each adapter voice "
                 f"is scored through its weights merged into the base." if ranks else "")
    common = (f"`benchmarks/recipes.py --base-steps {args.base_steps} --steps {args.steps} --round {args.round} "
              f"--batch-size {args.batch_size} --seed {args.seed} --recipes {','.join(recipes)}"
              f"{' --adapter-ranks ' + ','.join(map(str, ranks)) if ranks else ''}"
              f"{' --adapter-lrs ' + args.adapter_lrs if args.adapter_lrs else ''}`: tiny models; base = the tiny "
              f"random folder trained {args.base_steps} steps per stage on espeak-ng voice A ({args.base_clips} "
              f"sentences, voicefleet recipe, SoVITS rate {args.base_lr:g}); fine-tuned on voice B "
              f"({args.target_clips} sentences) from that base. One optimizer step: SoVITS one batch of "
              f"{args.batch_size}; GPT one batch (voicefleet) or 4 accumulated (official).{lora_note} machine shared "
              f"with other jobs while it ran; torch at {args.threads} thread(s); whole script {total_s / 60:.1f} min "
              f"(preparation {prepared_s:.0f} s, base {base_s:.0f} s, fine-tuning " +
              " / ".join(f"{times[n]:.0f} s {n}" for n in times) + ").")
    names = list(curves)
    curve_rows = [[curves[names[0]][i]["step"], *[fmt(curves[n][i][k]) for k in ("val_objective", "val_recon", "val_ce")
                                                  for n in names]]
                  for i in range(len(curves[names[0]]))]
    headers = ["step", *[f"{label} {n}" for label in ("objective", "val_recon", "val_ce") for n in names]]
    eval_rows = [[name, fmt(s["speaker_similarity"]), fmt(s["speaker_similarity_to_ref"]), fmt(other),
                  f"{fmt(s['dnsmos_sig'], 2)} / {fmt(s['dnsmos_bak'], 2)} / {fmt(s['dnsmos_ovrl'], 2)}",
                  fmt(s["wer"], 2), fmt(s["duration_ratio"], 2)] for name, (s, other) in scored.items()]
    rb = real_b.summary
    eval_rows.append(["real clips of B (ceiling)", "-", fmt(rb["speaker_similarity"]),
                      fmt(real_a.summary["speaker_similarity"]),
                      f"{fmt(rb['dnsmos_sig'], 2)} / {fmt(rb['dnsmos_bak'], 2)} / {fmt(rb['dnsmos_ovrl'], 2)}",
                      fmt(rb["wer"], 2), "1.00"])
    eval_headers = ["voice", "similarity to B (per line)", "similarity to B's reference", "similarity to A",
                    "DNSMOS SIG / BAK / OVRL", "WER", "duration ratio"]
    size_headers = ["run", "trained parameters", "voice files (tiny)", "at full v2 size (float16)",
                    "best objective (step)", "final objective", "final val_recon", "final val_ce", "fine-tuning s"]
    size_rows = []
    for n in names:
        best = min(curves[n][1:], key=lambda r: r["val_objective"])
        size_rows.append([n, f"{trained[n]:,}", f"{sizes[n] / 1e6:.2f} MB",
                          f"{full_sizes[n] / 1e6:.1f} MB" if n in full_sizes else "-",
                          f"{fmt(best['val_objective'])} ({best['step']})", fmt(curves[n][-1]["val_objective"]),
                          fmt(curves[n][-1]["val_recon"]), fmt(curves[n][-1]["val_ce"]), f"{times[n]:.0f}"])
    tables = [("validation over steps", headers, curve_rows), ("voicefleet eval of held-out lines", eval_headers,
                                                               eval_rows)]
    if ranks:
        tables.append(("size and final losses", size_headers, size_rows))
    if args.no_report:
        from rich.console import Console
        from rich.table import Table

        for title, heads, body in tables:
            table = Table(title=title)
            for h in heads:
                table.add_column(h)
            for row in body:
                table.add_row(*map(str, row))
            Console().print(table)
        return
    subject = "Full fine-tuning vs LoRA adapters" if ranks else "Recipes compared"
    plot_name = (ADAPTER_PLOT if ranks else PLOT).name
    notes = {
        "validation over steps": " objective = `val_objective`, the sweep objective on B's validation clips; "
                                 "val_recon = SoVITS mel L1 decoding the clips' own tokens; val_ce = GPT cross-entropy "
                                 f"per target. Plot: `benchmarks/{plot_name}`.",
        "voicefleet eval of held-out lines": f" {HELD_OUT} held-out sentences of B (never trained on), each voice "
                                             "given the same reference clip of B; similarity to A = each synthesis "
                                             "against one clip of A; the last row scores the real clips of B (against "
                                             "B's reference and against A's clip).",
        "size and final losses": " voice files (tiny) = the exported voice as stored: full runs the official .pth + "
                                 ".ckpt, LoRA runs the two .lora.safetensors files (float16); at full v2 size = GPT + "
                                 "SoVITS generator parameters (full) or the adapters on the full-size models' target "
                                 "layers (LoRA), 2 bytes each.",
    }
    for title, heads, body in tables:
        report(f"{subject} on one voice (tiny, espeak-ng A -> B), {title}", heads, body, notes=common + notes[title])


if __name__ == "__main__":
    main()
