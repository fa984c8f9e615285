"""The pretrained folder: paths handed to other processes must not depend on the working directory."""

from __future__ import annotations

import os
import re

import pytest

from voicefleet.models.pretrained import PretrainedError, find_pretrained


def test_relative_root_resolves_to_absolute_paths(tiny_pretrained, monkeypatch):
    monkeypatch.chdir(tiny_pretrained.root.parent)
    paths = find_pretrained(tiny_pretrained.root.name, need_discriminator=True)
    for name in ("root", "hubert", "bert", "gpt", "sovits_g", "sovits_d"):
        path = getattr(paths, name)
        assert path.is_absolute(), f"{name} is relative: {path}"
    # still right after the working directory changes, as it does in a Ray worker
    monkeypatch.chdir(os.sep)
    assert paths.root == tiny_pretrained.root.resolve()
    assert paths.gpt.is_file() and paths.sovits_g.is_file() and paths.sovits_d.is_file()
    assert paths.hubert.is_dir() and paths.bert.is_dir()


def test_missing_relative_folder_names_the_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PretrainedError, match=re.escape(str(tmp_path / "absent"))):
        find_pretrained("absent")
