"""The v2 phoneme table equals the official one, symbol for symbol."""

import json

import pytest

from voicefleet.models.symbols import V1_SIZE, phoneme_ids, symbols_v2


def test_symbol_table_equals_official(compat_dir):
    official = json.loads((compat_dir / "symbols_v2.json").read_text(encoding="utf-8"))
    assert list(symbols_v2()) == official


def test_first_entries_are_the_v1_table(compat_dir):
    official_v1 = json.loads((compat_dir / "symbols_v1.json").read_text(encoding="utf-8"))
    assert len(official_v1) == V1_SIZE
    assert list(symbols_v2()[:V1_SIZE]) == official_v1


def test_phoneme_ids_round_trip_and_errors():
    table = symbols_v2()
    ids = phoneme_ids("n i3 h ao3 SP HH AH0 L OW1 .")
    assert [table[i] for i in ids] == "n i3 h ao3 SP HH AH0 L OW1 .".split()
    with pytest.raises(ValueError, match="xx9"):
        phoneme_ids(["a1", "xx9"])
