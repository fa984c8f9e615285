"""Every default and bound is defined once: the CLI flags, the HTTP schemas and the config files
agree with the config models they mirror."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import pytest
import typer
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

import voicefleet
from voicefleet.cli import app
from voicefleet.inference.params import (DEFAULT_LANG, DEFAULT_PRECISION, Lang, LangField, PrecisionField,
                                         SplitMethod, SynthesisParams)
from voicefleet.platform.data.config import PrepareConfig, StageResources
from voicefleet.platform.training.config import STAGE_EPOCHS, TrainConfig
from voicefleet.platform.training.schedules import ScheduleConfig
from voicefleet.recipes.end_to_end import EndToEndConfig
from voicefleet.serve.schemas import SpeechRequest, TTSRequest
from voicefleet.serve.settings import HTTP_HOST, HTTP_PORT, HttpHost, HttpPort, MetricsPort, ServeSettings
from voicefleet.text.g2pw import G2PWModelField
from voicefleet.tuning.space import SearchSpace
from voicefleet.tuning.sweep import SweepConfig

REPO = Path(__file__).resolve().parents[1]
COMMAND = typer.main.get_command(app)
UNSET = object()  # an option that is None unless given (a config file or the model decides)


def _field(model: type[BaseModel], name: str) -> FieldInfo:
    return model.model_fields[name]


def _annotated(annotated: Any, default: Any) -> FieldInfo:
    return FieldInfo.from_annotated_attribute(annotated, default)


# command -> {option name: (field it sets, expected CLI default or None to take the field's)}.
# Options left out set nothing in a config model (paths, --address, --overwrite, ...).
MIRRORS: dict[tuple[str, ...], dict[str, tuple[FieldInfo, Any]]] = {
    ("synthesize",): {
        **{name: (_field(SynthesisParams, name), None) for name in (
            "top_k", "top_p", "temperature", "repetition_penalty", "speed", "noise_scale", "text_split_method",
            "batch_size", "fragment_interval", "seed", "max_tokens")},
        "lang": (_annotated(LangField, DEFAULT_LANG), None),
        "prompt_lang": (_annotated(LangField, None), None),
        "precision": (_annotated(PrecisionField, DEFAULT_PRECISION), None),
        "g2pw_model": (_annotated(G2PWModelField, None), None),
    },
    **{("train", stage): {
        "run_name": (_field(TrainConfig, "run_name"), None),
        "storage": (_field(TrainConfig, "storage_path"), None),
        "workers": (_field(TrainConfig, "num_workers"), None),
        "gpu": (_field(TrainConfig, "use_gpu"), None),
        "placement": (_field(TrainConfig, "placement_strategy"), None),
        "batch_size": (_field(TrainConfig, "batch_size"), None),
        "epochs": (_field(TrainConfig, "epochs"), STAGE_EPOCHS[stage]),
        "max_steps": (_field(TrainConfig, "max_steps"), None),
        "lr": (_field(TrainConfig, "sovits_lr"), None),
        "gpt_lr_ratio": (_field(TrainConfig, "gpt_lr_ratio"), None),
        "recipe": (_field(TrainConfig, "recipe"), None),
        "seed": (_field(TrainConfig, "seed"), None),
        "warmup": (_field(ScheduleConfig, "warmup_fraction"), None),
        "precision": (_field(TrainConfig, "precision"), None),
        "eval_every": (_field(TrainConfig, "eval_every"), None),
        "checkpoint_every": (_field(TrainConfig, "checkpoint_every"), None),
        "max_failures": (_field(TrainConfig, "max_failures"), None),
        **{name: (_field(TrainConfig, name), None) for name in (
            "eval_list", "eval_lines", "eval_metrics", "score_every", "eval_cpus", "keep_best_by")},
        "adapter": (_field(TrainConfig, "adapter"), None),
        "rank": (_field(TrainConfig, "lora_rank"), None),
        "alpha": (_field(TrainConfig, "lora_alpha"), None),
        "targets": (_field(TrainConfig, "lora_targets"), None),
    } for stage in STAGE_EPOCHS},
    ("tune",): {
        **{name: (_field(SweepConfig, name), None) for name in (
            "voice", "sweep_id", "trials", "rounds", "steps_per_round", "batch_size", "seed", "recipe", "metric",
            "eval_metrics")},
        "concurrent": (_field(SweepConfig, "max_concurrent"), None),
        "workers": (_field(SweepConfig, "num_workers"), None),
        "storage": (_field(SweepConfig, "storage_path"), None),
        "min_warmup_steps": (_field(SearchSpace, "min_warmup_steps"), UNSET),
        "adapter": (_field(SweepConfig, "adapter"), None),
        "rank": (_field(SweepConfig, "lora_rank"), UNSET),
        "alpha": (_field(SweepConfig, "lora_alpha"), UNSET),
        "alpha_rule": (_field(SweepConfig, "alpha_rule"), UNSET),
        "targets_gpt": (_field(SweepConfig, "lora_targets_gpt"), None),
        "targets_sovits": (_field(SweepConfig, "lora_targets_sovits"), None),
    },
    ("serve",): {
        "storage": (_field(ServeSettings, "storage"), None),
        "pretrained": (_field(ServeSettings, "pretrained"), None),
        "engine": (_field(ServeSettings, "engine"), None),
        "precision": (_field(ServeSettings, "precision"), None),
        "max_voices": (_field(ServeSettings, "max_voices_per_replica"), None),
        "replicas": (_field(ServeSettings, "max_replicas"), None),
        "num_cpus": (_field(ServeSettings, "num_cpus"), None),
        "num_gpus": (_field(ServeSettings, "num_gpus"), None),
        "g2pw_model": (_field(ServeSettings, "g2pw_model"), None),
        "host": (_annotated(HttpHost, HTTP_HOST), None),
        "port": (_annotated(HttpPort, HTTP_PORT), None),
        "metrics_port": (_annotated(MetricsPort, None), None),
    },
    ("run",): {name: (_field(EndToEndConfig, name), None) for name in (
        "list_file", "voice", "pretrained", "workdir", "storage", "trials", "rounds", "steps_per_round",
        "train_steps", "workers", "gpus_per_worker", "batch_size", "serve", "host", "port", "say", "say_lang",
        "output", "seed", "address", "recipe", "adapter", "version")} | {
        "rank": (_field(EndToEndConfig, "lora_rank"), None), "alpha": (_field(EndToEndConfig, "lora_alpha"), None),
        "targets_gpt": (_field(EndToEndConfig, "lora_targets_gpt"), None),
        "targets_sovits": (_field(EndToEndConfig, "lora_targets_sovits"), None)},
    ("prepare",): {
        "workers": (_field(StageResources, "concurrency"), UNSET),
        "cpus_per_worker": (_field(StageResources, "num_cpus"), UNSET),
        "gpus_per_worker": (_field(StageResources, "num_gpus"), UNSET),
        "val_fraction": (_field(PrepareConfig, "val_fraction"), UNSET),
        "max_spectral_entropy": (_field(PrepareConfig, "max_spectral_entropy"), UNSET),
        "audio_dtype": (_field(PrepareConfig, "audio_dtype"), UNSET),
        "g2pw_model": (_field(PrepareConfig, "g2pw_model"), UNSET),
    },
}
# Flags named like a field that take another form, and why.
NOT_MIRRORS = {
    **{("train", stage): {"schedule"} for stage in STAGE_EPOCHS},  # retired: refused, naming --recipe
    ("tune",): {"sovits_lr", "gpt_lr_ratio",  # LOW:HIGH strings replacing a SearchSpace range
                "space",  # a YAML file of SearchSpace
                "gpus_per_worker"},  # 0 means CPU workers: sets SweepConfig's use_gpu and gpus_per_worker
}
CASES = [(path, option) for path, options in MIRRORS.items() for option in options]


def _command(path: tuple[str, ...]):
    command = COMMAND
    for name in path:
        command = command.commands[name]
    return command


def _param(path: tuple[str, ...], option: str):
    params = {p.name: p for p in _command(path).params}
    assert option in params, f"voicefleet {' '.join(path)} has no option {option!r}"
    return params[option]


def _kind(field: FieldInfo) -> Any:
    kind = field.annotation
    if get_origin(kind) is Union or type(kind).__name__ == "UnionType":
        kind = next(a for a in get_args(kind) if a is not type(None))
    return kind


def _probes(field: FieldInfo) -> list[Any]:
    """Values either side of every bound of the field (or every choice and one that is not)."""
    kind = _kind(field)
    if get_origin(kind) is Literal:
        return [*get_args(kind), "not-a-choice"]
    values = []
    for m in field.metadata:
        if isinstance(m, (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)):
            bound = getattr(m, type(m).__name__.lower())
            step = 1 if kind is int else max(abs(bound) * 1e-3, 1e-6)
            values += [bound - step, bound, bound + step]
    return [kind(v) for v in values]


def _accepts(validate, value) -> bool:
    try:
        validate(value)
    except ValueError:  # pydantic's ValidationError included
        return False
    except Exception as e:
        if type(e).__name__ == "BadParameter":  # typer's refusal of a flag value
            return False
        raise
    return True


def _field_accepts(field: FieldInfo, value) -> bool:
    adapter = TypeAdapter(Annotated[(_kind(field), *field.metadata)] if field.metadata else _kind(field))
    return _accepts(adapter.validate_python, value)


@pytest.mark.parametrize(("path", "option"), CASES, ids=[f"{' '.join(p)}--{o}" for p, o in CASES])
def test_cli_option_takes_default_and_bounds_from_its_field(path, option):
    field, expected = MIRRORS[path][option]
    param = _param(path, option)
    field_default = ... if field.default is PydanticUndefined else field.default
    if expected is UNSET:
        assert param.default is None  # unset unless given; the help states the model's default
        if field_default not in (None, ...):
            assert str(field_default) in param.help or f"{field_default:g}" in param.help, param.help
    elif expected is not None:
        assert param.default == expected
    elif field_default is ...:
        assert param.required
    else:
        assert param.default == field_default, f"--{option}: {param.default!r} != {field_default!r}"
    if _checked_by_the_model(field):
        # stated in the help, left to the model the command builds (one-line error; see below)
        assert param.min is None and param.max is None
        stated = get_args(_kind(field)) if get_origin(_kind(field)) is Literal else [
            f"{getattr(m, type(m).__name__.lower()):g}" for m in field.metadata]
        assert all(str(s) in param.help for s in stated), param.help
        return
    for value in _probes(field):
        cli = _parses(path, param, value)
        assert cli == _field_accepts(field, value), f"--{option} {value}: CLI {'accepts' if cli else 'refuses'} " \
                                                    f"it, the field does not"


def _checked_by_the_model(field: FieldInfo) -> bool:
    """Choices and open bounds are left to the model, which reports them as one line."""
    return get_origin(_kind(field)) is Literal or any(
        isinstance(m, (annotated_types.Gt, annotated_types.Lt)) for m in field.metadata)


def _parses(path: tuple[str, ...], param, value) -> bool:
    ctx = _command(path).make_context("voicefleet", [], resilient_parsing=True)
    return _accepts(lambda v: param.process_value(ctx, v), str(value))


def test_every_option_named_like_a_field_of_its_models_is_checked():
    """A new flag that repeats a config field cannot slip past the table above."""
    models = {("synthesize",): [SynthesisParams], ("train", "sovits"): [TrainConfig, ScheduleConfig],
              ("tune",): [SweepConfig, SearchSpace], ("serve",): [ServeSettings], ("run",): [EndToEndConfig],
              ("prepare",): [PrepareConfig, StageResources]}
    for path, classes in models.items():
        names = {p.name for p in _command(path).params} & {f for c in classes for f in c.model_fields}
        names -= NOT_MIRRORS.get(path, set())
        assert names <= set(MIRRORS[path]), f"voicefleet {' '.join(path)}: {sorted(names - set(MIRRORS[path]))}"


def _invoke(*args):
    from typer.testing import CliRunner

    return CliRunner().invoke(app, [str(a) for a in args])


def _synthesize_refuses(tmp_path, option: str, value) -> bool:
    """`voicefleet synthesize` with one knob set and a missing pretrained folder: the knob is
    checked before the folder, so the error is about the knob exactly when it is refused."""
    result = _invoke("synthesize", "--pretrained", tmp_path / "missing", "--ref-audio", tmp_path / "ref.wav",
                     "-o", tmp_path / "out.wav", "--text", "你好。", f"--{option.replace('_', '-')}", value)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    if lines[-1].startswith("error:"):
        assert len(lines) == 1, result.output
        return lines[0].startswith(f"error: {option}:")
    text = " ".join(result.output.split())  # refused while the flags are parsed (typer's message)
    assert f"--{option.replace('_', '-')}" in text, text
    return True


@pytest.mark.parametrize("option", [o for o, (f, _) in MIRRORS[("synthesize",)].items()
                                    if o in SynthesisParams.model_fields])
def test_synthesize_refuses_exactly_what_the_python_api_refuses(tmp_path, option):
    field = SynthesisParams.model_fields[option]
    for value in _probes(field):
        assert _synthesize_refuses(tmp_path, option, value) != _field_accepts(field, value), f"--{option} {value}"


@pytest.mark.parametrize(("args", "field"), [
    (("train", "sovits", "ds", "--pretrained", "p", "--run-name", "r", "--placement", "EVERYWHERE"),
     "placement_strategy"),
    (("train", "gpt", "ds", "--pretrained", "p", "--run-name", "r", "--lr", "0"), "sovits_lr"),
    (("serve", "--precision", "fp8"), "precision"),
    (("run", "list.txt", "--voice", "alice", "--say-lang", "jp"), "say_lang"),
])
def test_values_left_to_the_model_are_refused_in_one_line(args, field):
    result = _invoke(*args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert field in lines[0]


def test_train_epochs_follow_the_stage():
    for stage, epochs in STAGE_EPOCHS.items():
        assert TrainConfig(stage=stage, run_name="x").epochs == epochs
        assert TrainConfig(stage=stage, run_name="x", epochs=3).epochs == 3


def test_one_recipe_for_train_tune_and_run():
    field = TrainConfig.model_fields["recipe"]
    assert SweepConfig.model_fields["recipe"].default == EndToEndConfig.model_fields["recipe"].default == field.default
    assert SweepConfig.model_fields["recipe"].annotation == EndToEndConfig.model_fields["recipe"].annotation \
        == field.annotation


def test_official_recipe_fills_in_its_own_clipping_and_accumulation():
    sovits = TrainConfig(stage="sovits", run_name="x", recipe="official")
    gpt = TrainConfig(stage="gpt", run_name="x", recipe="official")
    assert sovits.grad_clip is None and gpt.grad_clip is None
    assert (sovits.accumulate, gpt.accumulate) == (1, 4)
    assert TrainConfig(stage="gpt", run_name="x", recipe="official", accumulate=2, grad_clip=3.0).accumulate == 2
    assert TrainConfig(stage="gpt", run_name="x").grad_clip == 1.0  # voicefleet
    assert TrainConfig(**gpt.model_dump()) == gpt  # a saved config reloads as it ran


def test_retired_schedule_flag_says_to_use_the_recipe():
    result = _invoke("train", "sovits", "ds", "--pretrained", "p", "--run-name", "r", "--schedule", "official")
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "--recipe official" in lines[0], result.output


def test_sweep_first_trial_is_the_training_default():
    from voicefleet.tuning.sweep import OFFICIAL_POINT

    config = TrainConfig(stage="sovits", run_name="x")
    assert OFFICIAL_POINT == {"sovits_lr": config.sovits_lr, "gpt_lr_ratio": config.gpt_lr_ratio,
                              "warmup_fraction": config.schedule.warmup_fraction,
                              "text_low_lr_rate": config.text_low_lr_rate, "lora_rank": config.lora_rank}


def test_one_adapter_default_for_train_tune_and_run():
    for name in ("adapter", "lora_rank", "lora_alpha"):
        field = TrainConfig.model_fields[name]
        for model in (SweepConfig, EndToEndConfig):
            assert model.model_fields[name].default == field.default
            assert model.model_fields[name].annotation == field.annotation
    for name in ("lora_targets_gpt", "lora_targets_sovits"):
        assert SweepConfig.model_fields[name].annotation == EndToEndConfig.model_fields[name].annotation


def test_tune_help_quotes_the_default_ranges():
    space = SearchSpace()
    for option, dim in (("sovits_lr", space.sovits_lr), ("gpt_lr_ratio", space.gpt_lr_ratio),
                        ("warmup", space.warmup_fraction)):
        assert f"{dim.low:g}:{dim.high:g}" in _param(("tune",), option).help


# --- HTTP schemas vs the Python API ---

KNOBS = [n for n in SynthesisParams.model_fields]


@pytest.mark.parametrize("name", KNOBS)
def test_http_request_accepts_what_the_python_api_accepts(name):
    field = SynthesisParams.model_fields[name]
    for value in [*_probes(field), field.default]:
        api = _accepts(lambda v: SynthesisParams(**{name: v}), value)
        http = _accepts(lambda v: TTSRequest(voice="alice", text="你好。", stream=True, **{name: v}), value)
        assert http == api, f"{name}={value}: HTTP {'accepts' if http else 'refuses'} it, the Python API does not"
    if name != "first_chunk_tokens":  # streaming over HTTP sends an early first chunk by default
        assert TTSRequest.model_fields[name].default == field.default


def test_openai_speed_has_the_python_api_bounds_and_default():
    field = SynthesisParams.model_fields["speed"]
    assert SpeechRequest.model_fields["speed"].default == field.default
    for value in _probes(field):
        api = _accepts(lambda v: SynthesisParams(speed=v), value)
        assert _accepts(lambda v: SpeechRequest(model="m", input="x", voice="alice", speed=v), value) == api


def test_http_schema_states_the_python_api_bounds():
    api, http = SynthesisParams.model_json_schema()["properties"], TTSRequest.model_json_schema()["properties"]
    for name in KNOBS:
        keys = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum", "anyOf"}
        assert {k: v for k, v in http[name].items() if k in keys} == {k: v for k, v in api[name].items() if k in keys}


@pytest.mark.parametrize("value", [0.5, 1.0, 1.35, 2.0, 2.5, 0.0, 5.0])
def test_repetition_penalty_has_one_range(tmp_path, value):
    """The CLI once allowed any penalty above 0.01 and the HTTP API only 1-2."""
    api = _accepts(lambda v: SynthesisParams(repetition_penalty=v), value)
    http = _accepts(lambda v: TTSRequest(voice="alice", text="x", repetition_penalty=v), value)
    cli = not _synthesize_refuses(tmp_path, "repetition_penalty", value)
    assert api == http == cli == (0 < value <= 2)


def test_languages_and_split_methods_are_the_front_ends():
    from voicefleet.text.frontend import MODES
    from voicefleet.text.splitting import METHODS

    assert set(get_args(Lang)) == set(MODES)
    assert set(get_args(SplitMethod)) == set(METHODS)


# --- config files ---

def test_serve_config_yaml_is_valid_settings():
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    TypeAdapter(HttpPort).validate_python(config["http_options"]["port"])
    for application in config["applications"]:
        ServeSettings(**application["args"])


def _yaml_blocks(path: Path) -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)
    return [yaml.safe_load(b) for b in blocks]


@pytest.mark.parametrize("doc", sorted(p.name for p in (REPO / "docs").glob("*.md")) + ["README.md"])
def test_yaml_examples_in_docs_validate(doc):
    path = REPO / "docs" / doc if doc != "README.md" else REPO / doc
    for block in _yaml_blocks(path):
        if not isinstance(block, dict):
            continue
        if "applications" in block:
            for application in block["applications"]:
                ServeSettings(**application.get("args", {}))
        elif set(block) <= set(SearchSpace.model_fields):
            SearchSpace(**block)
        elif set(block) <= set(PrepareConfig.model_fields):
            PrepareConfig(**block)


# --- the sample rate ---

def test_sample_rates_are_not_restated_in_the_source():
    """32000 and 16000 live in models/config.py only (SAMPLE_RATE, SSL_SAMPLE_RATE)."""
    package = Path(voicefleet.__file__).parent
    # rates of other systems that happen to be equal to a model's
    others = {Path("platform/evaluation/instruments.py"): "the evaluation instruments' input rate (resemblyzer, "
                                                           "DNSMOS and PocketSphinx all read 16 kHz)"}
    found = []
    for path in package.rglob("*.py"):
        if path == package / "models" / "config.py" or path.relative_to(package) in others:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and not isinstance(node.value, bool) and \
                    isinstance(node.value, (int, float, str)) and str(node.value) in ("32000", "16000"):
                found.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not found, f"sample rate literals: {found}"

