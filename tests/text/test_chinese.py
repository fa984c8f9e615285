"""The zh front end reproduces the official GPT-SoVITS v2 ``clean_text(text, "zh", "v2")`` (g2pW off).

Expectations come from ../shared/compat/text_frontend_v2.json (see TEXT_README.md there): every
record of kind "zh", and the top-level clean_text fields of the "mixed" records, which went through
the same zh cleaner. Each agreement rate goes to pytest's warnings summary as an AgreementReport.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from voicefleet.models.symbols import phoneme_ids
from voicefleet.text import chinese, zh_normalize, zh_tables

REPO_ROOT = Path(__file__).resolve().parents[3]

# Records (keyed by input text) that may differ from the official output, each with the reason.
# Empty: every record matches. An entry that starts matching fails the test, so the list stays true.
KNOWN_DIFFERENCES: dict[str, str] = {}


class AgreementReport(UserWarning):
    """Carries an agreement rate into pytest's warnings summary (shown without -s or -rA)."""


def _records(compat_dir: Path, kind: str) -> list[dict]:
    path = compat_dir / "text_frontend_v2.json"
    if not path.is_file():
        pytest.skip(f"{path} not found: the text front-end fixtures are not in this compat folder")
    records = [r for r in json.loads(path.read_text(encoding="utf-8")) if r["kind"] == kind]
    if not records:
        pytest.skip(f"{path} has no records of kind {kind!r}")
    return records


def _compare(records: list[dict], label: str) -> None:
    mismatched: dict[str, str] = {}
    for record in records:
        text = record["text"]
        assert record["language"] == "zh", f"{record['id']}: expected a zh cleaner record"
        norm_text, phones, word2ph = chinese.clean(text)
        problems = [
            name for name, ours, official in (
                ("norm_text", norm_text, record["norm_text"]),
                ("phones", phones, record["phones"]),
                ("word2ph", word2ph, record["word2ph"]),
                ("phone_ids", phoneme_ids(phones), record["phone_ids"]),
            ) if ours != official
        ]
        if problems:
            mismatched[text] = f"{record['id']}: {', '.join(problems)} differ"
    matched = len(records) - len(mismatched)
    rate = f"{label}: {matched}/{len(records)} records agree with the official ({100 * matched / len(records):.1f}%)"
    warnings.warn(rate, AgreementReport, stacklevel=2)
    unexplained = {t: why for t, why in mismatched.items() if t not in KNOWN_DIFFERENCES}
    stale = [t for t in KNOWN_DIFFERENCES if t in {r["text"] for r in records} and t not in mismatched]
    assert not unexplained, f"{matched}/{len(records)} agree; unexplained mismatches: {unexplained}"
    assert not stale, f"KNOWN_DIFFERENCES entries that now match (remove them): {stale}"


def test_zh_records_match_official(compat_dir):
    _compare(_records(compat_dir, "zh"), "zh records, clean_text")


def test_mixed_records_clean_text_match_official(compat_dir):
    """Latin letters are deleted by the zh cleaner, after the unit table turned "s"/"m" into 秒/米."""
    _compare(_records(compat_dir, "mixed"), "mixed records, zh clean_text")


def test_zh_records_match_with_pure_python_jieba(compat_dir, monkeypatch):
    """Without jieba_fast the pure-Python jieba must give the same output on every fixture."""
    pytest.importorskip("jieba", reason="the pure-Python jieba package is not installed")
    monkeypatch.setitem(sys.modules, "jieba_fast", None)  # makes `import jieba_fast` fail
    monkeypatch.setitem(sys.modules, "jieba_fast.posseg", None)
    chinese._jieba.cache_clear()
    try:
        _compare(_records(compat_dir, "zh") + _records(compat_dir, "mixed"), "zh + mixed, pure-Python jieba")
    finally:
        chinese._jieba.cache_clear()


def test_derived_pinyin_table_equals_opencpop_strict():
    folder = Path(os.environ.get("VOICEFLEET_TEXT_DATA", REPO_ROOT.parent / "shared" / "gptsovits_text"))
    path = folder / "opencpop-strict.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found (set VOICEFLEET_TEXT_DATA to a GPT-SoVITS text data folder)")
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line]
    assert rows, f"{path} is empty"
    wrong = {syllable: (symbols, zh_tables.split_syllable(syllable)) for syllable, symbols in rows
             if zh_tables.split_syllable(syllable) != tuple(symbols.split(" "))}
    assert not wrong, f"{len(wrong)} of {len(rows)} syllables differ (official, derived): {wrong}"


@pytest.mark.parametrize("syllable", ["m", "ng", "hm", "ê"])
def test_syllables_without_a_v2_final_are_rejected(syllable):
    with pytest.raises(ValueError, match="no initial/final"):
        zh_tables.split_syllable(syllable)


def test_empty_and_punctuation_only_text():
    assert chinese.clean("") == ("", [], [])
    assert chinese.clean("   ") == ("", [], [])
    # Marks map to v2 punctuation and a run keeps its first mark; no character, no syllable.
    assert chinese.clean("！？。……") == ("!", ["!"], [1])
    assert chinese.g2p("") == ([], [])


def test_long_numbers():
    # With a measure word a number is read as a quantity; a bare run of digits is read digit by
    # digit with 1 as 幺 (an official quirk).
    assert chinese.normalize("共123456789个") == "共一亿二千三百四十五万六千七百八十九个"
    assert chinese.normalize("编号123456789") == "编号幺二三四五六七八九"
    norm_text, phones, word2ph = chinese.clean("共123456789个。")
    assert len(word2ph) == len(norm_text) and sum(word2ph) == len(phones)


def test_caret_takes_the_sp3_pause_route():
    norm_text, phones, word2ph = chinese.clean("你好^世界")
    assert norm_text == "你好,世界"
    assert "SP3" in phones and "," not in phones
    assert word2ph == [2, 2, 1, 2, 2]


def test_cardinal_skipped_places_read_zero():
    assert zh_normalize.verbalize_cardinal("100010") == "十万零一十"
    assert zh_normalize.verbalize_cardinal("0") == "零"
    assert zh_normalize.verbalize_number("3.20") == "三点二零"
    assert zh_normalize.verbalize_number(".5") == "零点五"


def test_import_does_not_load_dictionaries():
    """jieba, pypinyin and the misaki tables load on first use, not at import."""
    code = ("import sys, voicefleet.text.chinese; "
            "print(sorted(m for m in ('jieba', 'jieba_fast', 'pypinyin', 'misaki') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
