"""HuBERT / BERT feature extractors against direct transformers computations on the same folders.

The references below follow the official GPT-SoVITS code paths: ``HubertModel(wave)`` as dataset
preparation and inference call it, ``Wav2Vec2FeatureExtractor`` + ``HubertModel`` as the ``CNHubert``
wrapper's ``forward``, and ``get_bert_feature`` (masked LM, hidden_states[-3][1:-1], repeated per
word2ph) for text.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.feature_folders import write_full_bert, write_full_hubert, write_tiny_bert, write_tiny_hubert
from voicefleet.models.features import BertFeatures, HubertFeatures, pad_reference_16k

TEXT = "你好，世界！今天天气很好。"
WORD2PH = [2, 2, 1, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1]


@pytest.fixture(scope="session")
def hubert_dir(tmp_path_factory) -> Path:
    return write_tiny_hubert(tmp_path_factory.mktemp("features") / "chinese-hubert-base")


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("features") / "chinese-roberta-wwm-ext-large")


@pytest.fixture(scope="session")
def hubert(hubert_dir) -> HubertFeatures:
    return HubertFeatures.from_pretrained(hubert_dir)


@pytest.fixture(scope="session")
def bert(bert_dir) -> BertFeatures:
    return BertFeatures.from_pretrained(bert_dir)


def _wave(samples: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # offset and scale away from (0, 1) so that normalisation visibly matters
    return 0.3 * torch.randn(samples, generator=generator) + 0.05


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir())


# --- HuBERT --------------------------------------------------------------------------------------


def test_tiny_hubert_folder_layout(hubert_dir):
    names = {path.name for path in hubert_dir.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= names
    preprocessor = json.loads((hubert_dir / "preprocessor_config.json").read_text())
    assert preprocessor["sampling_rate"] == 16000 and preprocessor["do_normalize"] is True
    assert _folder_bytes(hubert_dir) < 8_000_000


@pytest.mark.parametrize("samples, frames", [(16000, 49), (32000, 99), (400, 1)])
def test_hubert_frame_count(hubert, samples, frames):
    assert hubert.num_frames(samples) == frames
    features = hubert(_wave(samples, seed=0)[None])
    assert features.shape == (1, 768, frames)
    assert features.dtype == torch.float32


def test_hubert_loads_float16_folder_as_float32(hubert):
    # transformers 5 would keep the stored float16; the official code ran float32
    assert {p.dtype for p in hubert.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in hubert.parameters())


def test_hubert_matches_direct_model_call(hubert, hubert_dir):
    from transformers import HubertModel

    model = HubertModel.from_pretrained(str(hubert_dir), local_files_only=True, dtype=torch.float32).eval()
    wave = torch.stack([_wave(16000, seed=1), _wave(16000, seed=2)])
    with torch.no_grad():
        expected = model(wave)["last_hidden_state"].transpose(1, 2)
    torch.testing.assert_close(hubert(wave), expected, atol=1e-5, rtol=1e-5)


def test_hubert_normalize_matches_feature_extractor(hubert_dir):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    extractor = Wav2Vec2FeatureExtractor.from_pretrained(str(hubert_dir), local_files_only=True)
    model = HubertModel.from_pretrained(str(hubert_dir), local_files_only=True, dtype=torch.float32).eval()
    # HuBERT base group-normalises its first conv layer over time, which cancels input scale and
    # offset except through the norm's eps; a quiet clip makes the eps (and so normalising) matter.
    wave = 0.03 * _wave(24000, seed=3)
    inputs = extractor(wave.numpy(), return_tensors="pt", sampling_rate=16000).input_values
    with torch.no_grad():
        expected = model(inputs)["last_hidden_state"].transpose(1, 2)

    normalized = HubertFeatures.from_pretrained(hubert_dir, normalize=True)
    torch.testing.assert_close(normalized(wave[None]), expected, atol=1e-5, rtol=1e-5)
    raw = HubertFeatures.from_pretrained(hubert_dir)(wave[None])
    assert (raw - expected).abs().max() > 1e-2  # the input really was not normalised already


def test_hubert_lengths_keep_single_item_numbers(hubert):
    lengths = [16000, 12000, 16000]
    rows = [_wave(n, seed=10 + i) for i, n in enumerate(lengths)]
    batch = torch.zeros(len(rows), max(lengths))
    for i, row in enumerate(rows):
        batch[i, : row.shape[0]] = row
    features = hubert(batch, lengths=lengths)
    assert features.shape == (3, 768, 49)
    for i, row in enumerate(rows):
        alone = hubert(row[None])[0]
        frames = hubert.num_frames(lengths[i])
        torch.testing.assert_close(features[i, :, :frames], alone, atol=1e-5, rtol=1e-5)
        assert torch.all(features[i, :, frames:] == 0)


def test_hubert_rejects_bad_input(hubert):
    with pytest.raises(ValueError, match="batch, samples"):
        hubert(torch.zeros(16000))
    with pytest.raises(ValueError, match="at least 400"):
        hubert(torch.zeros(1, 399))
    with pytest.raises(ValueError, match="lengths must lie"):
        hubert(torch.zeros(2, 1000), lengths=[1000, 1001])


def test_hubert_stays_in_eval_mode(hubert):
    parent = torch.nn.Sequential(hubert)
    parent.train()
    assert not hubert.model.training
    parent.eval()


def test_hubert_loads_official_key_layout(hubert, hubert_dir, tmp_path):
    """The official folder ships pytorch_model.bin with the old weight-norm names weight_g/weight_v."""
    from safetensors.torch import load_file

    state = load_file(str(hubert_dir / "model.safetensors"))
    renamed = {
        key.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): value
        for key, value in state.items()
    }
    assert any(key.endswith("weight_g") for key in renamed)
    legacy = tmp_path / "chinese-hubert-base"
    legacy.mkdir()
    torch.save(renamed, legacy / "pytorch_model.bin")
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(hubert_dir / name, legacy / name)
    wave = _wave(16000, seed=4)[None]
    torch.testing.assert_close(HubertFeatures.from_pretrained(legacy)(wave), hubert(wave), atol=0, rtol=0)


def test_pad_reference_16k():
    wave = _wave(48000, seed=5)
    padded = pad_reference_16k(wave)
    # official: int(32000 * 0.3) zeros, computed with the SoVITS rate although the clip is 16 kHz
    assert padded.shape == (48000 + 9600,)
    assert torch.equal(padded[:48000], wave) and torch.all(padded[48000:] == 0)
    assert pad_reference_16k(wave[None].repeat(2, 1)).shape == (2, 57600)
    with pytest.raises(ValueError, match="3..10 s"):
        pad_reference_16k(wave[:47999], check_duration=True)


# --- BERT ----------------------------------------------------------------------------------------


def _official_bert_feature(folder: Path, text: str, word2ph: list[int]) -> torch.Tensor:
    """get_bert_feature written out against plain transformers classes."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    with torch.no_grad():
        outputs = model(**tokenizer(text, return_tensors="pt"), output_hidden_states=True)
    per_char = outputs["hidden_states"][-3][0][1:-1]
    return torch.cat([per_char[i].repeat(n, 1) for i, n in enumerate(word2ph)], dim=0).T


