"""benchmarks/many_voices.py's pure parts: its arguments refuse bad input, its memory table is
computed from the readings (and refuses readings that cannot be right)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "many_voices.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its sibling `_report`
    try:
        spec = importlib.util.spec_from_file_location("_bench_many_voices", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


def test_parts_are_parsed_in_order_and_unknown_ones_refused(bench):
    assert bench.parse_parts("load, memory,load") == ["load", "memory"]
    for bad in ("", "memory,speed", ",,"):
        with pytest.raises(argparse.ArgumentTypeError, match="memory,latency,load"):
            bench.parse_parts(bad)


def test_voice_counts_must_be_positive_and_increasing(bench):
    assert bench.parse_counts("1,10,100,500") == [1, 10, 100, 500]
    for bad in ("10,1", "0,5", "1,1", "", "1,x"):
        with pytest.raises(argparse.ArgumentTypeError, match="voice counts"):
            bench.parse_counts(bad)


def test_memory_rows_are_growth_over_the_replica(bench):
    mib = 2**20
    rows = bench.memory_rows([(1, 1005 * mib, 4 * mib), (11, 1045 * mib, 44 * mib)], 1000 * mib, 40 * mib)
    assert rows[0] == [1, "1,005", "5.0", "0.5%", "5.00", "5.00", "4.00", "yes"]
    assert rows[1] == [11, "1,045", "45.0", "4.5%", "4.00", "4.09", "4.00", "no"]
    with pytest.raises(ValueError, match="increasing"):
        bench.memory_rows([(10, mib, 0), (10, mib, 0)], mib, mib)
    with pytest.raises(ValueError, match="positive"):
        bench.memory_rows([(1, mib, 0)], 0, mib)
