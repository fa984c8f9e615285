"""`voicefleet tune` and `voicefleet run` refuse bad input with one line and exit code 2 (no Ray needed)."""

from __future__ import annotations

from typer.testing import CliRunner

from tests.platform.training.synthetic import write_voice_dataset
from voicefleet.cli import app


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:"), result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, result.output


def test_tune_refuses_bad_input(tmp_path, tiny_pretrained):
    dataset = write_voice_dataset(tmp_path / "ds", n_train=3, n_val=1)
    common = ["--pretrained", tiny_pretrained.root, "--storage", tmp_path / "runs"]
    _one_line_error(_run("tune", tmp_path / "nothing", "--voice", "alice", *common), "prepared dataset")
    _one_line_error(_run("tune", dataset, "--voice", "Alice!", *common), "invalid voice id")
    _one_line_error(_run("tune", dataset, "--voice", "alice", "--resume", *common), "no sweep", "alice-sweep")
    space = tmp_path / "space.yaml"
    space.write_text("gpt_lr_ratio: {low: 0.9, high: 0.3}\n")
    _one_line_error(_run("tune", dataset, "--voice", "alice", "--space", space, *common), "below")
    space.write_text("gpt_lr_ratio: [unclosed\n")
    _one_line_error(_run("tune", dataset, "--voice", "alice", "--space", space, *common), "not valid YAML")
    _one_line_error(_run("tune", dataset, "--voice", "alice", "--pretrained", tmp_path), "pretrained")


def test_run_refuses_bad_input(tmp_path, tiny_pretrained):
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav|spk|zh|你好\n")
    _one_line_error(_run("run", listing, "--voice", "Bad Id", "--pretrained", tiny_pretrained.root), "invalid voice id")
    _one_line_error(_run("run", listing, "--voice", "alice", "--pretrained", tmp_path / "none"), "pretrained")


def test_search_space_flags_replace_dimensions(tmp_path):
    from voicefleet.cli.tune import _space

    space_file = tmp_path / "space.yaml"
    space_file.write_text("text_low_lr_rate: {low: 0.2, high: 0.6}\n")
    space = _space(space_file, "1e-5:1e-3", "0.3:0.7", None, 0)
    assert (space.sovits_lr.low, space.sovits_lr.high, space.sovits_lr.log) == (1e-5, 1e-3, True)
    assert (space.gpt_lr_ratio.low, space.gpt_lr_ratio.high) == (0.3, 0.7)
    assert space.warmup_fraction.low == 0.02 and space.min_warmup_steps == 0  # untouched default, flag
    assert "text_low_lr_rate" in space.dimensions()  # from the file


def test_tune_refuses_a_malformed_range_flag(tmp_path, tiny_pretrained):
    dataset = write_voice_dataset(tmp_path / "ds", n_train=3, n_val=1)
    _one_line_error(_run("tune", dataset, "--voice", "alice", "--pretrained", tiny_pretrained.root,
                         "--gpt-lr-ratio", "0.2-1.0"), "LOW:HIGH")
    _one_line_error(_run("tune", dataset, "--voice", "alice", "--pretrained", tiny_pretrained.root,
                         "--warmup", "0.5:0.1"), "below")


def test_tune_refuses_contradictory_adapter_flags(tmp_path, tiny_pretrained):
    dataset = write_voice_dataset(tmp_path / "ds", n_train=3, n_val=1)
    common = [dataset, "--voice", "bob", "--pretrained", tiny_pretrained.root, "--storage", tmp_path / "runs"]
    _one_line_error(_run("tune", *common, "--ranks", "4,8"), "--ranks", "--adapter lora")
    _one_line_error(_run("tune", *common, "--rank", "4"), "--rank", "--adapter lora")
    _one_line_error(_run("tune", *common, "--alpha-rule", "scaled"), "--alpha-rule", "--adapter lora")
    _one_line_error(_run("tune", *common, "--targets-gpt", "attn"), "--targets-gpt", "--adapter lora")
    _one_line_error(_run("tune", *common, "--adapter", "lora", "--ranks", "4,8", "--rank", "8"),
                    "--rank 8 fixes", "--ranks 4,8 searches", "give one of them")
    _one_line_error(_run("tune", *common, "--adapter", "lora", "--ranks", "4,eight"), "whole numbers", "4,eight")
    _one_line_error(_run("tune", *common, "--adapter", "lora", "--ranks", "0,8"), "rank must be 1-1024")
    _one_line_error(_run("tune", *common, "--adapter", "lora", "--ranks", "8,8"), "repeat")
    _one_line_error(_run("tune", *common, "--adapter", "lora", "--targets-gpt", "flow"),
                    "unknown gpt adapter target", "attn, ffn")
    _one_line_error(_run("tune", *common, "--adapter", "lora", "--alpha-rule", "doubled"), "alpha_rule")
    space = tmp_path / "space.yaml"
    space.write_text("lora_rank: [4, 16]\n")
    _one_line_error(_run("tune", *common, "--space", space), "needs adapter lora")  # ranks from the file
    _one_line_error(_run("tune", *common, "--space", space, "--adapter", "lora", "--rank", "4"), "give one of them")


def test_run_points_an_adapter_sweep_at_tune(tmp_path, tiny_pretrained):
    listing = tmp_path / "list.txt"
    listing.write_text("a.wav|spk|zh|你好\n")
    _one_line_error(_run("run", listing, "--voice", "bob", "--pretrained", tiny_pretrained.root, "--adapter", "lora",
                         "--tune"), "drop --tune", "voicefleet tune --adapter lora")


def test_tune_builds_the_adapter_sweep_it_is_given():
    from voicefleet.cli.tune import _space

    space = _space(None, None, None, None, None, "16,4")
    assert space.lora_rank.values == [16, 4] and "lora_rank" in space.dimensions()
