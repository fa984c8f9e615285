"""Where the Chinese front end's tables come from, plus the pinyin -> v2 symbol spelling rules.

No official GPT-SoVITS data file is shipped or copied. Each table is either derived here or read
from a pinned package:

* **Syllable -> (initial, final) symbols** (what the official reads from ``opencpop-strict.txt``):
  derived by the spelling rules in :func:`spell_syllable` and :func:`split_syllable`, applied to
  pypinyin's strict initials/finals. The tests check the result against every line of the official
  file when ``VOICEFLEET_TEXT_DATA`` (default ``../shared/gptsovits_text``) is available. One
  deliberate difference: seven rare syllables pypinyin can produce but the official file lacks
  (biang bong din fiao len nia wong, e.g. 覅 fiao4) make the official fail an assertion; here the
  same rules map them (覅 -> f iao4). Syllables with no v2 final (hm, ng, ...) fail in both.
* **Traditional -> simplified characters, neutral-tone word lists, erhua word lists**: read as data
  from ``misaki`` 0.9.4 (the Kokoro G2P package, which carries the PaddleSpeech tables that
  GPT-SoVITS copied as well). Its source files are parsed with :mod:`ast` and never imported or
  executed. The traditional table and both erhua lists equal the official ones entry for entry;
  the neutral-tone list differs by nine words, applied below as a documented delta.

Everything is loaded lazily and cached, so importing this module costs nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import logging
from functools import lru_cache
from pathlib import Path

from voicefleet.models.symbols import symbols_v2

logger = logging.getLogger(__name__)

# Consonant initials in pypinyin's strict style; two-letter ones first so the split is greedy.
INITIAL_CONSONANTS = ("zh", "ch", "sh", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h",
                      "j", "q", "x", "r", "z", "c", "s")
# Zero-initial syllables get a placeholder initial named after their first vowel.
_ZERO_INITIAL = {"a": "AA", "e": "EE", "o": "OO"}
# Finals that pypinyin writes in full but standard spelling abbreviates after a consonant.
_ABBREVIATED_FINALS = {"uei": "ui", "iou": "iu", "uen": "un"}
# Whole syllables for the zero-initial finals that take a "y"/"w" spelling (i -> yi, not y).
_ZERO_INITIAL_WHOLE = {"i": "yi", "in": "yin", "ing": "ying", "u": "wu"}
# Otherwise the leading vowel of a zero-initial final is respelled: i -> y, u -> w, v (ü) -> yu.
_ZERO_INITIAL_LEAD = {"i": "y", "u": "w", "v": "yu"}

# GPT-SoVITS's neutral-tone word list versus the PaddleSpeech-derived list misaki carries.
_NEUTRAL_TONE_ADDED = frozenset({"不在", "学生", "情形", "打点", "老太", "老头"})
_NEUTRAL_TONE_REMOVED = frozenset({"戏弄", "将军", "别人"})

_MISAKI_VERSION_HINT = "install misaki==0.9.4 (its Chinese data tables are read, not imported)"


@lru_cache(maxsize=1)
def _valid_finals() -> frozenset[str]:
    """Toneless Mandarin finals of the v2 symbol table ("a", "ir", "En", ...): those with tones 1-5.

    ARPAbet vowels carry stresses 0-2 only and Cantonese finals (tones 1-6) start with "Y".
    """
    table = set(symbols_v2())
    bases = {s[:-1] for s in table if s.endswith("5") and not s.startswith("Y")}
    return frozenset(b for b in bases if all(f"{b}{tone}" in table for tone in "12345"))


def spell_syllable(initial: str, final: str) -> str:
    """pypinyin strict (initial, toneless final) -> standard pinyin spelling, ü written "v".

    ``("", "iou") -> "you"``, ``("j", "v") -> "jv"``, ``("d", "uei") -> "dui"``.
    """
    if initial:
        return initial + _ABBREVIATED_FINALS.get(final, final)
    if final in _ZERO_INITIAL_WHOLE:
        return _ZERO_INITIAL_WHOLE[final]
    if final and final[0] in _ZERO_INITIAL_LEAD:
        return _ZERO_INITIAL_LEAD[final[0]] + final[1:]
    return final


@lru_cache(maxsize=None)
def split_syllable(syllable: str) -> tuple[str, str]:
    """A toneless pinyin syllable -> (initial symbol, final symbol) of the v2 table.

    The rules of the official ``opencpop-strict.txt``: ``y``/``w`` stay initials with the rest as
    the final (ü-finals written ``v``, ``yan`` -> ``En``, ``ye`` -> ``E``, ``wu`` -> ``u``);
    bare-vowel syllables get ``AA``/``EE``/``OO``; after ``j q x`` a written ``u`` is ü; the
    apical vowel is ``ir`` after ``zh ch sh r`` and ``i0`` after ``z c s``.

    Raises ValueError for a syllable with no v2 final (``m``, ``ng``, ``hm``, ``ê``).
    """
    if syllable.startswith("y"):
        initial, final = "y", syllable[1:]
        if final[:1] in ("u", "v"):
            final = "v" + final[1:]
        final = {"an": "En", "e": "E"}.get(final, final)
    elif syllable.startswith("w"):
        initial, final = "w", syllable[1:]
    elif syllable[:1] in _ZERO_INITIAL:
        initial, final = _ZERO_INITIAL[syllable[0]], syllable
    else:
        initial = next((c for c in INITIAL_CONSONANTS if syllable.startswith(c)), "")
        final = syllable[len(initial):]
        if initial in ("j", "q", "x") and final.startswith("u"):
            final = "v" + final[1:]
        elif final == "i" and initial in ("zh", "ch", "sh", "r"):
            final = "ir"
        elif final == "i" and initial in ("z", "c", "s"):
            final = "i0"
    if not initial or final not in _valid_finals():
        raise ValueError(f"pinyin syllable {syllable!r} has no initial/final in the v2 symbol table")
    return initial, final


def syllable_symbols(initial: str, final: str) -> tuple[str, str]:
    """pypinyin strict (initial, toneless final) -> (initial symbol, final symbol)."""
    return split_syllable(spell_syllable(initial, final))


# ---------------------------------------------------------------------------------------------
# Word and character tables read from the misaki package.


def _misaki_file(relative: str) -> Path:
    spec = importlib.util.find_spec("misaki")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the Chinese front end needs the misaki package: {_MISAKI_VERSION_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {_MISAKI_VERSION_HINT}")
    return path


@lru_cache(maxsize=None)
def _literal_assignments(relative: str) -> dict[str, object]:
    """Every ``name = <literal>`` / ``self.name = <literal>`` in a misaki source file, by name."""
    path = _misaki_file(relative)
    found: dict[str, object] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.Assign) or len(node.targets) != 1:
            continue
        target = node.targets[0]
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if name is None:
            continue
        try:
            found[name] = ast.literal_eval(node.value)
        except (ValueError, TypeError, SyntaxError):
            continue  # not a literal (a call, a comprehension): not data
    logger.debug("read %d literal tables from %s", len(found), path)
    return found


def _literal(relative: str, name: str, kind: type) -> object:
    value = _literal_assignments(relative).get(name)
    if not isinstance(value, kind):
        raise ValueError(f"misaki/{relative} has no {kind.__name__} named {name!r}: {_MISAKI_VERSION_HINT}")
    return value


@lru_cache(maxsize=1)
def traditional_to_simplified_table() -> dict[int, str]:
    """``str.translate`` table: traditional character -> simplified (10,703 characters)."""
    simplified = _literal("zh_normalization/char_convert.py", "simplified_charcters", str)
    traditional = _literal("zh_normalization/char_convert.py", "traditional_characters", str)
    if len(simplified) != len(traditional):
        raise ValueError("misaki's traditional/simplified strings differ in length")
    # Later pairs win for a character listed twice, as in the official dict built by a loop.
    return {ord(t): s for t, s in zip(traditional, simplified)}


@lru_cache(maxsize=1)
def neutral_tone_words() -> frozenset[str]:
    """Words whose last syllable is read in the neutral tone (GPT-SoVITS's list)."""
    words = _literal("tone_sandhi.py", "must_neural_tone_words", set)
    return frozenset((words - _NEUTRAL_TONE_REMOVED) | _NEUTRAL_TONE_ADDED)


@lru_cache(maxsize=1)
def never_neutral_tone_words() -> frozenset[str]:
    """Reduplicated or -子 words that keep their full tones (人人, 电子, ...)."""
    return frozenset(_literal("tone_sandhi.py", "must_not_neural_tone_words", set))


@lru_cache(maxsize=1)
def erhua_words() -> tuple[frozenset[str], frozenset[str]]:
    """(words always read with erhua, words whose 儿 is a full syllable)."""
    always = _literal("zh_frontend.py", "must_erhua", set)
    never = _literal("zh_frontend.py", "not_erhua", set)
    return frozenset(always), frozenset(never)
