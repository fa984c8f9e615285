"""Scoring checkpoints on a list file while a run trains: speaker similarity, DNSMOS, WER.

    TrainConfig(stage="sovits", run_name="alice-s2", eval_list="val.list", keep_best_by="speaker_similarity")

`train_stage` hands the `TorchTrainer` a `ValidationConfig` (`validation_config`) whose function
is `score_checkpoint`; rank 0 asks for it on the checkpoints `TrainConfig.scores_at` picks. Ray
Train runs it as a separate Ray task, one checkpoint at a time, while the workers go on training
(their step loop only writes the checkpoint, as without scoring). Ray Train keeps a checkpoint
that waits for its score from deletion and merges the score into the checkpoint's metrics, so
`keep_best_by` ranks checkpoints by it.

One score: the checkpoint's stage exported in the official format, the other stage's pretrained
weights, the dataset's reference clip (the one the registry would give the voice) as prompt;
`eval_lines` lines of the list synthesised with seed 0 and scored by
`voicefleet.platform.evaluation`. The whole evaluation (eval.json, utterances.csv, the audio,
report.md) lands in `<storage>/<run>/voicefleet/quality/step_NNNNNNN/`, which the driver reads
back for metrics.csv, TensorBoard and the curves (`read_scores`).
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
import threading
from pathlib import Path
from typing import Any, Mapping

import pyarrow.fs as pafs

from voicefleet.platform.training.config import TrainConfig

logger = logging.getLogger(__name__)

QUALITY_DIR = "quality"
ERROR_SUFFIX = ".error.txt"
PREFIX = "eval_"  # scores in metrics.csv / TensorBoard: eval_speaker_similarity, ...
SEED = 0  # every checkpoint says the same lines with the same seed: differences come from the weights

_synth_lock = threading.Lock()
_synthesizers: dict[str, Any] = {}  # one Synthesizer (HuBERT + BERT) per pretrained folder and process


def step_dir(step: int) -> str:
    return f"step_{step:07d}"


def quality_uri(storage: str, run_name: str) -> str:
    return f"{storage.rstrip('/')}/{run_name}/voicefleet/{QUALITY_DIR}"


def prepare_eval(config: TrainConfig, dataset: Path, pretrained: Path | str, storage: str) -> dict[str, Any]:
    """Check the eval list, its lines and the instruments, and pick the voice's reference clip:
    everything that can fail on bad input, on the driver, before Ray starts. Returns the scoring
    task's keyword arguments."""
    import soundfile as sf

    from voicefleet.models.config import SAMPLE_RATE
    from voicefleet.platform.data.listfile import read_list_file
    from voicefleet.platform.evaluation.runner import prepare_scoring
    from voicefleet.platform.voices import pick_reference

    assert config.eval_list is not None
    listed = read_list_file(config.eval_list)
    prepare_scoring(listed.entries, config.eval_metrics, None, config.eval_lines, synthesis=True)
    try:
        ref = pick_reference(dataset)
    except ValueError as e:
        raise ValueError(f"scoring checkpoints needs the voice's reference clip: {e}") from None
    wav = io.BytesIO()
    sf.write(wav, ref["audio"].clip(-1, 1), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return {"setup": {"train": config.model_dump(mode="json"), "pretrained": str(Path(pretrained).resolve()),
                      "reference": {"wav": wav.getvalue(), "text": ref["text"], "lang": ref["lang"],
                                    "clip_id": ref["clip_id"]},
                      "out": quality_uri(storage, config.run_name)}}


def validation_config(setup: Mapping[str, Any], cpus: float):
    """Ray Train's `ValidationConfig` that scores reported checkpoints with `score_checkpoint`."""
    from ray.train.v2.api.validation_config import ValidationConfig, ValidationTaskConfig

    return ValidationConfig(score_checkpoint, task_config=ValidationTaskConfig(fn_kwargs=dict(setup)),
                            ray_remote_kwargs={"num_cpus": cpus, "max_retries": 0})


def _synthesizer(pretrained: str):
    from voicefleet.inference.pipeline import Synthesizer
    from voicefleet.models.pretrained import find_pretrained

    with _synth_lock:
        if pretrained not in _synthesizers:
            _synthesizers[pretrained] = Synthesizer.from_pretrained(find_pretrained(pretrained))
        return _synthesizers[pretrained]


def score_checkpoint(checkpoint, *, setup: Mapping[str, Any]) -> dict[str, Any]:
    """Score one checkpoint on the eval list (runs as a Ray task). Returns the summary's numbers
    under their own names (`speaker_similarity`, `dnsmos_ovrl`, ...), `eval_n` and `eval_step`."""
    from voicefleet.models.pretrained import find_pretrained
    from voicefleet.platform.training.checkpointing import load_state

    config = TrainConfig(**setup["train"])
    paths = find_pretrained(setup["pretrained"])
    state = load_state(checkpoint)
    step = int(state["step"])
    try:
        return _score(config, paths, state, checkpoint, setup)
    except Exception as e:
        # recorded beside the scores, so the driver can say why a checkpoint has none
        _put_text(f"{setup['out']}/{step_dir(step)}{ERROR_SUFFIX}", f"{type(e).__name__}: {' '.join(str(e).split())}")
        raise


def _score(config: TrainConfig, paths, state: dict[str, Any], checkpoint, setup: Mapping[str, Any]) -> dict[str, Any]:
    from voicefleet.inference.params import SynthesisParams
    from voicefleet.platform.data.listfile import read_list_file
    from voicefleet.platform.evaluation import SUMMARY_FIELDS, evaluate_voice, write_evaluation
    from voicefleet.platform.training.export import export_best

    step = int(state["step"])
    ref = setup["reference"]
    synth = _synthesizer(setup["pretrained"])
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_best(config, checkpoint, paths, Path(tmp), state=state)
        files = {"gpt": paths.gpt, "sovits": paths.sovits_g, config.stage: exported}
        ref_path = Path(tmp) / "reference.wav"
        ref_path.write_bytes(ref["wav"])
        voice = synth.load_voice(f"{config.run_name}@{step}", files["gpt"], files["sovits"], ref_path, ref["text"],
                                 ref["lang"])
        result = evaluate_voice(
            synth, voice, read_list_file(config.eval_list).entries, reference_audio=ref_path,
            metrics=config.eval_metrics, params=SynthesisParams(seed=SEED), max_lines=config.eval_lines,
            config={"run": config.run_name, "stage": config.stage, "step": step, "list": config.eval_list,
                    "other_stage": "pretrained", "reference_clip": ref["clip_id"]})
        result.config["reference_audio"] = f"dataset clip {ref['clip_id']}"
        _write(result, f"{setup['out']}/{step_dir(step)}", write_evaluation)
    logger.info("scored %s at step %d: %s", config.run_name, step,
                ", ".join(f"{k} {v:.3f}" for k, v in result.summary.items() if isinstance(v, float)))
    scores = {k: float(result.summary[k]) for k in SUMMARY_FIELDS if result.summary.get(k) is not None}
    return {**scores, "eval_n": int(result.summary["n"]), "eval_step": step}


def _write(result, destination: str, write) -> None:
    """Write the evaluation folder at `destination`: a local folder, or any URI pyarrow writes."""
    if "://" not in destination or destination.startswith("file://"):
        write(result, Path(destination.removeprefix("file://")), overwrite=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        write(result, Path(tmp) / "eval", overwrite=True)
        fs, root = pafs.FileSystem.from_uri(destination)
        pafs.copy_files(str(Path(tmp) / "eval"), root, destination_filesystem=fs)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri if "://" in uri else str(Path(uri).resolve()))


def _put_text(uri: str, text: str) -> None:
    try:
        fs, path = _filesystem(uri)
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(text.encode("utf-8"))
    except Exception as e:  # never hide the scoring's own error behind this one
        logger.warning("could not record a scoring error at %s: %s", uri, e)


def read_errors(storage: str, run_name: str) -> dict[int, str]:
    """Why checkpoints got no score, by step (the scoring task's exception, one line each)."""
    fs, root = _filesystem(quality_uri(storage, run_name))
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(root, allow_not_found=True)):
        if info.base_name.startswith("step_") and info.base_name.endswith(ERROR_SUFFIX):
            with fs.open_input_stream(info.path) as f:
                out[int(info.base_name[5:-len(ERROR_SUFFIX)])] = f.read().decode("utf-8", "replace")
    return dict(sorted(out.items()))


def read_scores(storage: str, run_name: str) -> dict[int, dict[str, Any]]:
    """Every scored checkpoint's summary by step, read back from the run's quality folder."""
    fs, root = _filesystem(quality_uri(storage, run_name))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    out: dict[int, dict[str, Any]] = {}
    for info in infos:
        if info.type != pafs.FileType.Directory or not info.base_name.startswith("step_"):
            continue
        try:
            with fs.open_input_stream(f"{info.path}/eval.json") as f:
                out[int(info.base_name.removeprefix("step_"))] = json.loads(f.read())["summary"]
        except (OSError, ValueError, KeyError):  # a folder still being written, or not ours
            continue
    return dict(sorted(out.items()))
