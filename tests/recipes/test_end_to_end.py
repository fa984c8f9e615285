"""`voicefleet run`: list file -> prepare -> train -> register -> serve -> HTTP speech, and a re-run that reuses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from voicefleet.recipes.end_to_end import EndToEndConfig, run_end_to_end

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_corpus.py"), str(out)], check=True)
    return out / "list.txt"


def test_demo_corpus_is_small_and_well_formed(corpus):
    lines = corpus.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 10
    total_bytes, total_s = 0, 0.0
    for line in lines:
        path, speaker, lang, text = line.split("|")
        info = sf.info(corpus.parent / path)
        assert speaker == "demo" and lang == "zh" and text and 3.0 <= info.duration <= 10.0
        total_bytes += (corpus.parent / path).stat().st_size
        total_s += info.duration
    assert 45 <= total_s <= 90 and total_bytes < 3_000_000


def test_run_end_to_end_then_reuses_everything(ray_session, corpus, tiny_pretrained, tmp_path):
    from ray import serve

    config = EndToEndConfig(list_file=str(corpus), voice="demo", pretrained=str(tiny_pretrained.root),
                            workdir=str(tmp_path / "work"), mode="train", train_steps=4, batch_size=2,
                            prepare_workers=1, port=8431, say="你好，欢迎。", output=str(tmp_path / "out" / "demo.wav"))
    try:
        first = run_end_to_end(config)
        assert first.prepared_now and first.clips_kept == 12 and first.voice_version == 1
        assert first.endpoint == "http://127.0.0.1:8431"
        audio, sr = sf.read(first.wav)
        assert sr == 32000 and len(audio) > 0
        registry = Path(first.registry)
        assert (registry / "voices" / "demo" / "voice.json").exists()

        again = run_end_to_end(config.model_copy(update={"output": str(tmp_path / "out" / "again.wav")}))
        assert not again.prepared_now and again.voice_version == 1  # nothing retrained, nothing re-registered
        assert any("reused" in step for step in again.steps if step.startswith("prepare"))
        assert any("reused" in step for step in again.steps if step.startswith("train"))
        # same voice, same seed, same text: the same speech
        assert sf.read(again.wav)[0].tolist() == audio.tolist()
    finally:
        serve.shutdown()


def test_run_refuses_a_bad_voice_id_and_missing_pretrained(corpus, tiny_pretrained, tmp_path):
    from voicefleet.models.pretrained import PretrainedError
    from voicefleet.platform.registry import RegistryError

    with pytest.raises(RegistryError):
        run_end_to_end(EndToEndConfig(list_file=str(corpus), voice="Not OK", pretrained=str(tiny_pretrained.root)))
    with pytest.raises(PretrainedError):
        run_end_to_end(EndToEndConfig(list_file=str(corpus), voice="demo", pretrained=str(tmp_path / "nothing")))


def test_cli_run_with_adapters_goes_from_a_list_file_to_a_live_endpoint(ray_session, corpus, tiny_pretrained,
                                                                         tmp_path):
    from ray import serve
    from typer.testing import CliRunner

    from voicefleet.cli.app import app
    from voicefleet.platform.voices import registry_for

    out = tmp_path / "out" / "bob.wav"
    try:
        done = CliRunner().invoke(app, [
            "run", str(corpus), "--voice", "bob", "--pretrained", str(tiny_pretrained.root), "--workdir",
            str(tmp_path / "work"), "--adapter", "lora", "--rank", "4", "--train-steps", "3", "--batch-size", "2",
            "--port", "8432", "--say", "你好。", "--output", str(out), "--exit"])
        assert done.exit_code == 0, done.output
        record = registry_for(str(tmp_path / "work" / "runs")).get("bob")
        assert record.is_adapter and record.adapters["gpt"]["rank"] == record.adapters["sovits"]["rank"] == 4
        audio, sr = sf.read(out)
        assert sr == 32000 and len(audio) > 0
    finally:
        serve.shutdown()
    refused = CliRunner().invoke(app, ["run", str(corpus), "--voice", "bob", "--pretrained", str(tiny_pretrained.root),
                                       "--adapter", "lora", "--tune"])
    assert refused.exit_code == 2 and "drop --tune" in refused.output
    assert "voicefleet tune --adapter lora" in " ".join(refused.output.split())
