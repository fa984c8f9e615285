"""The yue front end reproduces the official GPT-SoVITS v2 ``clean_text(text, "yue", "v2")``.

Expectations come from every ``text_frontend_v2*.json`` in the compat folder (see
TEXT_JA_KO_YUE_README.md there): each record whose ``language`` is "yue", including the
intermediate ``jyutping`` where a record has it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voicefleet.models.symbols import phoneme_ids, symbol_to_id
from voicefleet.text import cantonese
from voicefleet.text.errors import TextFrontendError


def _records(compat_dir: Path, language: str) -> list[dict]:
    records = [r for path in sorted(compat_dir.glob("text_frontend_v2*.json"))
               for r in json.loads(path.read_text(encoding="utf-8")) if r.get("language") == language]
    if not records:
        pytest.skip(f"no text_frontend_v2*.json record with language {language!r} in {compat_dir}")
    return records


def test_yue_records_match_official(compat_dir):
    records = _records(compat_dir, "yue")
    mismatched = {}
    for record in records:
        norm_text, phones, word2ph = cantonese.clean(record["text"])
        fields = [("norm_text", norm_text, record["norm_text"]), ("phones", phones, record["phones"]),
                  ("word2ph", word2ph, record["word2ph"]), ("phone_ids", phoneme_ids(phones), record["phone_ids"])]
        if "jyutping" in record:
            fields.append(("jyutping", cantonese.jyutping(norm_text), record["jyutping"]))
        problems = [f"{name}: ours {ours!r}, official {official!r}" for name, ours, official in fields
                    if ours != official]
        if problems:
            mismatched[record["id"]] = problems
    assert not mismatched, f"{len(mismatched)}/{len(records)} yue records differ: {mismatched}"


@pytest.mark.parametrize(("syllable", "phones"), [
    ("hoeng1", ["Yh", "Yoeng1"]),
    ("gwong2", ["Ygw", "Yong2"]),
    ("aa3", ["Yaa", "Ya3"]),  # a rhyme listed among the initials; the empty final repeats its last letter
    ("on1", ["Yon", "Yn1"]),
    ("ngaam1", ["Yng", "Yaam1"]),  # the official "nga" branch cuts after "ng" as well
    ("m4", ["Ym", "Ym4"]),  # syllabic m
    ("ng6", ["Yng", "Yg6"]),  # syllabic ng
])
def test_official_jyutping_split(syllable, phones):
    assert cantonese.syllables_to_phones([syllable]) == (phones, [2])


def test_marks_stay_bare_and_count_one():
    assert cantonese.syllables_to_phones([",", "nei5", "?", "…", "-"]) == (
        [",", "Yn", "Yei5", "?", "…", "-"], [1, 2, 1, 1, 1])


def test_a_two_syllable_reading_is_one_syllable_and_becomes_unk():
    """ToJyutping reads a few rare characters as two syllables; the official splits them as one."""
    phones, word2ph = cantonese.syllables_to_phones(["cin1 ngaa5"])
    assert phones == ["Yc", "Yin1 ngaa5"] and word2ph == [2]
    assert "Yin1 ngaa5" not in symbol_to_id()  # clean() turns it into UNK


def test_normalize_keeps_cantonese_spellings_and_repeated_marks():
    # The Chinese path spells 嗯 as 恩 and collapses "!!" to "!"; the Cantonese one does neither.
    assert cantonese.normalize("嗯！！") == "嗯!!"
    # Quotes and brackets become an apostrophe, which is then deleted with Latin letters and
    # CJK Extension A; traditional characters are simplified first.
    assert cantonese.normalize("佢話：「唔好走」(OK)㗎") == "佢话,唔好走"
    assert cantonese.normalize("3:30，95%") == "三点半,百分之九十五"


def test_clean_gives_one_word2ph_entry_per_character():
    norm_text, phones, word2ph = cantonese.clean("我哋今日去咗旺角行街，買咗3件衫。")
    assert len(word2ph) == len(norm_text) and sum(word2ph) == len(phones)
    assert set(word2ph) == {1, 2}
    table = symbol_to_id()
    assert all(p in table for p in phones)


def test_punctuation_only_and_deleted_text():
    assert cantonese.clean("！？") == ("!?", ["!", "?"], [1, 1])
    assert cantonese.clean("OK") == ("", [], [])


def test_character_without_a_reading_is_a_clear_error():
    # A CJK radical form in the kept range that ToJyutping has no reading for.
    with pytest.raises(TextFrontendError, match="no Cantonese reading"):
        cantonese.jyutping("犭")


def test_import_does_not_load_tojyutping():
    code = "import sys, voicefleet.text.cantonese; print('ToJyutping' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
