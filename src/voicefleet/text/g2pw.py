"""g2pW: the official default reading of Chinese polyphonic characters, from the user's model folder.

    model = G2PW.load("GPT_SoVITS/text/G2PWModel", tokenizer="pretrained_models/chinese-roberta-wwm-ext-large")
    model(["银行在哪里."])                      # [["yin2", "hang2", "zai4", "na3", "li3", "."]]
    enable(folder, tokenizer)                 # the Chinese front end uses it from now on

GPT-SoVITS v2 reads a polyphonic character (行, 长, 了 ...) with the g2pW ONNX model, a BERT
classifier over the character's context, and every other character from g2pW's own tables; the
model cannot be shipped with voicefleet, so without it the Chinese front end keeps its dictionary
path (pypinyin, as the official with g2pW switched off). Given the official ``G2PWModel`` folder
this module reproduces the official ``text/g2pw`` code:

* sentences are converted to Traditional (Taiwan) characters with OpenCC ``s2tw`` (the model was
  trained on Taiwanese text); a character in the model's polyphonic list (``POLYPHONIC_CHARS.txt``
  minus the official exceptions) is predicted, one in ``MONOPHONIC_CHARS.txt`` takes its single
  reading, anything else takes pypinyin's (tone 5 for the neutral tone) on the simplified text;
* each polyphonic character is one model row: the sentence cut to 16 characters either side of
  the first and last polyphonic characters, lower-cased, tokenized by the BERT tokenizer (the
  pretrained ``chinese-roberta-wwm-ext-large`` folder, as ``bert_path`` officially) with
  [CLS]/[SEP], its token position, its character id and its mask of allowed readings; the class
  with the highest probability is the reading (bopomofo, turned into pinyin by
  ``bopomofo_to_pinyin_wo_tune_dict.json``);
* the Chinese front end then applies the official word overrides (``polyphonic.rep`` and
  ``polyphonic-fix.rep``, read from ``<folder>/`` or, as laid out in a GPT-SoVITS checkout,
  ``<folder>/../g2pw/``; without them, a warning and no overrides), then its usual tone sandhi.

The official runs several rows of one sentence with a single copy of the token ids (an
optimisation whose rows give the same probabilities); here each row carries its own copy.
``config.py`` is read as data (literal assignments only), never executed.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import Field

from voicefleet.text.errors import TextFrontendError

logger = logging.getLogger(__name__)

# The one definition of the setting that `synthesize`, `prepare` and `serve` expose.
G2PWModelField = Annotated[Optional[Path], Field(
    description="Official G2PWModel folder (g2pW.onnx and its tables): read Chinese polyphonic characters "
                "with g2pW as the official default does (needs onnxruntime and opencc). Default: dictionary "
                "readings (the official with g2pW switched off).")]

MODEL_FILES = ("g2pW.onnx", "g2pw.onnx")  # either name, checked in this order
TABLE_FILES = ("config.py", "POLYPHONIC_CHARS.txt", "MONOPHONIC_CHARS.txt", "bopomofo_to_pinyin_wo_tune_dict.json",
               "char_bopomofo_dict.json")  # the last only has to exist: it changes no reading
OVERRIDE_FILES = ("polyphonic.rep", "polyphonic-fix.rep")
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask", "phoneme_mask", "char_ids", "position_ids")

# Official exceptions: characters the model knows but that are read from the tables instead.
NON_POLYPHONIC = frozenset("一不和咋嗲剖差攢倒難奔勁拗肖瘙誒泊听噢")
NON_MONOPHONIC = frozenset("似攢")
CONTEXT_CHARS = 16  # characters kept either side of the polyphonic ones (official default)
MAX_TOKENS = 512  # BERT's limit, [CLS] and [SEP] included
_CONFIG_DEFAULTS = {"use_mask": True, "use_char_phoneme": False}


def _config(path: Path) -> dict[str, Any]:
    """Top-level ``NAME = literal`` assignments of the folder's config.py, over the official defaults."""
    values = dict(_CONFIG_DEFAULTS)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise TextFrontendError(f"g2pW config {path} is not readable Python: {exc}") from exc
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                continue  # not a literal: not a setting this module reads
    return values


