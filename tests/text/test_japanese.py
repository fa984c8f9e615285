"""The ja front end reproduces the official GPT-SoVITS v2 ``clean_text(text, "ja", "v2")``.

Expectations come from every ``text_frontend_v2*.json`` in the compat folder (see
TEXT_JA_KO_YUE_README.md there): each record whose ``language`` is "ja", and its
``openjtalk_chunks`` (the pieces sent to Open JTalk and their katakana readings) where present.

One rule, no lists: the official user dictionary changes the phones of Latin words. With the
dictionary found in ``$VOICEFLEET_TEXT_DATA`` (the test set-up points it at
``../shared/gptsovits_text``) the record's ``phones`` are expected; without it, the record's
``phones_without_ja_userdict`` where the record has them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from voicefleet.models.symbols import phoneme_ids, symbol_to_id
from voicefleet.text import japanese
from voicefleet.text.errors import TextFrontendError


def _records(compat_dir: Path, language: str) -> list[dict]:
    records = [r for path in sorted(compat_dir.glob("text_frontend_v2*.json"))
               for r in json.loads(path.read_text(encoding="utf-8")) if r.get("language") == language]
    if not records:
        pytest.skip(f"no text_frontend_v2*.json record with language {language!r} in {compat_dir}")
    return records


def _expected(record: dict, field: str) -> list:
    if japanese.find_user_dictionary() is None and f"{field}_without_ja_userdict" in record:
        return record[f"{field}_without_ja_userdict"]
    return record[field]


def test_ja_records_match_official(compat_dir):
    records = _records(compat_dir, "ja")
    mismatched = {}
    for record in records:
        norm_text, phones, word2ph = japanese.clean(record["text"])
        fields = [("norm_text", norm_text, record["norm_text"]), ("phones", phones, _expected(record, "phones")),
                  ("word2ph", word2ph, record["word2ph"]),
                  ("phone_ids", phoneme_ids(phones), _expected(record, "phone_ids"))]
        problems = [f"{name}: ours {ours!r}, official {official!r}" for name, ours, official in fields
                    if ours != official]
        if problems:
            mismatched[record["id"]] = problems
    assert not mismatched, f"{len(mismatched)}/{len(records)} ja records differ: {mismatched}"


def test_openjtalk_pieces_and_readings_match_official(compat_dir):
    records = [r for r in _records(compat_dir, "ja") if "openjtalk_chunks" in r]
    if not records:
        pytest.skip("no ja record has openjtalk_chunks")
    mismatched = {}
    for record in records:
        text = japanese.normalize(record["text"]).replace("％", "パーセント").lower()
        got = [{"text": chunk, "kana": japanese.reading(chunk)} for chunk, _ in japanese.pieces(text) if chunk]
        if got != record["openjtalk_chunks"]:
            mismatched[record["id"]] = f"ours {got}, official {record['openjtalk_chunks']}"
    assert not mismatched, f"{len(mismatched)}/{len(records)} ja records differ: {mismatched}"


def test_user_dictionary_is_found_in_the_text_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv(japanese.TEXT_DATA_ENV, raising=False)
    assert japanese.find_user_dictionary() is None
    monkeypatch.setenv(japanese.TEXT_DATA_ENV, str(tmp_path))
    assert japanese.find_user_dictionary() is None
    flat = tmp_path / "ja_userdict.csv"
    flat.write_text("x\n", encoding="utf-8")
    assert japanese.find_user_dictionary() == flat
    checkout = tmp_path / "ja_userdic" / "userdict.csv"  # a GPT-SoVITS checkout's GPT_SoVITS/text
    checkout.parent.mkdir()
    checkout.write_text("x\n", encoding="utf-8")
    assert japanese.find_user_dictionary() == checkout


def test_user_dictionary_compiles_once_and_changes_the_reading(monkeypatch, tmp_path):
    pyopenjtalk = pytest.importorskip("pyopenjtalk", reason="pyopenjtalk is not installed")
    japanese._OPENJTALK()  # a dictionary is found (or this fails with the install message)
    monkeypatch.setenv("VOICEFLEET_CACHE_DIR", str(tmp_path / "cache"))
    # One naist-jdic style entry: a made-up word read ボイスフリート.
    csv_path = tmp_path / "userdict.csv"
    csv_path.write_text("ｖｆｌｔ,1348,1348,100,名詞,固有名詞,一般,*,*,*,ブイエフ,ボイスフリート,ボイスフリート,0/7,*\n",
                        encoding="utf-8")
    first = japanese.compile_user_dictionary(pyopenjtalk, csv_path)
    assert first.is_file() and first.parent == tmp_path / "cache" / "ja_userdict"
    stamp = first.stat().st_mtime_ns
    assert japanese.compile_user_dictionary(pyopenjtalk, csv_path) == first
    assert first.stat().st_mtime_ns == stamp  # cached by the CSV's content
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no staged file left


def test_missing_dictionary_is_a_clear_error_not_a_download(monkeypatch, tmp_path):
    pyopenjtalk = pytest.importorskip("pyopenjtalk", reason="pyopenjtalk is not installed")

    def no_download():
        raise AssertionError("pyopenjtalk must not download its dictionary")

    monkeypatch.setattr(pyopenjtalk, "_extract_dic", no_download)
    monkeypatch.setenv(japanese.DICT_ENV, str(tmp_path))
    with pytest.raises(TextFrontendError, match="no Open JTalk dictionary.*open-jtalk-mecab-naist-jdic"):
        japanese._OpenJTalk._load()
    monkeypatch.delenv(japanese.DICT_ENV)
    monkeypatch.setattr(japanese, "DEBIAN_DICT_DIR", str(tmp_path / "none"))
    monkeypatch.setattr(pyopenjtalk, "OPEN_JTALK_DICT_DIR", str(tmp_path / "none").encode())
    with pytest.raises(TextFrontendError, match="apt-get install open-jtalk-mecab-naist-jdic"):
        japanese._OpenJTalk._load()


def test_missing_pyopenjtalk_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyopenjtalk", None)  # makes `import pyopenjtalk` fail
    monkeypatch.delenv(japanese.DICT_ENV, raising=False)
    with pytest.raises(TextFrontendError, match="pip install pyopenjtalk"):
        japanese._OpenJTalk._load()


def test_normalize_collapses_only_ascii_punctuation_runs():
    assert japanese.normalize("え……？！！") == "え…？！！"
    assert japanese.normalize("はい!!?..--") == "はい!"  # a mixed run keeps its first mark
    assert japanese.normalize("はい、はい. -") == "はい、はい. -"


def test_marks_cut_the_text_and_numbers_split_at_their_comma():
    assert japanese.pieces("1,980円です。") == [("1", ","), ("980円です", "。"), ("", "")]
    assert japanese.pieces("ｉｐｈｏｎｅ１２") == [("ｉｐｈｏｎｅ１２", "")]
    assert [c for c, _ in japanese.pieces("「東京」 タワー")] == ["", "東京", "", "タワー"]


def test_prosody_marks_follow_the_accent_fields():
    """Two accent phrases: a rise after the first mora, a fall, then a phrase border."""
    def label(p, a1, a2, a3, f1="3"):
        return f"xx^xx-{p}+xx=xx/A:{a1}+{a2}+{a3}/B:xx/E:xx_xx!0_xx/F:{f1}_1#0_xx"

    labels = ["xx^xx-sil+xx=xx/A:xx+xx+xx/E:xx_xx!0_xx/F:xx_xx",
              label("a", "-1", "1", "3"), label("k", "0", "2", "2"), label("a", "0", "2", "2"),
              label("I", "1", "3", "1"), label("o", "0", "1", "1", "1"),
              "xx^xx-sil+xx=xx/A:xx+xx+xx/E:xx_xx!0_xx/F:xx_xx"]
    assert japanese.prosody_phones(labels) == ["^", "a", "[", "k", "a", "]", "i", "#", "o", "$"]


def test_every_phone_is_a_v2_symbol_or_unk():
    _, phones, word2ph = japanese.clean("「東京」は、2024年に25.5％増えた……本当？")
    assert word2ph is None
    table = symbol_to_id()
    assert phones and all(p in table for p in phones)
    assert "UNK" in phones  # the accent-phrase borders and 「」


def test_import_does_not_load_pyopenjtalk():
    code = "import sys, voicefleet.text.japanese; print('pyopenjtalk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
