"""SoVITS version detection from the file, and the errors when a file of the other family is given."""

from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from voicefleet.models.checkpoint import CheckpointError
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.checkpoint.versions import HEAD_VERSIONS, READABLE_HEADS, header_version, same_family


@pytest.fixture()
def files(compat_dir, tmp_path):
    pro_dir = compat_dir / "v2pro"
    if not pro_dir.is_dir():
        pytest.skip(f"v2Pro compat fixtures not found at {pro_dir}")
    out = {}
    for name, src in [("v2", compat_dir / "tiny_s2G_export.pth"), ("v2Pro", pro_dir / "tiny_s2G_v2Pro_export.pth"),
                      ("v2ProPlus", pro_dir / "tiny_s2G_v2ProPlus_export.pth")]:
        out[name] = shutil.copy(src, tmp_path / f"{name}.pth")
    return out


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_each_file_is_detected_without_a_flag(files):
    for version, path in files.items():
        assert load_sovits(path).version == version


@pytest.mark.parametrize("given,expected", [("v2", "v2Pro"), ("v2", "v2ProPlus"), ("v2Pro", "v2"),
                                            ("v2ProPlus", "v2")])
def test_other_family_is_refused_naming_both_versions(files, given, expected):
    path = files[given]
    before = _digest(path)
    with pytest.raises(CheckpointError) as err:
        load_sovits(path, expect_version=expected)
    message = str(err.value)
    assert str(path) in message and f"is a GPT-SoVITS {given} SoVITS model" in message
    assert f"a {expected} model is expected" in message and "\n" not in message
    assert _digest(path) == before  # only read


def test_v2pro_and_v2proplus_are_one_family(files):
    assert load_sovits(files["v2ProPlus"], expect_version="v2Pro").version == "v2ProPlus"
    assert same_family("v2Pro", "v2ProPlus") and not same_family("v2", "v2Pro")


def test_tag_without_the_v2pro_weights_is_reported(files, tmp_path):
    data = open(files["v2"], "rb").read()
    wrong = tmp_path / "tagged.pth"
    wrong.write_bytes(b"06" + data[2:])
    assert header_version(wrong) == "v2ProPlus"
    with pytest.raises(CheckpointError, match=re.escape(str(wrong)) + ".*tagged as a GPT-SoVITS v2ProPlus.*v2 model"):
        load_sovits(wrong)


@pytest.mark.parametrize("head", sorted(set(HEAD_VERSIONS) - READABLE_HEADS))
def test_other_architectures_are_refused(files, tmp_path, head):
    data = open(files["v2"], "rb").read()
    path = tmp_path / "other.pth"
    path.write_bytes(head + data[2:])
    with pytest.raises(CheckpointError, match=f"GPT-SoVITS {re.escape(HEAD_VERSIONS[head])} file"):
        load_sovits(path)
