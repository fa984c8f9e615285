"""From a list file to a live endpoint: prepare -> sweep (or train) -> register -> serve.

    run_end_to_end(EndToEndConfig(list_file="clips/list.txt", voice="alice", pretrained="pretrained_models"))

Every step keeps its result under the work folder and is skipped when it is already done, so
running the same command again resumes where it stopped: `prepare` is a no-op for an unchanged
list, a finished sweep or training run returns its result (an interrupted one resumes from its
checkpoints), and the voice is registered once per result. Runs on the embedded local Ray by
default, on a cluster with `address` (or under `ray job submit`, which sets RAY_ADDRESS).

Layout: `<workdir>/datasets/<voice>/` (prepared Parquet), `<storage>/` (default
`<workdir>/runs`: training runs, `sweeps/<voice>-sweep/` with its report, `registry/`).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voicefleet.inference.params import DEFAULT_LANG, LangField
from voicefleet.platform.cluster import ensure_ray
from voicefleet.platform.fields import same_field
from voicefleet.platform.training.config import AdapterKind, TrainConfig
from voicefleet.platform.training.schedules import Recipe
from voicefleet.serve.settings import HTTP_HOST, HTTP_PORT, HttpHost, HttpPort, ServeSettings
from voicefleet.tuning.config import SweepConfig

logger = logging.getLogger(__name__)

Say = Callable[[str], None]


class EndToEndConfig(BaseModel):
    """Everything `voicefleet run` does, with the defaults of the single commands."""

    model_config = ConfigDict(extra="forbid")

    list_file: str = Field(..., description="GPT-SoVITS list file (wav_path|speaker|lang|text).")
    voice: str = Field(..., description="Voice id to register and serve.")
    pretrained: str = same_field(ServeSettings, "pretrained")
    version: Literal["v2", "v2Pro", "v2ProPlus"] | None = Field(
        None, description="Model version to fine-tune when the pretrained folder holds several (default: the "
                          "first complete one of v2, v2ProPlus, v2Pro).")
    workdir: str = Field("work", description="Datasets, and by default runs and the registry.")
    storage: str | None = Field(None, description="Runs, sweeps and registry (default <workdir>/runs); a URI "
                                                  "(s3://, gs://) on clusters.")
    mode: Literal["tune", "train"] = Field("tune", description="Sweep learning rates, or train once with defaults.")
    trials: int = same_field(SweepConfig, "trials", description="Sweep: configurations to try.")
    rounds: int = same_field(SweepConfig, "rounds", description="Sweep: evaluations per trial.")
    steps_per_round: int = same_field(SweepConfig, "steps_per_round")
    train_steps: int = Field(200, ge=1, description="mode=train: optimizer steps of each stage.")
    recipe: Recipe = same_field(TrainConfig, "recipe")
    workers: int = same_field(TrainConfig, "num_workers", description="Ray Train workers per run or trial.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs per training worker (0: CPU).")
    batch_size: int = same_field(TrainConfig, "batch_size")
    adapter: AdapterKind = same_field(TrainConfig, "adapter")
    lora_rank: int = same_field(TrainConfig, "lora_rank")
    lora_alpha: float = same_field(TrainConfig, "lora_alpha")
    lora_targets_gpt: list[str] | None = same_field(TrainConfig, "lora_targets",
                                                    description="GPT LoRA target groups (default attn,ffn).")
    lora_targets_sovits: list[str] | None = same_field(TrainConfig, "lora_targets", description="SoVITS LoRA "
                                                       "target groups (default text_encoder,flow).")
    prepare_workers: int | None = Field(None, ge=1, description="Actors per data-preparation stage.")
    serve: bool = Field(True, description="Start the endpoint when the voice is ready.")
    host: HttpHost = HTTP_HOST
    port: HttpPort = HTTP_PORT
    say: str | None = Field(None, description="Synthesise this sentence through the endpoint once it is up.")
    say_lang: LangField = DEFAULT_LANG
    output: str = Field("out/voicefleet.wav", description="Where the synthesised sentence is written (WAV).")
    seed: int = Field(0, description="Seeds sampling, training and synthesis.")
    address: str | None = Field(None, description="Ray cluster address (default: local, or RAY_ADDRESS).")

    @model_validator(mode="before")
    @classmethod
    def _adapter_trains_once(cls, data):
        """An adapter voice trains once here (mode train); its sweep is `voicefleet tune --adapter lora`."""
        if isinstance(data, dict) and data.get("adapter") == "lora":
            if data.get("mode") == "tune":
                raise ValueError("run --adapter lora trains each stage's adapter once: drop --tune, or sweep the "
                                 "adapter (rates and rank) with `voicefleet tune --adapter lora` on the prepared "
                                 "dataset")
            data = {**data, "mode": "train"}
        return data

    @property
    def storage_path(self) -> str:
        """A URI as given; a local folder made absolute (Ray's storage and the workers need that)."""
        path = self.storage or str(Path(self.workdir) / "runs")
        return path if "://" in path else str(Path(path).expanduser().resolve())

    @property
    def dataset_dir(self) -> Path:
        return Path(self.workdir).expanduser().resolve() / "datasets" / self.voice


@dataclass
class EndToEndResult:
    dataset: str
    clips_kept: int
    clips_rejected: int
    prepared_now: bool
    mode: str
    outputs: str  # sweep report, or the two runs' output folders
    objective: float | None
    voice: str
    voice_version: int
    registry: str
    endpoint: str | None = None
    wav: str | None = None
    steps: list[str] = field(default_factory=list)  # what was done, and what was reused


def _connect(address: str | None) -> None:
    # a cluster's workers log to this console; the embedded local Ray prints our own lines and tables
    ensure_ray(address, log_to_driver=bool(address or os.environ.get("RAY_ADDRESS")))


def run_end_to_end(config: EndToEndConfig, *, say: Say = logger.info) -> EndToEndResult:
    """Run every step that is not done yet; see the module docstring. Serving is left running
    (Serve applications outlive this call on a cluster; locally, until Ray shuts down)."""
    from voicefleet.models.pretrained import find_pretrained
    from voicefleet.platform.registry import check_voice_id

    check_voice_id(config.voice)
    paths = find_pretrained(config.pretrained, need_discriminator=True, version=config.version)
    # the dataset is prepared below with this same folder (v2Pro*: with the speaker embeddings), so
    # any pretrained version fine-tunes here
    pretrained = str(Path(config.pretrained).resolve())
    _connect(config.address)
    steps: list[str] = []

    say("1/4 prepare: " + config.list_file)
    prepared = _prepare(config, pretrained)
    steps.append("prepare: reused the prepared dataset" if prepared.no_op else
                 f"prepare: {prepared.kept} clips kept, {prepared.rejected} rejected")
    if prepared.kept < 2:
        raise ValueError(f"only {prepared.kept} usable clip(s) in {config.list_file} (see "
                         f"{prepared.out_dir}/rejects.parquet); fine-tuning needs at least 2")

    if config.mode == "tune":
        say(f"2/4 sweep: {config.trials} trials x {config.rounds} rounds (Ray Tune + Optuna, ASHA)")
        outputs, objective, version, note = _tune(config, prepared.out_dir, pretrained)
    else:
        kind = " LoRA adapters of" if config.adapter == "lora" else ""
        say(f"2/4 train:{kind} SoVITS then GPT, {config.train_steps} steps each (Ray Train)")
        outputs, objective, version, note = _train(config, prepared.out_dir, pretrained)
    steps.append(note)
    say(f"3/4 registered voice {config.voice} (version {version})")

    result = EndToEndResult(
        dataset=str(prepared.out_dir), clips_kept=prepared.kept, clips_rejected=prepared.rejected,
        prepared_now=not prepared.no_op, mode=config.mode, outputs=outputs, objective=objective, voice=config.voice,
        voice_version=version, registry=f"{config.storage_path}/registry", steps=steps)
    if config.serve:
        say("4/4 serve: starting the endpoint (Ray Serve)")
        result.endpoint = _serve(config, str(paths.root))
        steps.append(f"serve: {result.endpoint}")
        if config.say:
            result.wav = str(synthesize_over_http(result.endpoint, config.voice, config.say, config.say_lang,
                                                  Path(config.output), seed=config.seed))
            steps.append(f"synthesised '{config.say}' through POST /v1/tts into {result.wav}")
    return result


def _prepare(config: EndToEndConfig, pretrained: str):
    from voicefleet.platform.data import prepare_dataset
    from voicefleet.platform.data.config import PrepareConfig

    prep_config = PrepareConfig().with_resources(workers=config.prepare_workers)
    # training then takes the version the dataset was prepared for
    return prepare_dataset(config.list_file, pretrained, config.dataset_dir, config=prep_config,
                           version=config.version)


def _tune(config: EndToEndConfig, dataset: Path, pretrained: str) -> tuple[str, float, int, str]:
    import ray.tune

    from voicefleet.tuning.sweep import RESULT, SweepConfig, run_sweep

    sweep = SweepConfig(voice=config.voice, storage_path=config.storage_path, trials=config.trials,
                        rounds=config.rounds, steps_per_round=config.steps_per_round, num_workers=config.workers,
                        use_gpu=config.gpus_per_worker > 0, gpus_per_worker=config.gpus_per_worker or 1.0,
                        batch_size=config.batch_size, seed=config.seed, recipe=config.recipe)
    sweep_uri = f"{config.storage_path.rstrip('/')}/sweeps/{sweep.sweep_id}"
    done = Path(sweep_uri, RESULT).exists()
    resume = done or ray.tune.Tuner.can_restore(sweep_uri)
    result = run_sweep(sweep, dataset, pretrained, resume=resume)
    note = (f"sweep: reused finished sweep {sweep.sweep_id}" if done else
            f"sweep: {'resumed' if resume else 'ran'} {sweep.sweep_id}; best trial {result.best_trial} "
            f"(val_objective {result.best_objective:.4f})")
    return result.report, result.best_objective, result.voice_version, note


def _train(config: EndToEndConfig, dataset: Path, pretrained: str) -> tuple[str, float, int, str]:
    from voicefleet.platform.training.api import train_stage
    from voicefleet.platform.training.config import AdapterKind, TrainConfig
    from voicefleet.platform.voices import register_trained_voice, registry_for

    results = {}
    for stage, name in (("sovits", f"{config.voice}-s2"), ("gpt", f"{config.voice}-s1")):
        cfg = TrainConfig(stage=stage, run_name=name, storage_path=config.storage_path, num_workers=config.workers,
                          use_gpu=config.gpus_per_worker > 0, batch_size=config.batch_size, epochs=10_000,
                          max_steps=config.train_steps, seed=config.seed, recipe=config.recipe,
                          eval_every=max(1, config.train_steps // 5), checkpoint_every=max(1, config.train_steps // 5),
                          adapter=config.adapter, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha,
                          lora_targets=config.lora_targets_gpt if stage == "gpt" else config.lora_targets_sovits)
        results[stage] = train_stage(cfg, dataset, pretrained)
    lineage = {"sovits_run": results["sovits"].run_name, "gpt_run": results["gpt"].run_name}
    registry = registry_for(config.storage_path)
    if registry.exists(config.voice):
        record = registry.get(config.voice)
        if all(record.lineage.get(k) == v for k, v in lineage.items()):
            return (f"{results['sovits'].output_dir}, {results['gpt'].output_dir}", results["sovits"].best_val_recon,
                    record.version, "train: reused finished runs and their registered voice")
    record = register_trained_voice(
        config.voice, config.storage_path, dataset, pretrained, sovits=results["sovits"].exported,
        gpt=results["gpt"].exported, lineage=lineage,
        metrics={"sovits_val_recon": results["sovits"].best_val_recon, "gpt_val_recon": results["gpt"].best_val_recon})
    return (f"{results['sovits'].output_dir}, {results['gpt'].output_dir}", results["sovits"].best_val_recon,
            record.version, f"train: {results['sovits'].steps} SoVITS + {results['gpt'].steps} GPT steps")


def _serve(config: EndToEndConfig, pretrained_root: str) -> str:
    from voicefleet.serve.app import start, wait_until_ready
    from voicefleet.serve.settings import ServeSettings

    storage = config.storage_path if "://" in config.storage_path else str(Path(config.storage_path).resolve())
    settings = ServeSettings(storage=storage, pretrained=pretrained_root)
    start(settings, host=config.host, port=config.port, blocking=False)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "::") else config.host
    endpoint = f"http://{host}:{config.port}"
    wait_until_ready(endpoint)
    return endpoint


def synthesize_over_http(endpoint: str, voice: str, text: str, lang: str, output: Path, *, seed: int = 0) -> Path:
    """POST /v1/tts and write the WAV it returns (an existing file is replaced only by a complete one)."""
    body = json.dumps({"voice": voice, "text": text, "lang": lang, "seed": seed, "format": "wav"}).encode()
    request = urllib.request.Request(f"{endpoint}/v1/tts", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            audio = response.read()
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"POST {endpoint}/v1/tts failed with {e.code}: {e.read().decode(errors='replace')}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_bytes(audio)
    partial.replace(output)
    return output


def result_json(result: EndToEndResult) -> str:
    return json.dumps(asdict(result), indent=2, ensure_ascii=False)
