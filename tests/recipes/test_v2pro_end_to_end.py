"""A v2ProPlus voice end to end at tiny size (prepare with speaker embeddings -> train SoVITS and GPT
-> register -> serve -> HTTP speech), served by the same app as a v2 voice."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.data.schema import SV_COLUMN
from voicefleet.platform.voices import registry_for
from voicefleet.recipes.end_to_end import EndToEndConfig, run_end_to_end, synthesize_over_http

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def test_v2proplus_voice_end_to_end_beside_a_v2_voice(ray_session, tiny_pretrained, tiny_pretrained_v2proplus,
                                                      reference_wav, tmp_path):
    from ray import serve

    subprocess.run([sys.executable, str(REPO / "scripts" / "make_demo_corpus.py"), str(tmp_path / "corpus")],
                   check=True)
    config = EndToEndConfig(list_file=str(tmp_path / "corpus" / "list.txt"), voice="pro",
                            pretrained=str(tiny_pretrained_v2proplus.root), workdir=str(tmp_path / "work"),
                            mode="train", train_steps=2, batch_size=2, prepare_workers=1, port=8433,
                            say="你好，欢迎。", output=str(tmp_path / "out" / "pro.wav"))
    # a v2 voice already in the registry the endpoint will serve
    v2 = find_pretrained(tiny_pretrained.root)
    registry_for(config.storage_path).register("plain", gpt=v2.gpt, sovits=v2.sovits_g, reference=reference_wav,
                                               prompt_text="你好。", prompt_lang="zh")
    try:
        result = run_end_to_end(config)
        # the dataset holds the speaker embeddings the v2ProPlus SoVITS trained on
        table = pq.read_table(Path(config.dataset_dir) / "data")
        assert SV_COLUMN in table.column_names and table.num_rows == result.clips_kept
        audio, sr = sf.read(result.wav)
        assert sr == 32000 and len(audio) > 0
        with urllib.request.urlopen(f"{result.endpoint}/v1/voices", timeout=60) as response:
            voices = {v["voice_id"]: v for v in json.loads(response.read())["voices"]}
        assert voices["pro"]["model_version"] == "v2ProPlus" and voices["plain"]["model_version"] == "v2"
        plain = synthesize_over_http(result.endpoint, "plain", "你好。", "zh", tmp_path / "out" / "plain.wav")
        audio, sr = sf.read(plain)
        assert sr == 32000 and len(audio) > 0
    finally:
        serve.shutdown()