def _pairs(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").strip().split("\n")
    pairs = [line.split("\t") for line in lines]
    bad = [line for line, pair in zip(lines, pairs) if len(pair) != 2]
    if bad:
        raise TextFrontendError(f"{path}: expected 'character<TAB>reading' lines, got {bad[0]!r}")
    return pairs


def _overrides(folder: Path) -> dict[str, list[str]]:
    """The official word -> readings overrides, fix file last; empty (with a warning) when absent."""
    for where in (folder, folder.parent / "g2pw"):
        if all((where / name).is_file() for name in OVERRIDE_FILES):
            table: dict[str, list[str]] = {}
            for name in OVERRIDE_FILES:
                for number, line in enumerate((where / name).read_text(encoding="utf-8").splitlines(), 1):
                    if not line.strip():
                        continue
                    key, _, value = line.partition(":")
                    try:
                        table[key.strip()] = list(ast.literal_eval(value.strip()))
                    except (ValueError, SyntaxError) as exc:
                        raise TextFrontendError(f"{where / name}:{number}: not 'word: [readings]'") from exc
            return table
    logger.warning("g2pW: %s not found in %s or %s; polyphonic word overrides are not applied",
                   " / ".join(OVERRIDE_FILES), folder, folder.parent / "g2pw")
    return {}


def check_folder(folder: str | Path) -> Path:
    """The folder's g2pW model file, after checking that every official file is there (cheap).

    Raises `TextFrontendError` naming the missing folder or files.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise TextFrontendError(f"g2pW model folder {folder} does not exist (expected the official G2PWModel)")
    model_file = next((folder / n for n in MODEL_FILES if (folder / n).is_file()), None)
    missing = [n for n in TABLE_FILES if not (folder / n).is_file()] + ([MODEL_FILES[0]] if model_file is None else [])
    if missing:
        raise TextFrontendError(f"g2pW model folder {folder} lacks {', '.join(missing)} "
                                "(expected the official G2PWModel folder)")
    return model_file


class G2PW:
    """A loaded g2pW folder: ``model(sentences)`` -> per character pinyin (tone digit) or None."""

    def __init__(self, folder: Path, session, tokenizer, converter, config: dict[str, Any],
                 polyphonic: list[list[str]], monophonic: list[list[str]], bopomofo_to_pinyin: dict[str, str],
                 overrides: dict[str, list[str]]) -> None:
        self.folder = folder
        self._session = session
        self._tokenizer = tokenizer
        self._converter = converter
        self._lock = threading.Lock()
        self.use_mask = bool(config["use_mask"])
        self.use_char_phoneme = bool(config["use_char_phoneme"])
        if self.use_char_phoneme:
            entries = [f"{char} {reading}" for char, reading in polyphonic]
        else:
            entries = [reading for _, reading in polyphonic]
        self.labels = sorted(set(entries))
        index = {label: i for i, label in enumerate(self.labels)}
        self.char_labels: dict[str, list[int]] = {}
        for (char, _), entry in zip(polyphonic, entries):
            self.char_labels.setdefault(char, []).append(index[entry])
        self.chars = sorted(self.char_labels)
        self.char_ids = {char: i for i, char in enumerate(self.chars)}
        self.polyphonic = set(self.chars) - NON_POLYPHONIC
        self.monophonic = {char: reading for char, reading in monophonic if char not in NON_MONOPHONIC}
        self.bopomofo_to_pinyin = bopomofo_to_pinyin
        self.overrides = overrides

    @classmethod
    def load(cls, folder: str | Path, tokenizer: str | Path) -> "G2PW":
        """Load the official ``G2PWModel`` folder and the BERT folder whose tokenizer it uses.

        Raises `TextFrontendError` naming what is missing: the folder, a file in it, the tokenizer
        or the onnxruntime / opencc packages. Nothing is downloaded.
        """
        folder = Path(folder).expanduser()
        model_file = check_folder(folder)
        try:
            import onnxruntime
            import opencc
        except ImportError as exc:
            raise TextFrontendError(f"g2pW needs onnxruntime and opencc ({exc}): pip install onnxruntime opencc") from exc
        try:
            from transformers import AutoTokenizer

            bert_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise TextFrontendError(f"g2pW: no BERT tokenizer in {tokenizer}: {exc}") from exc
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = 2
        options.log_severity_level = 3
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        try:
            session = onnxruntime.InferenceSession(str(model_file), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise TextFrontendError(f"g2pW: {model_file} is not a loadable ONNX model: {exc}") from exc
        names = {i.name for i in session.get_inputs()}
        if names != set(INPUT_NAMES):
            raise TextFrontendError(f"g2pW: {model_file} has inputs {sorted(names)}, expected {list(INPUT_NAMES)}")
        bopomofo = json.loads((folder / "bopomofo_to_pinyin_wo_tune_dict.json").read_text(encoding="utf-8"))
        model = cls(folder, session, bert_tokenizer, opencc.OpenCC("s2tw"), _config(folder / "config.py"),
                    _pairs(folder / "POLYPHONIC_CHARS.txt"), _pairs(folder / "MONOPHONIC_CHARS.txt"), bopomofo,
                    _overrides(folder))
        logger.info("g2pW loaded from %s (%d polyphonic characters, %d readings)", folder, len(model.polyphonic),
                    len(model.labels))
        return model

    # -----------------------------------------------------------------------------------------

    def _pinyin(self, bopomofo: str) -> str:
        syllable = self.bopomofo_to_pinyin.get(bopomofo[:-1])
        if bopomofo[-1:] not in "12345" or not syllable:
            raise TextFrontendError(f"g2pW reading {bopomofo!r} has no pinyin in bopomofo_to_pinyin_wo_tune_dict.json")
        return syllable + bopomofo[-1]

    def __call__(self, sentences: Sequence[str]) -> list[list[str | None]]:
        """Sentences -> one pinyin per character ("hang2", "de5"; marks as themselves)."""
        from pypinyin import Style, pinyin

        from voicefleet.text.zh_tables import traditional_to_simplified_table

        results: list[list[str | None]] = []
        rows: list[tuple[str, int, int, int]] = []  # (context, query index in it, sentence, index)
        for number, sentence in enumerate(sentences):
            traditional = self._converter.convert(sentence)
            if len(traditional) != len(sentence):
                raise TextFrontendError(f"g2pW: OpenCC changed the length of {sentence!r}")
            simplified = traditional.translate(traditional_to_simplified_table())
            dictionary = pinyin(simplified, neutral_tone_with_five=True, style=Style.TONE3)
            readings: list[str | None] = [None] * len(traditional)
            queries = []
            for i, char in enumerate(traditional):
                if char in self.polyphonic:
                    queries.append(i)
                elif char in self.monophonic:
                    readings[i] = self._pinyin(self.monophonic[char])
                else:
                    readings[i] = dictionary[i][0]
            if queries:
                left = max(0, queries[0] - CONTEXT_CHARS)
                right = min(len(traditional), queries[-1] + CONTEXT_CHARS + 1)
                rows += [(traditional[left:right], i - left, number, i) for i in queries]
            results.append(readings)
        if rows:
            for (_, _, number, i), label in zip(rows, self._predict([(text, q) for text, q, _, _ in rows])):
                results[number][i] = self._pinyin(label.split(" ")[1] if self.use_char_phoneme else label)
        return results

    def _predict(self, rows: list[tuple[str, int]]) -> list[str]:
        """(context, query index) rows -> the most probable label of each."""
        import numpy as np

        inputs = model_inputs(self._tokenizer, rows, self.char_ids, self.char_labels, len(self.labels),
                              use_mask=self.use_mask, max_tokens=MAX_TOKENS)
        with self._lock:
            probs = self._session.run(None, dict(zip(INPUT_NAMES, inputs)))[0]
        return [self.labels[i] for i in np.argmax(probs, axis=1).tolist()]

    def correct(self, word: str, readings: list[str]) -> list[str]:
        """The official ``correct_pronunciation``: a whole-word override, else per-character ones."""
        if word in self.overrides:
            return list(self.overrides[word])
        readings = list(readings)
        for i, char in enumerate(word):
            if char in self.overrides:
                readings[i] = self.overrides[char][0]
        return readings


_lock = threading.Lock()


def enable(folder: str | Path | None, tokenizer: str | Path | None = None) -> G2PW | None:
    """Make the Chinese front end of this process read polyphonic characters with g2pW.

    ``folder`` None switches back to the dictionary path. ``tokenizer`` is the BERT folder (the
    pretrained ``chinese-roberta-wwm-ext-large``). The same folder twice loads once.
    """
    from voicefleet.text import chinese

    with _lock:
        current = chinese.polyphone_model()
        if folder is None:
            chinese.set_polyphone_model(None)
            return None
        folder = Path(folder).expanduser()
        if current is not None and current.folder == folder:
            return current
        if tokenizer is None:
            raise TextFrontendError("g2pW needs the BERT folder whose tokenizer it uses (chinese-roberta-wwm-ext-large)")
        model = G2PW.load(folder, tokenizer)
        chinese.set_polyphone_model(model)
        return model



# ---------------------------------------------------------------------------------------------
# Model input (the official dataset.prepare_onnx_input and utils.tokenize_and_map).

_SPACES = re.compile(r"^ +")
_LATIN_WORD = re.compile(r"^[a-zA-Z0-9]+")


def _words(text: str) -> tuple[list[str], list[int | None], list[tuple[int, int]]]:
    """Runs of [a-zA-Z0-9] are one word, spaces none, anything else one character each."""
    words: list[str] = []
    char_to_word: list[int | None] = []
    word_spans: list[tuple[int, int]] = []
    while text:
        spaces = _SPACES.match(text)
        if spaces:
            char_to_word += [None] * len(spaces[0])
            text = text[len(spaces[0]):]
            continue
        latin = _LATIN_WORD.match(text)
        word = latin[0] if latin else text[0]
        word_spans.append((len(char_to_word), len(char_to_word) + len(word)))
        char_to_word += [len(words)] * len(word)
        words.append(word)
        text = text[len(word):]
    return words, char_to_word, word_spans


def tokenize_and_map(tokenizer, text: str) -> tuple[list[str], list[int | None], list[tuple[int, int]]]:
    """(tokens, token index of each character, character span of each token)."""
    words, char_to_token, word_spans = _words(text)
    tokens: list[str] = []
    token_spans: list[tuple[int, int]] = []
    for word, (start, end) in zip(words, word_spans):
        pieces = tokenizer.tokenize(word)
        if not pieces or pieces == ["[UNK]"]:
            token_spans.append((start, end))
            tokens.append("[UNK]")
            continue
        for piece in pieces:
            length = len(piece[2:] if piece.startswith("##") else piece)
            token_spans.append((start, start + length))
            start += length
            tokens.append(piece)
    for i, (start, end) in enumerate(token_spans):
        for position in range(start, end):
            char_to_token[position] = i
    return tokens, char_to_token, token_spans


def _truncate(text: str, query: int, tokens: list[str], char_to_token: list[int | None],
              token_spans: list[tuple[int, int]], max_tokens: int):
    """Cut a long row to ``max_tokens - 2`` tokens centred on the query (the official _truncate)."""
    keep = max_tokens - 2
    start_token = char_to_token[query] - keep // 2
    end_token = start_token + keep
    if start_token < 0:
        start_token, end_token = 0, keep
    elif end_token > len(tokens):
        start_token, end_token = start_token - (end_token - len(tokens)), len(tokens)
    start, end = token_spans[start_token][0], token_spans[end_token - 1][1]
    shifted = [i - start_token if i is not None else None for i in char_to_token[start:end]]
    return text[start:end], query - start, tokens[start_token:end_token], shifted


def model_inputs(tokenizer, rows: list[tuple[str, int]], char_ids: dict[str, int], char_labels: dict[str, list[int]],
                 num_labels: int, *, use_mask: bool, max_tokens: int = MAX_TOKENS) -> list:
    """(context, query index) rows -> the six model inputs in `INPUT_NAMES` order, right-padded with 0."""
    import numpy as np

    ids, positions, masks, chars = [], [], [], []
    tokenized: dict[str, tuple] = {}
    for text, query in rows:
        text = text.lower()
        if text not in tokenized:
            try:
                tokenized[text] = tokenize_and_map(tokenizer, text)
            except Exception as exc:  # noqa: BLE001 - the official gives up on the sentence too
                raise TextFrontendError(f"g2pW could not tokenize {text!r}: {exc}") from exc
        tokens, char_to_token, token_spans = tokenized[text]
        if len(tokens) > max_tokens - 2:
            text, query, tokens, char_to_token = _truncate(text, query, tokens, char_to_token, token_spans,
                                                           max_tokens)
        ids.append(tokenizer.convert_tokens_to_ids(["[CLS]", *tokens, "[SEP]"]))
        positions.append(char_to_token[query] + 1)  # after [CLS]
        char = text[query]
        chars.append(char_ids[char])
        allowed = char_labels[char] if use_mask else range(num_labels)
        mask = np.zeros(num_labels, dtype=np.float32)
        mask[list(allowed)] = 1.0
        masks.append(mask)
    width = max(len(row) for row in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    attention = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        input_ids[i, :len(row)] = row
        attention[i, :len(row)] = 1
    return [input_ids, np.zeros_like(input_ids), attention, np.stack(masks),
            np.array(chars, dtype=np.int64), np.array(positions, dtype=np.int64)]
