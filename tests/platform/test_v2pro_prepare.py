"""`prepare` with a v2ProPlus pretrained folder: each clip's speaker-verification embedding.

The embedding column must hold what the official chain (32 kHz -> 16 kHz -> fbank -> ERes2NetV2)
gives for the clip as stored; v2 datasets keep their schema without it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier
from voicefleet.models.config import SAMPLE_RATE
from voicefleet.models.speaker_frontend import speaker_features
from voicefleet.platform.data import prepare_dataset, read_dataset
from voicefleet.platform.data.manifest import read_manifest
from voicefleet.platform.data.schema import SV_COLUMN, clip_arrays, dataset_schema

from .conftest import make_corpus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pro_dataset(ray_session, tiny_pretrained_v2proplus, tmp_path_factory):
    root = tmp_path_factory.mktemp("pro-prepare")
    corpus = make_corpus(root / "input", n_good=3, bad=False)
    out = root / "dataset"
    result = prepare_dataset(corpus.list_path, tiny_pretrained_v2proplus.root, out,
                             export_official=root / "export")
    return result, out, root / "export"


def test_v2proplus_dataset_holds_each_clips_speaker_embedding(pro_dataset, tiny_pretrained_v2proplus):
    result, out, _ = pro_dataset
    table = read_dataset(out)
    assert table.num_rows == result.kept > 0
    assert table.schema.equals(dataset_schema("int16", speaker_embedding=True), check_metadata=False)
    manifest = read_manifest(out)
    assert manifest["schema"]["sv_embedding"] is True and manifest["model_version"] == "v2ProPlus"
    assert "sv" in manifest["pretrained"]  # the fingerprint depends on the sv network
    verifier = load_speaker_verifier(tiny_pretrained_v2proplus.sv)
    for row in table.to_pylist():
        arrays = clip_arrays(row)
        wave = torch.from_numpy(arrays.audio)[None]  # int16 storage, as the official 5-wav32k reads
        with torch.no_grad():
            expected = verifier.feature_map_embedding(speaker_features(wave, SAMPLE_RATE))[0].numpy()
        assert arrays.sv.shape == expected.shape
        np.testing.assert_allclose(arrays.sv, expected, rtol=1e-4, atol=1e-5)


def test_official_export_writes_the_sv_files(pro_dataset):
    _, out, export = pro_dataset
    table = read_dataset(out)
    files = sorted((export / "7-sv_cn").glob("*.pt"))
    assert len(files) == table.num_rows
    emb = torch.load(files[0])
    assert emb.shape == (1, len(table.column(SV_COLUMN)[0]))
    assert emb.dtype == torch.float32


def test_v2_dataset_schema_has_no_speaker_embedding():
    assert SV_COLUMN not in dataset_schema("int16").names
    assert dataset_schema("int16", speaker_embedding=True).names[-1] == SV_COLUMN