def test_tiny_bert_folder_layout(bert_dir, bert):
    names = {path.name for path in bert_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= names
    config = json.loads((bert_dir / "config.json").read_text())
    assert config["hidden_size"] == 1024 and config["num_hidden_layers"] == 3
    assert _folder_bytes(bert_dir) < 45_000_000
    # Chinese text tokenizes one token per character, as with the official tokenizer
    tokens = bert.tokenizer.convert_ids_to_tokens(bert.tokenizer(TEXT)["input_ids"])
    assert tokens == ["[CLS]", *TEXT, "[SEP]"]


def test_bert_phone_features_match_official_computation(bert, bert_dir):
    features = bert.phone_level_features(TEXT, WORD2PH)
    assert features.shape == (1024, sum(WORD2PH)) and features.dtype == torch.float32
    torch.testing.assert_close(features, _official_bert_feature(bert_dir, TEXT, WORD2PH), atol=1e-5, rtol=1e-5)
    assert len(bert.model.encoder.layer) == 1  # layers after hidden_states[-3] are not run


def test_bert_batch_matches_single(bert):
    texts = [TEXT, "世界。"]
    word2phs = [WORD2PH, [2, 2, 1]]
    batched = bert.phone_level_features_batch(texts, word2phs)
    for text, word2ph, features in zip(texts, word2phs, batched):
        torch.testing.assert_close(features, bert.phone_level_features(text, word2ph), atol=1e-5, rtol=1e-5)


def test_bert_hidden_size_comes_from_config(tmp_path):
    small = BertFeatures.from_pretrained(write_tiny_bert(tmp_path / "bert64", hidden_size=64, num_layers=2))
    assert small.phone_level_features("你好", [2, 3]).shape == (64, 5)


def test_bert_rejects_mismatched_word2ph(bert):
    with pytest.raises(ValueError, match="word2ph has 2 entries but text '你好世界' has 4 characters"):
        bert.phone_level_features("你好世界", [2, 2])
    with pytest.raises(ValueError, match="one token per character"):
        bert.phone_level_features("你好 ab", [2, 2, 0, 1, 1])
    with pytest.raises(ValueError, match="got 2 texts but 1 word2ph"):
        bert.phone_level_features_batch(["你", "好"], [[2]])


# --- folder errors and offline loading ---------------------------------------------------------


def test_missing_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(CheckpointError, match="no-such-folder.*is not a folder"):
        HubertFeatures.from_pretrained(missing)
    with pytest.raises(CheckpointError, match="no-such-folder.*is not a folder"):
        BertFeatures.from_pretrained(missing)


def test_wrong_kind_of_folder(hubert_dir, bert_dir):
    with pytest.raises(CheckpointError, match="model_type 'bert', expected 'hubert'"):
        HubertFeatures.from_pretrained(bert_dir)
    with pytest.raises(CheckpointError, match="model_type 'hubert', expected 'bert'"):
        BertFeatures.from_pretrained(hubert_dir)


@pytest.mark.parametrize(
    "removed, message",
    [
        ("preprocessor_config.json", "preprocessor_config.json"),
        ("model.safetensors", "weights missing"),
        ("config.json", "config.json is missing"),
    ],
)
def test_incomplete_hubert_folder_names_missing_file(hubert_dir, tmp_path, removed, message):
    broken = tmp_path / "hubert"
    shutil.copytree(hubert_dir, broken)
    (broken / removed).unlink()
    with pytest.raises(CheckpointError, match=message) as error:
        HubertFeatures.from_pretrained(broken)
    assert str(broken) in str(error.value)


def test_incomplete_bert_folder_names_missing_tokenizer(bert_dir, tmp_path):
    broken = tmp_path / "bert"
    shutil.copytree(bert_dir, broken)
    for name in ("tokenizer.json", "vocab.txt"):
        (broken / name).unlink()
    with pytest.raises(CheckpointError, match="tokenizer missing"):
        BertFeatures.from_pretrained(broken)


def test_loading_never_touches_the_network(hubert_dir, bert_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert HubertFeatures.from_pretrained(hubert_dir)(_wave(16000, seed=6)[None]).shape == (1, 768, 49)
    assert BertFeatures.from_pretrained(bert_dir).phone_level_features("你好", [2, 2]).shape == (1024, 4)


# --- official sizes (slow) ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VOICEFLEET_SLOW") != "1",
                    reason="writes ~840 MB of full-size random weights; set VOICEFLEET_SLOW=1 to run")
def test_full_size_folders(tmp_path):
    hubert = HubertFeatures.from_pretrained(write_full_hubert(tmp_path / "hubert"))
    bert = BertFeatures.from_pretrained(write_full_bert(tmp_path / "bert"))
    assert sum(p.numel() for p in hubert.parameters()) == 94_371_712
    assert len(bert.tokenizer) == 21128 and bert.source_num_layers == 24
    assert hubert(torch.zeros(1, 16000)).shape == (1, 768, 49)
    assert bert.phone_level_features("你好", [2, 2]).shape == (1024, 4)
    assert np.isfinite(bert.phone_level_features("你好", [2, 2]).numpy()).all()


def test_fast_bert_features_stay_close_and_original_is_untouched(bert):
    from voicefleet.inference.fast import fast_bert

    text, word2ph = "今天天气很好", [2, 2, 2, 2, 2, 2]
    before = {k: v.clone() for k, v in bert.model.state_dict().items()}
    ref = bert.phone_level_features(text, word2ph)
    fast = fast_bert(bert)
    out = fast.phone_level_features(text, word2ph)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    from voicefleet.inference.fast import PackedBf16Linear, packed_linear_available

    linears = [m for m in fast.model.modules() if isinstance(m, (torch.nn.Linear, PackedBf16Linear))]
    assert linears and all(isinstance(m, PackedBf16Linear) or m.weight.dtype == torch.bfloat16 for m in linears)
    assert packed_linear_available() == all(isinstance(m, PackedBf16Linear) for m in linears)
    assert 0 < float((out - ref).norm() / ref.norm()) < 0.03  # bf16 rounding, nothing worse
    assert all(torch.equal(before[k], v) for k, v in bert.model.state_dict().items())
    assert torch.equal(bert.phone_level_features(text, word2ph), ref)
