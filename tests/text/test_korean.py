"""The ko front end reproduces the official GPT-SoVITS v2 ``clean_text(text, "ko", "v2")``.

Expectations come from every ``text_frontend_v2*.json`` in the compat folder (see
TEXT_JA_KO_YUE_README.md there): each record whose ``language`` is "ko", including the
intermediate ``g2pk2_output`` where a record has it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voicefleet.models.symbols import phoneme_ids, symbol_to_id
from voicefleet.text import korean
from voicefleet.text.errors import TextFrontendError


def _records(compat_dir: Path, language: str) -> list[dict]:
    records = [r for path in sorted(compat_dir.glob("text_frontend_v2*.json"))
               for r in json.loads(path.read_text(encoding="utf-8")) if r.get("language") == language]
    if not records:
        pytest.skip(f"no text_frontend_v2*.json record with language {language!r} in {compat_dir}")
    return records


def test_ko_records_match_official(compat_dir):
    records = _records(compat_dir, "ko")
    mismatched = {}
    for record in records:
        norm_text, phones, word2ph = korean.clean(record["text"])
        fields = [("norm_text", norm_text, record["norm_text"]), ("phones", phones, record["phones"]),
                  ("word2ph", word2ph, record["word2ph"]), ("phone_ids", phoneme_ids(phones), record["phone_ids"])]
        if "g2pk2_output" in record:
            fields.append(("g2pk2_output", korean.pronounce(korean.latin_to_hangul(norm_text)),
                           record["g2pk2_output"]))
        problems = [f"{name}: ours {ours!r}, official {official!r}" for name, ours, official in fields
                    if ours != official]
        if problems:
            mismatched[record["id"]] = problems
    assert not mismatched, f"{len(mismatched)}/{len(records)} ko records differ: {mismatched}"


def test_latin_letters_are_spelled_by_their_korean_names():
    assert korean.latin_to_hangul("OK") == "오케이"
    assert korean.latin_to_hangul("iPhone 7") == "아이피에이치오엔이 7"
    # Unicode case folding, as the official regexes: the Kelvin sign is a "k".
    assert korean.latin_to_hangul("\u212a") == "케이"


def test_divide_hangul_splits_syllables_and_diphthongs():
    assert korean.divide_hangul("과") == "ㄱㅗㅏ"
    assert korean.divide_hangul("의견") == "ㅇㅡㅣㄱㅣㅓㄴ"
    assert korean.divide_hangul("닭, 값") == "ㄷㅏㄺ, ㄱㅏㅄ"  # double finals are g2pk2's to resolve


def test_fix_g2pk2_error_reads_the_second_rieul_as_nieun():
    assert korean.fix_g2pk2_error("ㅇㅡㄹ ㄹㅣ") == "ㅇㅡㄹ ㄴㅣ"
    assert korean.fix_g2pk2_error("ㄹㅡㄹ ㄹㅏ") == "ㄹㅡㄹ ㄴㅏ"
    assert korean.fix_g2pk2_error("ㅇㅡㄹ ㄹ") == "ㅇㅡㄹ ㄴ"
    assert korean.fix_g2pk2_error("ㄱㅡㄹ ㄹㅣ") == "ㄱㅡㄹ ㄹㅣ"  # only after ㅇㅡㄹ / ㄹㅡㄹ
    assert korean.fix_g2pk2_error("ㄹㅡㄹ") == "ㄹㅡㄹ"


def test_post_replace_ph_maps_spaces_marks_and_unknowns():
    assert korean.post_replace_ph(" ") == "空"
    assert korean.post_replace_ph("。") == "."
    assert korean.post_replace_ph("？") == "?"
    assert korean.post_replace_ph("-") == "-"
    assert korean.post_replace_ph("ㅏ") == "ㅏ"
    assert korean.post_replace_ph('"') == "停"
    assert korean.post_replace_ph("ㅑ") == "停"  # a diphthong is split before this step


def test_text_ending_in_a_jamo_gets_a_full_stop():
    phones = korean.g2p("가")
    assert phones == ["ㄱ", "ㅏ", "."]
    assert korean.g2p("가!") == ["ㄱ", "ㅏ", "!"]


def test_every_phone_is_a_v2_symbol():
    _, phones, word2ph = korean.clean('그는 "OK"라고 말했다… 3개, 010-1234-5678')
    assert word2ph is None
    table = symbol_to_id()
    assert phones and all(p in table for p in phones)
    assert "UNK" not in phones and "停" in phones and "空" in phones


def test_missing_cmudict_is_a_clear_error_not_a_download(monkeypatch):
    import nltk

    def not_found(resource, *args, **kwargs):
        raise LookupError(resource)

    def no_download(*args, **kwargs):
        raise AssertionError("nltk.download must not be called")

    monkeypatch.setattr(nltk.data, "find", not_found)
    monkeypatch.setattr(nltk, "download", no_download)
    with pytest.raises(TextFrontendError, match="cmudict"):
        korean._build_g2pk2()


def test_missing_analyser_is_a_clear_error_not_a_pip_install(monkeypatch):
    pytest.importorskip("g2pk2", reason="g2pk2 is not installed")
    monkeypatch.setitem(sys.modules, "mecab", None)  # makes `import mecab` fail
    with pytest.raises(TextFrontendError, match="python-mecab-ko"):
        korean._build_g2pk2()


def test_import_does_not_load_g2pk2():
    code = ("import sys, voicefleet.text.korean; "
            "print(sorted(m for m in ('g2pk2', 'mecab', 'jamo', 'nltk') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
