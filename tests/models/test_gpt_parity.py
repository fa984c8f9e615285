"""GPT v2 against the official reference: key manifests, checkpoint files, and numeric fixtures.

Everything expected comes from the compat folder (README sections 3, 4, 7, 8); sizes are read
from configs.json and the arrays, so another fixture set with the same layout works too.
"""

from __future__ import annotations

import json
import shutil
from collections import OrderedDict

import pytest
import torch

from tests.conftest import assert_close
from voicefleet.inference.generation import SamplingParams, TokenGenerator, relayout_for_cpu_decoding_
from voicefleet.models.builders_gpt import gpt_v2
from voicefleet.models.checkpoint import CheckpointError, load_official_file
from voicefleet.models.checkpoint.gpt_io import (gpt_state_from_official, gpt_state_to_official, load_gpt,
                                                 save_gpt)
from voicefleet.models.config import GPTConfig

# README 8 tolerances, as |a - b| <= atol + rtol * |b|
LOGITS_TOL = dict(atol=2e-4, rtol=1e-4)
LOSS_TOL = dict(atol=0.0, rtol=1e-4)

# README 7.2 / 7.3 call arguments: greedy (top_k=1) decoding with these repetition penalties
REPETITION_PENALTY = {"ar": 1.35, "ar_rp1": 1.0, "arb": 1.35}


def _greedy(tag: str) -> SamplingParams:
    return SamplingParams(top_k=1, top_p=1.0, temperature=1.0, repetition_penalty=REPETITION_PENALTY[tag])


