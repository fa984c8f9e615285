"""The two training recipes compared on one voice: `official` vs `voicefleet`, from the same base.

    VOICEFLEET_TEXT_DATA=... NLTK_DATA=... .venv/bin/python benchmarks/recipes.py \
        [--base-steps 300] [--steps 160] [--round 20] [--threads 1] [--work DIR]

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
   speaker A, and the real clips as the ceiling and floor of what the instruments give.

Prints the tables, writes `benchmarks/recipes.png` and appends to `benchmarks/RESULTS.md`.
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

from voicefleet.models.checkpoint.discriminator_io import save_discriminator  # noqa: E402
from voicefleet.models.checkpoint.gpt_io import save_gpt  # noqa: E402
from voicefleet.models.checkpoint.sovits_io import save_sovits_export, save_sovits_pretrained  # noqa: E402
from voicefleet.models.pretrained import PretrainedPaths, init_pretrained, official_s1_config  # noqa: E402
from voicefleet.platform.cluster import ensure_ray  # noqa: E402
from voicefleet.platform.data import PrepareConfig, StageResources, prepare_dataset  # noqa: E402
from voicefleet.platform.evaluation import VoiceSource, evaluate_list  # noqa: E402
from voicefleet.platform.training.config import TrainConfig  # noqa: E402
from voicefleet.platform.training.data import load_examples  # noqa: E402
from voicefleet.platform.training.stages import unwrap  # noqa: E402
from voicefleet.tuning.finetune import VoiceFinetune, stage_configs  # noqa: E402

logger = logging.getLogger("recipes")
PLOT = Path(__file__).resolve().parent / "recipes.png"
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
             seed: int, batch_size: int, progress_label: str, **overrides) -> tuple[VoiceFinetune, list[dict]]:
    """Both stages trained in rounds as a sweep trial does; returns the models and one row per round
    (step 0 is the starting point)."""
    base = TrainConfig(stage="sovits", run_name="bench", recipe=recipe, seed=seed, batch_size=batch_size,
                       epochs=10_000, eval_every=round_steps, checkpoint_every=round_steps, **overrides)
    configs = stage_configs(base, {}, steps, base.schedule.min_warmup_steps)
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


def check_frozen_parts(before: PretrainedPaths, after: PretrainedPaths) -> None:
    """The prepared semantic tokens come from HuBERT + SSL projection + quantizer: the base must not
    have changed them, or the datasets would no longer match it."""
    from voicefleet.models.checkpoint.sovits_io import load_sovits

    old, new = load_sovits(before.sovits_g).model.state_dict(), load_sovits(after.sovits_g).model.state_dict()
    changed = [k for k in old if k.startswith(("ssl_proj.", "quantizer.")) and not torch.equal(old[k], new[k])]
    if changed:
        raise SystemExit(f"the base changed frozen parameters {changed[:3]}: its tokens differ from the datasets'")


def plot(curves: dict[str, list[dict]], base_steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("val_objective", "sweep objective: held-out text -> GPT -> SoVITS,\nDTW log-mel L1 (lower is better)"),
              ("val_recon", "SoVITS validation reconstruction (mel L1)"), ("val_ce", "GPT validation cross-entropy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.8))
    for ax, (key, title) in zip(axes, panels):
        for recipe, rows in curves.items():
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", label=recipe)
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
    parser.add_argument("--steps", type=int, default=160, help="fine-tuning steps of each stage, per recipe")
    parser.add_argument("--round", type=int, default=20, help="steps between evaluations")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine may be shared)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--no-report", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
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

    logger.info("training the base on speaker A: %d steps per stage", args.base_steps)
    base_run, base_rows = finetune("voicefleet", tiny, datasets["base"], args.base_steps,
                                   max(args.round, args.base_steps // 3), seed=args.seed,
                                   batch_size=args.batch_size, progress_label="base (speaker A)",
                                   sovits_lr=args.base_lr)
    base = save_as_pretrained(base_run, tiny, work / "pretrained-base")
    check_frozen_parts(tiny, base)
    del base_run
    base_s = time.perf_counter() - started - prepared_s

    curves, voices, times = {}, {}, {}
    for recipe in ("official", "voicefleet"):
        t0 = time.perf_counter()
        run, rows = finetune(recipe, base, datasets["target"], args.steps, args.round, seed=args.seed,
                             batch_size=args.batch_size, progress_label=f"{recipe} (speaker B)")
        times[recipe] = time.perf_counter() - t0
        curves[recipe] = rows
        voices[recipe] = export_voice(run, work / "voices", recipe)
        del run
    (work / "curves.json").write_text(json.dumps(curves, indent=1))
    plot(curves, args.base_steps, PLOT)

    logger.info("scoring the held-out lines of speaker B with voicefleet eval")
    ref = dict(ref=corpus["refB"], ref_text=corpus["refB_text"], ref_lang="en")
    scored = {}
    candidates = [("base", "base (before fine-tuning)", (None, None)),
                  *[(recipe, f"fine-tuned, {recipe}", files) for recipe, files in voices.items()]]
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

    common = (f"`benchmarks/recipes.py --base-steps {args.base_steps} --steps {args.steps} --round {args.round} "
              f"--batch-size {args.batch_size} --seed {args.seed}`: tiny models; base = the tiny random folder "
              f"trained {args.base_steps} steps per stage on espeak-ng voice A ({args.base_clips} sentences, "
              f"voicefleet recipe, SoVITS rate {args.base_lr:g}); fine-tuned on voice B ({args.target_clips} "
              f"sentences) from that base. One optimizer step: SoVITS one batch of {args.batch_size}; GPT one batch "
              f"(voicefleet) or 4 accumulated (official). machine shared with other jobs while it ran; torch at {args.threads} thread(s); "
              f"whole script {total_s / 60:.1f} min (preparation {prepared_s:.0f} s, base {base_s:.0f} s, "
              f"fine-tuning {times['official']:.0f} s official / {times['voicefleet']:.0f} s voicefleet).")
    curve_rows = []
    for i, start in enumerate(curves["official"]):
        v = curves["voicefleet"][i]
        curve_rows.append([start["step"], fmt(start["val_objective"]), fmt(v["val_objective"]),
                           fmt(start["val_recon"]), fmt(v["val_recon"]), fmt(start["val_ce"]), fmt(v["val_ce"])])
    headers = ["step", "objective official", "objective voicefleet", "val_recon official", "val_recon voicefleet",
               "val_ce official", "val_ce voicefleet"]
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
    if args.no_report:
        from rich.console import Console
        from rich.table import Table

        for title, heads, body in (("recipes", headers, curve_rows), ("eval", eval_headers, eval_rows)):
            table = Table(title=title)
            for h in heads:
                table.add_column(h)
            for row in body:
                table.add_row(*map(str, row))
            Console().print(table)
        return
    report("Recipes compared on one voice (tiny, espeak-ng A -> B), validation over steps", headers, curve_rows,
           notes=common + " objective = `val_objective`, the sweep objective on B's validation clips; val_recon = "
                 "SoVITS mel L1 decoding the clips' own tokens; val_ce = GPT cross-entropy per target. Plot: "
                 "`benchmarks/recipes.png`.")
    report("Recipes compared on one voice (tiny, espeak-ng A -> B), voicefleet eval of held-out lines",
           eval_headers, eval_rows,
           notes=common + f" {HELD_OUT} held-out sentences of B (never trained on), each voice given the same "
                 "reference clip of B; similarity to A = each synthesis against one clip of A; the last row scores "
                 "the real clips of B (against B's reference and against A's clip).")


if __name__ == "__main__":
    main()
