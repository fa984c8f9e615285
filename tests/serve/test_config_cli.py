"""serve_config.yaml builds the app; settings refuse bad values; the CLI fails early on bad paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_serve_config_builds_the_app():
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from voicefleet.serve.app import app_builder

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve_config.yaml").read_text()))
    application = config.applications[0]
    assert application.import_path == "voicefleet.serve.app:app_builder"
    app = call_user_app_builder_with_args_if_necessary(app_builder, application.args)
    assert type(app).__name__ == "Application"


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