def _official_step_logits(raw: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """What the fixtures recorded as step logits: the head output after the official in-place
    repetition penalty (scores of tokens already in the sequence: < 0 multiplied, else divided).

    The reference applies the penalty in place to the very tensor its recorder captured, so the
    stored arrays hold penalised values for seen tokens (README 7.2 says "before"; the data shows
    exactly penalised values). `raw`: (vocab,); `history`: (tokens,)."""
    out = raw.clone()
    seen = out[history]
    out[history] = torch.where(seen < 0, seen * penalty, seen / penalty)
    return out


@pytest.fixture(scope="module")
def tiny(compat_dir):
    model, config, info = load_gpt(compat_dir / "tiny_s1.ckpt")
    return model, config, info


# ---------------------------------------------------------------- full-size layout


def test_full_size_keys_match_official_manifest(compat_dir):
    manifest = json.loads((compat_dir / "keys_s1_v2.json").read_text())
    with torch.device("meta"):
        model = gpt_v2()
    official = gpt_state_to_official(model.state_dict())
    assert list(official) == list(manifest), "official key order differs"
    for key, (shape, _dtype) in manifest.items():
        assert list(official[key].shape) == shape, key


def test_full_size_parameter_count(compat_dir):
    counts = json.loads((compat_dir / "file_formats.json").read_text())["parameter_counts"]
    with torch.device("meta"):
        model = gpt_v2()
    assert sum(p.numel() for p in model.parameters()) == counts["s1_v2_parameters"]
    assert len(model.state_dict()) == counts["n_keys"]["s1"]


def test_builder_matches_official_config(compat_dir):
    formats = json.loads((compat_dir / "file_formats.json").read_text())
    official = GPTConfig.from_official(formats["gpt_export_ckpt"]["config_contents_v2"]["model"])
    with torch.device("meta"):
        assert gpt_v2().config == official


# ---------------------------------------------------------------- loading the fixture files


@pytest.mark.parametrize("name", ["tiny_s1.ckpt", "tiny_s1_export.ckpt"])
def test_tiny_files_load_strictly(compat_dir, compat_configs, name):
    model, config, info = load_gpt(compat_dir / name)
    raw = load_official_file(compat_dir / name)
    assert config == GPTConfig.from_official(compat_configs["s1_config"]["model"])
    assert info.info == raw["info"] and info.config == raw["config"] and info.layout == "export"
    assert info.dtype == next(iter(raw["weight"].values())).dtype
    assert not model.training
    ours = model.state_dict()
    expected = gpt_state_from_official(raw["weight"])
    assert list(ours) == list(expected)
    for key, value in expected.items():
        assert torch.equal(ours[key], value.float()), key


def test_lightning_state_dict_layout_loads(compat_dir, tmp_path):
    raw = load_official_file(compat_dir / "tiny_s1.ckpt")
    path = tmp_path / "epoch=1-step=10.ckpt"
    torch.save({"state_dict": raw["weight"], "hyper_parameters": {"config": raw["config"]}, "epoch": 1}, path)
    model, _, info = load_gpt(path)
    assert info.layout == "lightning" and info.info is None
    assert torch.equal(model.head.weight, raw["weight"]["model.ar_predict_layer.weight"])


# ---------------------------------------------------------------- teacher forcing (README 7.1)


@pytest.mark.parametrize("tag", ["tf1", "tf2"])
def test_teacher_forced_logits_and_loss(tiny, s1, tag):
    model = tiny[0]
    with torch.no_grad():
        out = model(s1[f"{tag}_x"], s1[f"{tag}_x_lens"], s1[f"{tag}_y"], s1[f"{tag}_y_lens"], s1[f"{tag}_bert"])
    assert torch.equal(out.targets, s1[f"{tag}_targets"])
    assert_close(out.logits, s1[f"{tag}_logits"], **LOGITS_TOL, name=f"{tag}_logits")
    assert_close(out.loss, s1[f"{tag}_loss"], **LOSS_TOL, name=f"{tag}_loss")
    assert_close(out.top3_acc, s1[f"{tag}_acc"], atol=1e-6, rtol=0, name=f"{tag}_acc")


def test_tf2_needs_the_official_pad_mask_quirk(tiny, s1):
    """The batch-2 fixture is only reproduced with the official (left-pad) text mask."""
    with torch.no_grad():
        out = tiny[0](s1["tf2_x"], s1["tf2_x_lens"], s1["tf2_y"], s1["tf2_y_lens"], s1["tf2_bert"],
                      official_pad_mask_quirk=False)
    assert not torch.isclose(out.loss, s1["tf2_loss"], rtol=1e-4)


# ---------------------------------------------------------------- decoding (README 7.2, 7.3)


@pytest.mark.parametrize("tag", ["ar", "ar_rp1"])
def test_single_sequence_greedy_decoding(tiny, s1, compat_configs, tag):
    model = tiny[0]
    expected = s1[f"{tag}_y"][0]
    prompt = s1["ar_prompts"]
    # the fixture stopped on the early-stop rule after `n` new tokens: more than n - 1
    early_stop_num = compat_configs["inputs"]["ar"]["n"] - 1
    out = TokenGenerator(model).generate(s1["ar_x"], s1["ar_bert"], prompt, sampling=_greedy(tag),
                                         early_stop_num=early_stop_num, return_step_logits=True)
    assert torch.equal(out.sequences[0], expected)
    assert out.idx == [int(s1[f"{tag}_idx"])]
    reference = s1[f"{tag}_step_logits"]
    assert out.step_logits.shape == (reference.shape[0], 1, reference.shape[1])
    prompt_len = prompt.shape[1]
    for step in range(reference.shape[0]):
        recorded = _official_step_logits(out.step_logits[step, 0], expected[:prompt_len + step],
                                         REPETITION_PENALTY[tag])
        assert_close(recorded, reference[step], **LOGITS_TOL, name=f"{tag} step {step}")


def test_batched_greedy_decoding(tiny, s1, compat_configs):
    model = tiny[0]
    prompts = s1["arb_prompts"]
    rows = prompts.shape[0]
    # the batched path stops once more than `n` tokens exist and returns y[:-1]: n tokens
    early_stop_num = compat_configs["inputs"]["arb"]["n"]
    out = TokenGenerator(model).generate_batch(
        [s1[f"arb_x{i}"] for i in range(rows)], [s1[f"arb_bert{i}"] for i in range(rows)], prompts,
        sampling=_greedy("arb"), early_stop_num=early_stop_num, max_len=int(s1["arb_x_lens"].max()),
        return_step_logits=True)
    for i in range(rows):
        assert torch.equal(out.sequences[i], s1[f"arb_y{i}"]), f"row {i}"
    assert out.idx == s1["arb_idx"].tolist()
    reference = s1["arb_step_logits"]
    assert out.step_logits.shape == reference.shape
    prompt_len = prompts.shape[1]
    for step in range(reference.shape[0]):
        for i in range(rows):
            # the last step's token is not in the returned sequence: append a placeholder
            history = torch.cat([s1[f"arb_y{i}"], s1[f"arb_y{i}"].new_zeros(1)])[:prompt_len + step]
            recorded = _official_step_logits(out.step_logits[step, i], history, REPETITION_PENALTY["arb"])
            assert_close(recorded, reference[step, i], **LOGITS_TOL, name=f"arb step {step} row {i}")


# ---------------------------------------------------------------- saving and round trips


def test_converters_round_trip(compat_dir):
    weight = load_official_file(compat_dir / "tiny_s1.ckpt")["weight"]
    back = gpt_state_to_official(gpt_state_from_official(weight))
    assert list(back) == list(weight)
    assert all(back[k] is weight[k] for k in weight)


def test_save_reproduces_official_export(tiny, compat_dir, tmp_path):
    model, _, info = tiny
    path = save_gpt(model, info.config, tmp_path / "tiny-e1.ckpt", info.info)
    mine = load_official_file(path)
    official = load_official_file(compat_dir / "tiny_s1_export.ckpt")
    assert type(mine) is type(official) is OrderedDict
    assert list(mine) == list(official) == ["weight", "config", "info"]
    assert type(mine["weight"]) is type(official["weight"])
    assert list(mine["weight"]) == list(official["weight"])
    for key, value in official["weight"].items():
        assert mine["weight"][key].dtype == value.dtype, key
        assert torch.equal(mine["weight"][key], value), key
    assert mine["config"] == official["config"] and type(mine["config"]) is dict
    assert mine["info"] == official["info"]

    again, config, _ = load_gpt(path)
    assert config == model.config
    for key, value in again.state_dict().items():
        assert torch.equal(value, model.state_dict()[key].half().float()), key


def test_save_after_cpu_relayout_writes_contiguous_official_tensors(compat_dir, tmp_path):
    model, _, info = load_gpt(compat_dir / "tiny_s1.ckpt")
    path = save_gpt(relayout_for_cpu_decoding_(model), info.config, tmp_path / "relaid.ckpt", info.info)
    mine = load_official_file(path)["weight"]
    official = load_official_file(compat_dir / "tiny_s1_export.ckpt")["weight"]
    for key, value in official.items():
        assert mine[key].is_contiguous() and torch.equal(mine[key], value), key


def test_save_refuses_overwrite_and_wrong_config(tiny, tmp_path):
    model, _, info = tiny
    path = save_gpt(model, info.config, tmp_path / "a.ckpt", info.info)
    with pytest.raises(CheckpointError, match="refusing to overwrite"):
        save_gpt(model, info.config, path, info.info)
    save_gpt(model, info.config, path, "GPT-e2", overwrite=True)
    # one layer more than the fixture has, whatever size the fixture set uses
    wrong = {**info.config, "model": {**info.config["model"], "n_layer": info.config["model"]["n_layer"] + 1}}
    with pytest.raises(ValueError, match="describes"):
        save_gpt(model, wrong, tmp_path / "b.ckpt", info.info)


# ---------------------------------------------------------------- bad files


def _tiny_export_with(compat_dir, tmp_path, edit):
    raw = load_official_file(compat_dir / "tiny_s1_export.ckpt")
    weight = OrderedDict(raw["weight"])
    edit(weight)
    path = tmp_path / "edited.ckpt"
    torch.save(OrderedDict(weight=weight, config=raw["config"], info=raw["info"]), path)
    return path


def test_wrong_shape_names_the_key(compat_dir, tmp_path):
    key = "model.h.layers.1.linear1.weight"

    def grow(weight):
        weight[key] = torch.zeros(weight[key].shape[0] + 1, weight[key].shape[1], dtype=weight[key].dtype)

    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")) as err:
        load_gpt(_tiny_export_with(compat_dir, tmp_path, grow))
    assert "shape" in str(err.value)


def test_missing_and_unknown_keys_are_named(compat_dir, tmp_path):
    key = "model.ar_audio_position.alpha"
    with pytest.raises(CheckpointError, match="missing") as err:
        load_gpt(_tiny_export_with(compat_dir, tmp_path, lambda w: w.pop(key)))
    assert key in str(err.value)

    def add(weight):
        weight["model.h.layers.0.extra.weight"] = torch.zeros(1)

    with pytest.raises(CheckpointError, match=r"model\.h\.layers\.0\.extra\.weight"):
        load_gpt(_tiny_export_with(compat_dir, tmp_path, add))


def test_truncated_file(compat_dir, tmp_path):
    data = (compat_dir / "tiny_s1.ckpt").read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated|corrupt|not a torch checkpoint"):
        load_gpt(path)


@pytest.mark.parametrize("name, kind", [("tiny_s2G_export.pth", "SoVITS generator"),
                                        ("tiny_s2D.pth", "SoVITS discriminator")])
def test_sovits_file_given_as_gpt(compat_dir, tmp_path, name, kind):
    path = tmp_path / name
    shutil.copy(compat_dir / name, path)
    with pytest.raises(CheckpointError, match=kind):
        load_gpt(path)
