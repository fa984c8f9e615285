"""The GPT-SoVITS list format: parsing, path resolution, languages, one-line errors naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicefleet.platform.data import uris
from voicefleet.platform.data.listfile import ListFileError, format_list_line, parse_list_text, read_list_file


def _write(tmp_path: Path, text: str, name: str = "voice.list") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_rows_resolve_against_the_list_folder(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "wavs" / "a.wav").write_bytes(b"x")
    listing = read_list_file(str(_write(tmp_path, "wavs/a.wav|alice|zh|你好。\n/abs/b.wav|bob|EN|Hello.\n")))
    a, b = listing.entries
    assert (a.line, a.clip_id, a.speaker, a.lang, a.text) == (1, "wavs/a.wav", "alice", "zh", "你好。")
    assert Path(a.audio) == tmp_path / "wavs" / "a.wav" and uris.exists(a.audio)
    assert b.audio == "/abs/b.wav" and b.lang == "en" and b.lang_code == "EN"
    assert len(listing.sha256) == 64


@pytest.mark.parametrize("code, lang", [("zh", "zh"), ("ZH", "zh"), ("all_zh", "zh"), ("EN", "en"), ("en", "en"),
                                        ("ja", "ja"), ("JP", "ja"), ("all_ja", "ja"), ("ko", "ko"), ("KO", "ko"),
                                        ("all_ko", "ko"), ("yue", "yue"), ("YUE", "yue"), ("all_yue", "yue"),
                                        ("auto", None), ("auto_yue", None), ("fr", None)])
def test_language_codes(code, lang):
    (entry,) = parse_list_text(f"a.wav|s|{code}|text", base="/data")
    assert entry.lang == lang and entry.lang_code == code  # unsupported codes stay rows (rejected later)


def test_bom_crlf_blank_lines_and_empty_text():
    entries = parse_list_text("\ufeffa.wav|s|zh|你好\r\n\r\n  \nb.wav|s|en|\r\n", base="/d")
    assert [(e.line, e.clip_id, e.text) for e in entries] == [(1, "a.wav", "你好"), (4, "b.wav", "")]


def test_bom_is_dropped_when_reading_a_file(tmp_path):
    listing = read_list_file(str(_write(tmp_path, "\ufeffa.wav|s|zh|你好\n")))
    assert listing.entries[0].clip_id == "a.wav"


@pytest.mark.parametrize("text, line, needle", [
    ("a.wav|s|zh|ok\nb.wav|s|zh\n", 2, "expected 4 fields"),
    ("a.wav|s|zh|ok\n\nc.wav|s|zh|x|y\n", 3, "found 5"),
    ("|s|zh|ok\n", 1, "empty audio path"),
    ("a.wav||zh|ok\n", 1, "empty speaker"),
    ("a.wav|s| |ok\n", 1, "empty language"),
])
def test_unparseable_lines_name_the_line(tmp_path, text, line, needle):
    with pytest.raises(ListFileError) as err:
        read_list_file(str(_write(tmp_path, text)))
    message = str(err.value)
    assert f"line {line}:" in message and needle in message and "\n" not in message


def test_missing_empty_and_binary_list_files(tmp_path):
    with pytest.raises(ListFileError, match="not found"):
        read_list_file(str(tmp_path / "nope.list"))
    with pytest.raises(ListFileError, match="no rows"):
        read_list_file(str(_write(tmp_path, "\n\n")))
    (tmp_path / "bin.list").write_bytes(b"a.wav|s|zh|ok\n\xff\xfe\n")
    with pytest.raises(ListFileError, match="line 2: not UTF-8"):
        read_list_file(str(tmp_path / "bin.list"))


def test_uri_list_files_resolve_relative_paths_as_uris(tmp_path):
    (tmp_path / "wavs").mkdir()
    (tmp_path / "wavs" / "a.wav").write_bytes(b"RIFF")
    path = _write(tmp_path, "wavs/a.wav|s|zh|你好\n")
    listing = read_list_file(path.as_uri())
    (entry,) = listing.entries
    assert entry.audio == (tmp_path / "wavs" / "a.wav").as_uri()
    assert uris.read_bytes(entry.audio) == b"RIFF"
    with pytest.raises(FileNotFoundError):
        uris.read_bytes((tmp_path / "wavs" / "gone.wav").as_uri())


def test_audio_dir_takes_the_file_name_like_the_official_inp_wav_dir(tmp_path):
    (entry,) = parse_list_text("D:\\GPT-SoVITS\\slicer_opt\\a.wav|s|zh|你好", base="/x", audio_dir=str(tmp_path))
    assert entry.audio == str(tmp_path / "a.wav") and entry.clip_id == "D:\\GPT-SoVITS\\slicer_opt\\a.wav"


def test_format_list_line_refuses_separators():
    assert format_list_line("a.wav", "s", "zh") == "a.wav|s|zh|"
    with pytest.raises(ValueError, match="must not contain"):
        format_list_line("a.wav", "s|t", "zh")
