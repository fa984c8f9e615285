"""serve_config.yaml builds the app (importing it builds nothing); settings refuse bad values; the CLI
fails early on bad paths."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_serve_config_builds_the_app(monkeypatch):
    """As `serve run|deploy serve_config.yaml` does: import the path the YAML names, call it with
    the YAML's args; those args reach the deployments and win over the environment."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from voicefleet.serve.settings import ServeSettings

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    application = config.applications[0]
    monkeypatch.setenv("VOICEFLEET_SERVE_MAX_REPLICAS", "0")  # out of range, but the YAML sets it
    app = call_user_app_builder_with_args_if_necessary(import_attr(application.import_path), application.args)
    assert type(app).__name__ == "Application"
    gateway = app._bound_deployment
    synthesis = gateway.init_args[0]._bound_deployment
    settings = synthesis.init_args[0]
    assert isinstance(settings, ServeSettings) and gateway.init_args[1] == settings
    assert settings.model_dump(include=set(application.args)) == \
        ServeSettings.model_validate(application.args).model_dump(include=set(application.args))
    autoscaling = synthesis._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (application.args["min_replicas"],
                                                                    application.args["max_replicas"])
    assert synthesis._deployment_config.max_ongoing_requests == application.args["max_ongoing_requests"]
    assert synthesis.ray_actor_options["num_cpus"] == application.args["num_cpus"]


def test_serve_config_refuses_unknown_args():
    from pydantic import ValidationError
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from voicefleet.serve.app import app_builder

    with pytest.raises(ValidationError, match="max_replica"):
        call_user_app_builder_with_args_if_necessary(app_builder, {"max_replica": 2})


def test_importing_the_app_builds_and_validates_nothing():
    """Bad VOICEFLEET_SERVE_* variables do not break the import (a YAML's args may override them);
    `app_builder` reads them when called, and names the fields."""
    script = textwrap.dedent("""
        import ray
        from pydantic import ValidationError
        from ray.serve import Application

        import voicefleet.serve.app as module

        built = [name for name, value in vars(module).items() if isinstance(value, Application)]
        assert not built, built
        assert not ray.is_initialized()
        try:
            module.app_builder({})
        except ValidationError as e:
            print("refused:", sorted(err["loc"][0] for err in e.errors()))
    """)
    env = {**os.environ, "VOICEFLEET_SERVE_MAX_REPLICAS": "0", "VOICEFLEET_SERVE_PRECISION": "bogus"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: ['max_replicas', 'precision']" in done.stdout


def test_settings_bounds():
    from pydantic import ValidationError

    from voicefleet.serve.settings import ServeSettings

    with pytest.raises(ValidationError, match="max_voices_per_replica"):
        ServeSettings(max_voices_per_replica=0)
    with pytest.raises(ValidationError, match="min_replicas"):
        ServeSettings(min_replicas=3, max_replicas=2)
    with pytest.raises(ValidationError, match="reference_min_s"):
        ServeSettings(reference_min_s=1)
    with pytest.raises(ValidationError):
        ServeSettings(unknown_field=1)
    s = ServeSettings(api_keys=[{"key": "s3cr3t-value", "voices": ["alice"]}])
    assert "s3cr3t" not in repr(s) and s.api_keys[0].allows("alice") and not s.api_keys[0].allows("bob")


def test_cli_refuses_missing_pretrained(tmp_path):
    import typer
    from typer.testing import CliRunner

    from voicefleet.cli.serve import serve_cmd

    app = typer.Typer()
    app.command("serve")(serve_cmd)
    app.command("other")(lambda: None)  # two commands: typer keeps the subcommand name
    result = CliRunner().invoke(app, ["serve", "--pretrained", str(tmp_path / "none")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_a_lone_job_gets_every_thread_of_the_replica():
    from voicefleet.serve.settings import ServeSettings
    from voicefleet.serve.synthesizer import intra_op_threads

    settings = ServeSettings(synthesis_threads=2, torch_threads=3, adaptive_threads=True)
    assert [intra_op_threads(settings, n) for n in (1, 2, 5)] == [6, 3, 3]
    fixed = ServeSettings(synthesis_threads=2, torch_threads=3)  # the default: off
    assert [intra_op_threads(fixed, n) for n in (1, 2)] == [3, 3]


@pytest.mark.parametrize("bad", [1, 2])
def test_first_chunk_tokens_below_the_holdback_is_refused_with_its_reason(bad):
    from pydantic import ValidationError

    from voicefleet.serve.schemas import TTSRequest

    with pytest.raises(ValidationError, match="first_chunk_tokens must be 0 or more than 2"):
        TTSRequest(voice="alice", text="你好。", stream=True, first_chunk_tokens=bad)
    assert TTSRequest(voice="alice", text="你好。", first_chunk_tokens=0).first_chunk_tokens == 0


def test_the_engine_picks_the_synthesis_deployment_and_refuses_torch_only_settings(tmp_path):
    from pydantic import ValidationError
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from voicefleet.serve.app import app_builder
    from voicefleet.serve.settings import ServeSettings

    for engine, cls in (("torch", "VoiceSynthesizer"), ("onnx", "OnnxVoiceSynthesizer")):
        app = call_user_app_builder_with_args_if_necessary(app_builder, {"engine": engine})
        synthesis = app._bound_deployment.init_args[0]._bound_deployment
        assert synthesis.name == "VoiceSynthesizer" and synthesis.func_or_class.__name__ == cls
    assert ServeSettings().engine == "torch"
    for name, value in (("precision", "fast"), ("batch_max_size", 2), ("adaptive_threads", True),
                        ("g2pw_model", tmp_path)):
        ServeSettings(engine="torch", **{name: value})
        with pytest.raises(ValidationError, match=f"{name}=.* is a torch-engine setting; with engine onnx"):
            ServeSettings(engine="onnx", **{name: value})
