"""g2pW plumbing: a G2PWModel folder is loaded and its predictions reach the Chinese phones.

The official model cannot be shipped, so each test writes a folder of the official layout with
its own tables and a tiny ONNX graph with the official input and output names and shapes. The
graph reads the token just before the queried character (so a wrong position id, context cut or
tokenization changes the answer), adds a per-character bias, applies the mask of the
character's readings and returns probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from voicefleet.text import chinese, g2pw
from voicefleet.text.errors import TextFrontendError

onnx = pytest.importorskip("onnx", reason="building the test model needs the onnx package (dev extra)")
pytest.importorskip("onnxruntime", reason="g2pW runs on onnxruntime")
pytest.importorskip("opencc", reason="g2pW converts text with opencc")

# Traditional characters, as the official tables hold them; bopomofo readings.
POLYPHONIC = [("行", "ㄒㄧㄥ2"), ("行", "ㄏㄤ2"), ("長", "ㄔㄤ2"), ("長", "ㄓㄤ3")]
MONOPHONIC = [("好", "ㄏㄠ4")]  # differs from the dictionary's hao3, so the table is seen to win
BOPOMOFO = {"ㄒㄧㄥ": "xing", "ㄏㄤ": "hang", "ㄔㄤ": "chang", "ㄓㄤ": "zhang", "ㄏㄠ": "hao"}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"步行長校很他走銀我"]
# Which reading the model picks after which token: after 步 it reads 行 hang2 (the dictionary
# says xing2), after 校 it reads 長 zhang3; elsewhere the character's own bias wins.
AFTER = {"步": "ㄏㄤ2", "校": "ㄓㄤ3"}
OWN = {"行": "ㄒㄧㄥ2", "長": "ㄔㄤ2"}


def _labels() -> list[str]:
    return sorted({reading for _, reading in POLYPHONIC})


def _graph() -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    labels, chars = _labels(), sorted({c for c, _ in POLYPHONIC})
    by_char = np.zeros((len(chars), len(labels)), dtype=np.float32)
    for char, reading in OWN.items():
        by_char[chars.index(char), labels.index(reading)] = 1.0
    # Rows for any id a BERT vocabulary may give (the official one has 21128), so the graph also
    # runs with a pretrained folder's tokenizer.
    by_previous = np.zeros((32768, len(labels)), dtype=np.float32)
    for token, reading in AFTER.items():
        by_previous[VOCAB.index(token), labels.index(reading)] = 10.0
    inits = [numpy_helper.from_array(by_char, "by_char"), numpy_helper.from_array(by_previous, "by_previous"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
             numpy_helper.from_array(np.array(1.0, dtype=np.float32), "onef"),
             numpy_helper.from_array(np.array(1e4, dtype=np.float32), "big")]
    nodes = [
        helper.make_node("Sub", ["position_ids", "one"], ["previous_position"]),
        helper.make_node("Unsqueeze", ["previous_position", "axis1"], ["previous_column"]),
        helper.make_node("GatherElements", ["input_ids", "previous_column"], ["previous_token2"], axis=1),
        helper.make_node("Squeeze", ["previous_token2", "axis1"], ["previous_token"]),
        helper.make_node("Gather", ["by_previous", "previous_token"], ["context_logits"], axis=0),
        helper.make_node("Gather", ["by_char", "char_ids"], ["char_logits"], axis=0),
        helper.make_node("Add", ["context_logits", "char_logits"], ["logits"]),
        helper.make_node("Sub", ["phoneme_mask", "onef"], ["masked_out"]),
        helper.make_node("Mul", ["masked_out", "big"], ["penalty"]),
        helper.make_node("Add", ["logits", "penalty"], ["masked_logits"]),
        helper.make_node("Softmax", ["masked_logits"], ["probs"], axis=-1),
    ]
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"])
            for n in ("input_ids", "token_type_ids", "attention_mask")]
    inputs = [*ints, helper.make_tensor_value_info("phoneme_mask", TensorProto.FLOAT, ["batch", len(labels)]),
              helper.make_tensor_value_info("char_ids", TensorProto.INT64, ["batch"]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch"])]
    output = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(labels)])
    graph = helper.make_graph(nodes, "tiny_g2pw", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _write_folder(root: Path) -> tuple[Path, Path]:
    from transformers import BertTokenizer

    folder = root / "G2PWModel"
    folder.mkdir()
    (folder / "g2pW.onnx").write_bytes(_graph())
    (folder / "config.py").write_text("model_source = 'bert-base-chinese'\nuse_mask = True\n"
                                      "use_char_phoneme = False\nwindow_size = None\n", encoding="utf-8")
    (folder / "POLYPHONIC_CHARS.txt").write_text("\n".join(f"{c}\t{r}" for c, r in POLYPHONIC), encoding="utf-8")
    (folder / "MONOPHONIC_CHARS.txt").write_text("\n".join(f"{c}\t{r}" for c, r in MONOPHONIC), encoding="utf-8")
    (folder / "bopomofo_to_pinyin_wo_tune_dict.json").write_text(json.dumps(BOPOMOFO), encoding="utf-8")
    (folder / "char_bopomofo_dict.json").write_text("{}", encoding="utf-8")
    tokenizer = root / "bert"
    BertTokenizer(vocab={t: i for i, t in enumerate(VOCAB)}, do_lower_case=True,
                  tokenize_chinese_chars=True).save_pretrained(str(tokenizer))
    return folder, tokenizer


@pytest.fixture()
def g2pw_folder(tmp_path):
    return _write_folder(tmp_path)


@pytest.fixture()
def dictionary_path_after():
    yield
    chinese.set_polyphone_model(None)


def test_predictions_follow_the_model(g2pw_folder):
    model = g2pw.G2PW.load(*g2pw_folder)
    # Simplified input: OpenCC s2tw makes 长 長 before the model sees it.
    assert model(["步行", "行走", "校长", "很长"]) == [["bu4", "hang2"], ["xing2", "zou3"], ["xiao4", "zhang3"],
                                                     ["hen3", "chang2"]]
    # A monophonic character takes the folder's table, anything else the dictionary; marks pass.
    assert model(["我好,"]) == [["wo3", "hao4", ","]]


def test_context_is_cut_around_the_polyphonic_characters(g2pw_folder):
    model = g2pw.G2PW.load(*g2pw_folder)
    filler = "我" * 40
    # 40 characters before, so the row starts 16 before 行 and its position id must follow.
    assert model([filler + "步行" + filler])[0][40:42] == ["bu4", "hang2"]
    assert model([filler + "行" + "步行"])[0][40:43] == ["xing2", "bu4", "hang2"]


def test_long_rows_are_truncated_to_the_bert_limit(g2pw_folder):
    model = g2pw.G2PW.load(*g2pw_folder)
    rows = [("我" * 600 + "步行" + "我" * 600, 601)]
    inputs = g2pw.model_inputs(model._tokenizer, rows, model.char_ids, model.char_labels, len(model.labels),
                               use_mask=True, max_tokens=64)
    input_ids, _, attention, mask, char_ids, positions = inputs
    assert input_ids.shape == (1, 64) and attention.sum() == 64
    assert input_ids[0, positions[0]] == VOCAB.index("行")
    assert input_ids[0, positions[0] - 1] == VOCAB.index("步")
    assert mask[0].tolist() == [1.0 if r in ("ㄏㄤ2", "ㄒㄧㄥ2") else 0.0 for r in model.labels]


def test_chinese_front_end_uses_the_enabled_model(g2pw_folder, dictionary_path_after):
    without = chinese.clean("步行很好。")
    g2pw.enable(*g2pw_folder)
    with_model = chinese.clean("步行很好。")
    assert without[0] == with_model[0] == "步行很好."
    assert without[1][:4] == ["b", "u4", "x", "ing2"]
    assert with_model[1][:4] == ["b", "u4", "h", "ang2"]
    assert with_model[1][6:8] == ["h", "ao4"]  # the monophonic table
    assert len(with_model[2]) == len(with_model[0]) and sum(with_model[2]) == len(with_model[1])
    g2pw.enable(None)
    assert chinese.clean("步行很好。") == without


def test_word_overrides_from_a_checkout_layout(tmp_path, dictionary_path_after):
    folder, tokenizer = _write_folder(tmp_path)
    overrides = tmp_path / "g2pw"  # GPT_SoVITS/text/g2pw beside GPT_SoVITS/text/G2PWModel
    overrides.mkdir()
    (overrides / "polyphonic.rep").write_text("步行: ['bu4', 'xing2']\n", encoding="utf-8")
    (overrides / "polyphonic-fix.rep").write_text("好: ['hao3']\n", encoding="utf-8")
    g2pw.enable(folder, tokenizer)
    _, phones, _ = chinese.clean("步行很好。")
    assert phones[:4] == ["b", "u4", "x", "ing2"]  # the word override beats the model
    assert phones[6:8] == ["h", "ao3"]  # a character override beats the monophonic table


@pytest.mark.parametrize("missing", ["g2pW.onnx", "POLYPHONIC_CHARS.txt", "config.py",
                                     "bopomofo_to_pinyin_wo_tune_dict.json"])
def test_a_folder_missing_a_file_is_a_clear_error(g2pw_folder, missing):
    folder, tokenizer = g2pw_folder
    (folder / missing).unlink()
    with pytest.raises(TextFrontendError, match=f"lacks {missing}"):
        g2pw.G2PW.load(folder, tokenizer)


def test_bad_folder_tokenizer_and_model_are_clear_errors(g2pw_folder, tmp_path):
    folder, tokenizer = g2pw_folder
    with pytest.raises(TextFrontendError, match="does not exist"):
        g2pw.G2PW.load(tmp_path / "nowhere", tokenizer)
    with pytest.raises(TextFrontendError, match="tokenizer"):
        g2pw.G2PW.load(folder, tmp_path / "no-bert")
    (folder / "g2pW.onnx").write_bytes(b"not a model")
    with pytest.raises(TextFrontendError, match="not a loadable ONNX model"):
        g2pw.G2PW.load(folder, tokenizer)


def test_config_is_read_as_data_not_run(g2pw_folder):
    folder, tokenizer = g2pw_folder
    marker = folder / "ran"
    (folder / "config.py").write_text(f"use_mask = False\nopen({str(marker)!r}, 'w').write('x')\n", encoding="utf-8")
    model = g2pw.G2PW.load(folder, tokenizer)
    assert not marker.exists() and model.use_mask is False


def test_synthesize_refuses_an_incomplete_folder_in_one_line(g2pw_folder, tmp_path):
    from typer.testing import CliRunner

    from voicefleet.cli import app

    folder, _ = g2pw_folder
    (folder / "MONOPHONIC_CHARS.txt").unlink()
    result = CliRunner().invoke(app, ["synthesize", "--pretrained", str(tmp_path / "pretrained"), "--ref-audio",
                                      str(tmp_path / "ref.wav"), "-o", str(tmp_path / "out.wav"), "--text", "你好",
                                      "--g2pw-model", str(folder)])
    assert result.exit_code == 2, result.output
    assert "lacks MONOPHONIC_CHARS.txt" in result.output and "Traceback" not in result.output


def test_prepare_settings_carry_the_folder_into_the_fingerprint_and_the_text_actors(g2pw_folder,
                                                                                   dictionary_path_after):
    import json as json_module

    from voicefleet.platform.data.config import PrepareConfig
    from voicefleet.platform.data.stages import TextStage

    folder, tokenizer = g2pw_folder
    with_model = PrepareConfig(g2pw_model=folder).output_settings()
    assert json_module.dumps(with_model) != json_module.dumps(PrepareConfig().output_settings())
    TextStage(str(tokenizer), load_bert=False, g2pw_model=str(folder))
    assert chinese.polyphone_model() is not None and chinese.polyphone_model().folder == folder
    TextStage(str(tokenizer), load_bert=False)
    assert chinese.polyphone_model() is None
