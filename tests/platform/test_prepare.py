"""`voicefleet prepare` end to end on a generated corpus, plus the pieces it is built from.

The Ray tests share one prepared dataset (module fixture `prepared`, made through the CLI with
1 worker and the official export), so the suite pays for the pipeline a few times only.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from voicefleet.models.audio import load_audio
from voicefleet.platform.data import PrepareConfig, prepare_dataset, read_dataset, read_rejects
from voicefleet.platform.data import quality
from voicefleet.platform.data.official_export import official_names
from voicefleet.platform.data.schema import (clip_arrays, dataset_schema, from_f16_blob, list_column, list_values,
                                             to_f16_blob)
from voicefleet.platform.data.split import assign_splits
from voicefleet.platform.data.synthetic import voice_like
from voicefleet.platform.data.transcripts import transcribe
from voicefleet.text.frontend import TextFrontendError

from .conftest import Corpus, cli_app, make_corpus, tree_digest, write_wav

runner = CliRunner()


def _prepare_cli(*args) -> object:
    return runner.invoke(cli_app(), ["prepare", *[str(a) for a in args]])


@dataclass
class Prepared:
    corpus: Corpus
    out: Path
    export: Path
    input_digest: str
    output: str


@pytest.fixture(scope="module")
def prepared(ray_session, tiny_pretrained, tmp_path_factory) -> Prepared:
    root = tmp_path_factory.mktemp("prepare")
    corpus = make_corpus(root / "input")
    digest = tree_digest(corpus.root)
    result = _prepare_cli(corpus.list_path, "--pretrained", tiny_pretrained.root, "--out", root / "dataset",
                          "--workers", "1", "--export-official", root / "export")
    assert result.exit_code == 0, result.output
    return Prepared(corpus, root / "dataset", root / "export", digest, result.output)


# --- the pipeline on the generated corpus ------------------------------------------------------------

def test_keeps_every_good_clip_and_rejects_every_bad_one_with_its_reason(prepared):
    corpus = prepared.corpus
    table = read_dataset(prepared.out)
    assert sorted(table.column("clip_id").to_pylist()) == sorted(corpus.kept)
    rejects = read_rejects(prepared.out).to_pylist()
    by_clip = {r["clip_id"]: r["reason"] for r in rejects if r["reason"] != "duplicate"}
    assert by_clip == {c: r for c, r in corpus.expected.items() if r is not None}
    (duplicate,) = [r for r in rejects if r["reason"] == "duplicate"]
    assert duplicate["line"] == len(corpus.lines) and "line 1" in duplicate["detail"]
    assert all(r["detail"] for r in rejects)
    # the summary table: kept count, every reason, minutes per speaker
    out = prepared.output
    assert "kept" in out and "minutes" in out and "alice" in out and "bob" in out and "carol" in out
    # Japanese, Korean and Cantonese transcripts are cleaned by their own front ends
    langs = dict(zip(table.column("clip_id").to_pylist(), table.column("lang").to_pylist()))
    assert sorted(langs[c] for c in corpus.kept if c.startswith("wavs/carol")) == ["ja", "ko", "yue"]
    for reason in set(corpus.expected.values()) - {None}:
        assert f"rejected: {reason}" in out


def test_dataset_schema_and_shapes(prepared):
    table = read_dataset(prepared.out)
    manifest = json.loads((prepared.out / "manifest.json").read_text())
    assert table.schema.equals(dataset_schema("int16"), check_metadata=False)
    assert table.column("clip_id").to_pylist() == sorted(table.column("clip_id").to_pylist())
    for row in table.to_pylist():
        arrays = clip_arrays(row)
        assert len(arrays.audio) == pytest.approx(row["duration_s"] * 32000, abs=1)
        assert np.abs(arrays.audio).max() <= 0.95 * 0.5 + 0.5 * 0.5 + 1e-3  # official mix of a 0.5-peak clip
        dim, frames = arrays.hubert.shape
        assert dim == 768 and abs(frames - row["duration_s"] * 50) <= 2
        assert len(row["semantic"]) == frames // 2
        assert len(row["phone_ids"]) == len(row["phones"]) > 0
        if row["lang"] == "zh":
            assert arrays.bert.shape == (1024, len(row["phones"]))
        else:  # BERT features are zeros outside Chinese, as officially: none are stored
            assert arrays.bert is None
        if row["lang"] in ("zh", "yue"):
            assert sum(row["word2ph"]) == len(row["phones"]) and len(row["word2ph"]) == len(row["norm_text"])
        else:
            assert row["word2ph"] is None
    counts = manifest["counts"]
    assert counts["kept"] == table.num_rows and counts["rejected"] == len(read_rejects(prepared.out))
    for speaker, summary in manifest["speakers"].items():
        assert summary["val"] >= 1 and summary["train"] >= 1, speaker  # each speaker has 3 clips
    assert set(manifest["pretrained"]) == {"hubert", "bert", "sovits_g"}
    assert all(len(f["sha256"]) == 64 for part in manifest["pretrained"].values() for f in part["files"].values())
    assert manifest["libraries"]["ray"] and manifest["config"]["norm_alpha"] == 0.5


def test_semantic_tokens_equal_the_models_run_directly(prepared, tiny_pretrained):
    """Decode, normalise and run HuBERT + the SoVITS quantizer by hand; the dataset must agree."""
    from voicefleet.models.checkpoint.sovits_io import load_sovits
    from voicefleet.models.features import HubertFeatures

    hubert = HubertFeatures.from_pretrained(tiny_pretrained.hubert)
    sovits = load_sovits(tiny_pretrained.sovits_g).model
    torch.set_num_threads(1)  # as in the actor (num_cpus 1 -> one thread)
    rows = read_dataset(prepared.out).to_pylist()
    for row in rows:
        wave = load_audio(prepared.corpus.root / row["clip_id"], 32000)
        model_input = quality.hubert_input(quality.normalize_loudness(wave))
        with torch.no_grad():
            features = hubert(torch.from_numpy(model_input)[None])
            tokens = sovits.extract_latent(features)[0, 0].tolist()
        assert row["semantic"] == tokens, row["clip_id"]
        stored = clip_arrays(row).hubert.astype(np.float32)
        np.testing.assert_allclose(stored, features[0].numpy(), rtol=2e-3, atol=2e-3)
    assert len({t for row in rows for t in row["semantic"]}) > 5  # the random codebook gives varied codes


def test_two_workers_give_the_same_dataset(prepared, tiny_pretrained, tmp_path):
    # other batch sizes too: neither pool size nor batching may change a value
    config = PrepareConfig(cpu_batch_size=3, cpu_num_cpus=1.0).with_resources(workers=2, cpus_per_worker=0.25)
    config = config.model_copy(update={"audio_stage": config.audio_stage.model_copy(update={"batch_size": 1})})
    result = prepare_dataset(prepared.corpus.list_path, tiny_pretrained.root, tmp_path / "two", config=config)
    assert not result.no_op and result.processed > 0
    one, two = read_dataset(prepared.out), read_dataset(tmp_path / "two")
    assert one.equals(two)
    assert read_rejects(prepared.out).equals(read_rejects(tmp_path / "two"))
    manifests = [json.loads((p / "manifest.json").read_text()) for p in (prepared.out, tmp_path / "two")]
    assert manifests[0]["dataset_version"] == manifests[1]["dataset_version"]


def test_second_run_does_no_work_and_inputs_stay_untouched(prepared, tiny_pretrained):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in prepared.out.rglob("*") if p.is_file()}
    export_before = {p: p.stat().st_mtime_ns for p in prepared.export.rglob("*")}
    result = _prepare_cli(prepared.corpus.list_path, "--pretrained", tiny_pretrained.root, "--out", prepared.out,
                          "--workers", "1", "--export-official", prepared.export)
    assert result.exit_code == 0, result.output
    assert "already up to date" in result.output and "unchanged" in result.output
    api = prepare_dataset(prepared.corpus.list_path, tiny_pretrained.root, prepared.out)
    assert api.no_op and api.processed == 0 and api.kept == len(prepared.corpus.kept)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in prepared.out.rglob("*") if p.is_file()}
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in prepared.export.rglob("*")} == export_before  # not rewritten
    assert tree_digest(prepared.corpus.root) == prepared.input_digest


def test_grown_list_processes_only_the_new_rows(prepared, tiny_pretrained, tmp_path):
    source, out = tmp_path / "input", tmp_path / "dataset"
    shutil.copytree(prepared.corpus.root, source)
    shutil.copytree(prepared.out, out)
    write_wav(source / "wavs" / "bob_new.wav", voice_like(2.2, 32000, seed=4242))
    with open(source / "voice.list", "a", encoding="utf-8") as f:
        f.write("wavs/bob_new.wav|bob|en|Thank you for your help.\n")
    digest = tree_digest(source)
    result = prepare_dataset(source / "voice.list", tiny_pretrained.root, out)
    assert result.processed == 1 and result.kept == len(prepared.corpus.kept) + 1
    assert result.reused == result.manifest["counts"]["rows"] - 1 - 4  # minus the new row and 4 driver-side rejects
    old, new = read_dataset(prepared.out), read_dataset(out)
    kept_before = new.filter(pa.compute.is_in(new.column("clip_id"), value_set=old.column("clip_id")))
    assert kept_before.drop_columns(["split", "source"]).equals(old.drop_columns(["split", "source"]))
    assert all(Path(p).is_relative_to(source) for p in new.column("source").to_pylist())  # where they are now
    columns = ["clip_id", "line", "reason", "duration_s", "row_key"]
    assert read_rejects(out).select(columns).equals(read_rejects(prepared.out).select(columns))
    assert tree_digest(source) == digest


def test_official_export_layout(prepared):
    export, table = prepared.export, read_dataset(prepared.out)
    rows = {r["clip_id"]: r for r in table.to_pylist()}
    names = official_names(list(rows))
    text_lines = (export / "2-name2text.txt").read_text(encoding="utf-8").strip("\n").split("\n")
    assert len(text_lines) == len(rows)
    semantic = (export / "6-name2semantic.tsv").read_text(encoding="utf-8").strip("\n").split("\n")
    assert semantic[0] == "item_name\tsemantic_audio" and len(semantic) == len(rows) + 1
    semantic_by_name = dict(line.split("\t") for line in semantic[1:])
    text_by_name = {line.split("\t")[0]: line.split("\t") for line in text_lines}
    for clip_id, row in rows.items():
        name = names[clip_id]
        fields = text_by_name[name]
        assert len(fields) == 4 and fields[1] == " ".join(row["phones"]) and fields[3] == row["norm_text"]
        assert fields[2] == (str(row["word2ph"]) if row["word2ph"] is not None else "None")
        assert semantic_by_name[name] == " ".join(map(str, row["semantic"]))
        hubert = torch.load(export / "4-cnhubert" / f"{name}.pt", weights_only=True)
        assert hubert.shape == (1, 768, row["hubert_shape"][1]) and hubert.dtype == torch.float16
        wav, sr = sf.read(export / "5-wav32k" / name, dtype="int16")
        assert sr == 32000 and np.array_equal(wav, np.asarray(row["audio_32k"], dtype=np.int16))
        bert_path = export / "3-bert" / f"{name}.pt"
        assert bert_path.is_file() == (row["lang"] == "zh")
        if row["lang"] == "zh":
            assert torch.load(bert_path, weights_only=True).shape == (1024, len(row["phones"]))


# --- errors a user can fix: one line, exit 2 ---------------------------------------------------------

def _one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in result.output, result.output


def test_unparseable_list_gives_one_line_naming_the_line(tiny_pretrained, tmp_path):
    bad = tmp_path / "bad.list"
    bad.write_text("a.wav|alice|zh|你好\nb.wav|alice|zh\n", encoding="utf-8")
    result = _prepare_cli(bad, "--pretrained", tiny_pretrained.root, "--out", tmp_path / "out")
    _one_line_error(result, "line 2", "expected 4 fields")
    assert not (tmp_path / "out").exists()


def test_user_errors_are_one_line(tiny_pretrained, tmp_path):
    corpus = make_corpus(tmp_path / "input", n_good=2, bad=False)
    _one_line_error(_prepare_cli(corpus.list_path, "--pretrained", tmp_path / "none", "--out", tmp_path / "o"),
                    "does not exist")
    _one_line_error(_prepare_cli(corpus.list_path, "--pretrained", tiny_pretrained.root, "--out", corpus.root),
                    "contains the input file")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    _one_line_error(_prepare_cli(corpus.list_path, "--pretrained", tiny_pretrained.root, "--out",
                                 tmp_path / "foreign"), "holds no voicefleet dataset")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"
    _one_line_error(_prepare_cli(corpus.list_path, "--pretrained", tiny_pretrained.root, "--out", tmp_path / "o",
                                 "--audio-dtype", "int8"), "audio_dtype")
    _one_line_error(_prepare_cli(corpus.list_path, "--pretrained", tiny_pretrained.root, "--out", tmp_path / "o",
                                 "--export-official", tmp_path / "foreign"), "not a voicefleet export")
    assert not (tmp_path / "o").exists()  # refused before any work


def test_actor_pools_larger_than_the_cluster_are_refused(ray_session, tiny_pretrained, tmp_path):
    corpus = make_corpus(tmp_path / "input", n_good=2, bad=False)
    config = PrepareConfig().with_resources(workers=8)
    with pytest.raises(ValueError, match=r"needs \d+(\.\d+)? CPUs .* has 2"):
        prepare_dataset(corpus.list_path, tiny_pretrained.root, tmp_path / "out", config=config)
    assert not (tmp_path / "out").exists()


# --- pieces ---------------------------------------------------------------------------------------------

def test_split_is_by_clip_hash_stratified_and_order_free():
    clips = [(f"wavs/s{s}_{i}.wav", f"s{s}") for s in range(3) for i in range(40)] + [("solo.wav", "solo")]
    splits = assign_splits(clips, 0.1)
    assert splits == assign_splits(list(reversed(clips)), 0.1)
    assert splits["solo.wav"] == "train"  # a speaker with one clip keeps it for training
    for s in range(3):
        val = [c for c, spk in clips if spk == f"s{s}" and splits[c] == "val"]
        assert 1 <= len(val) <= 12
    pair = assign_splits([("a", "x"), ("b", "x")], 0.1)
    assert sorted(pair.values()) == ["train", "val"]  # at least one of each for a 2-clip speaker
    assert set(assign_splits(clips, 0.0).values()) == {"train"}
    grown = assign_splits(clips + [("wavs/s0_new.wav", "s0")], 0.1)
    assert sum(grown[c] != splits[c] for c in splits) <= 1  # adding a clip moves at most the forced one


def test_arrow_helpers_round_trip():
    arrays = [np.arange(5, dtype=np.float32), None, np.zeros(0, dtype=np.float32), np.ones(3, dtype=np.float32)]
    column = list_column(arrays, pa.float32())
    back = list_values(pa.chunked_array([column.slice(0, 2), column.slice(2)]))
    assert back[1] is None and [a.tolist() for a in back if a is not None] == [[0, 1, 2, 3, 4], [], [1, 1, 1]]
    x = np.random.default_rng(0).standard_normal((768, 7)).astype(np.float32)
    shape, blob = to_f16_blob(x)
    assert shape == [768, 7] and np.array_equal(from_f16_blob(shape, blob), x.astype(np.float16))


def test_mixed_chinese_transcript_and_its_bert_features(tiny_pretrained):
    from voicefleet.platform.data.stages import TextStage

    result = transcribe("我喜欢用Python写代码。", "zh")
    assert sum(result.word2ph) == len(result.phones) and len(result.word2ph) == len(result.norm_text)
    assert "Python" in result.norm_text and any(p.isupper() for p in result.phones)  # English phones kept
    stage = TextStage(str(tiny_pretrained.bert))
    features = stage.features(result.bert_pieces, len(result.phones))
    covered = np.zeros(len(result.phones), dtype=bool)
    for piece in result.bert_pieces:
        covered[piece.phone_start:piece.phone_start + sum(piece.word2ph)] = True
    assert np.abs(features[:, ~covered]).max() == 0  # English phones get zeros, as in official inference
    assert np.abs(features[:, covered]).min(axis=0).max() >= 0 and np.abs(features[:, covered]).sum() > 0
    plain = transcribe("你好，世界。", "zh")
    assert plain.bert_pieces[0].phone_start == 0 and plain.bert_pieces[0].norm_text == plain.norm_text


def test_japanese_korean_cantonese_transcripts():
    from voicefleet.text.frontend import clean_text

    for text, lang in (("今日はいい天気ですね。", "ja"), ("안녕하세요.", "ko"), ("我哋去飲茶。", "yue")):
        result = transcribe(text, lang)
        official = clean_text(text, lang)  # one language per clip, as 1-get-text.py
        assert (result.phones, result.word2ph, result.bert_pieces) == (official.phones, official.word2ph, [])
    # Latin letters in Cantonese keep their phones (read as English), as in the UI's "yue" mode
    mixed = transcribe("我哋用Python写代码。", "yue")
    assert "Python" in mixed.norm_text and any(p.isupper() for p in mixed.phones) and mixed.bert_pieces == []
    assert sum(mixed.word2ph) == len(mixed.phones) and len(mixed.word2ph) == len(mixed.norm_text)
    with pytest.raises(TextFrontendError, match="gives no phones in 'yue'"):
        transcribe("안녕하세요.", "yue")


def test_official_names_fall_back_to_the_clip_id_on_collisions():
    assert official_names(["a/x.wav", "b/y.wav"]) == {"a/x.wav": "x.wav", "b/y.wav": "y.wav"}
    assert official_names(["a/x.wav", "b/x.wav"]) == {"a/x.wav": "a__x.wav", "b/x.wav": "b__x.wav"}


def test_config_is_bounded_and_strict():
    with pytest.raises(ValueError, match="extra"):
        PrepareConfig.model_validate({"max_entropy": 0.9})
    with pytest.raises(ValueError):
        PrepareConfig(val_fraction=0.9)
    with pytest.raises(ValueError, match="must exceed"):
        PrepareConfig(min_duration_s=5.0, max_duration_s=4.0)
    config = PrepareConfig().with_resources(workers=3, gpus_per_worker=0.5)
    assert config.audio_stage.concurrency == config.text_stage.concurrency == 3
    assert config.output_settings() == PrepareConfig().output_settings()  # resources never change the data
    assert "audio_stage" not in config.output_settings()


@pytest.mark.slow
def test_a_run_stopped_mid_dataset_resumes_without_recomputing_finished_clips(prepared, tiny_pretrained, tmp_path):
    import pyarrow.parquet as pq

    config = PrepareConfig(cpu_batch_size=2)
    out, journal = tmp_path / "dataset", tmp_path / ".dataset.journal"
    blocks = []

    def stop_mid_dataset(done: int, total: int) -> None:
        blocks.append(done)
        if len(blocks) == 4:  # three blocks finished (the first call is 0 of N): the driver stops here
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(prepared.corpus.list_path, tiny_pretrained.root, out, config=config,
                        progress=stop_mid_dataset)
    assert not out.exists()  # no dataset until it is complete
    journaled = sum(pq.read_metadata(p).num_rows for p in journal.glob("*-*.parquet"))
    assert journaled >= 2
    full = json.loads((prepared.out / "manifest.json").read_text())["counts"]["processed"]
    assert journaled < full

    result = prepare_dataset(prepared.corpus.list_path, tiny_pretrained.root, out, config=config)
    assert result.processed == full - journaled  # the finished clips were not computed again
    assert result.reused == journaled
    # the same dataset as one uninterrupted run
    assert read_dataset(out).equals(read_dataset(prepared.out))
    assert read_rejects(out).equals(read_rejects(prepared.out))
    assert result.dataset_version == json.loads((prepared.out / "manifest.json").read_text())["dataset_version"]
    assert not journal.exists()  # the journal goes once the dataset is in place
    assert tree_digest(prepared.corpus.root) == prepared.input_digest


def test_a_journal_keeps_whole_blocks_only_and_only_for_the_same_processing(tmp_path):
    import pyarrow.parquet as pq

    from voicefleet.platform.data.store import Journal

    schema = dataset_schema("int16")
    rows = schema.empty_table()
    out = tmp_path / "dataset"
    reject = {"clip_id": "wavs/a.wav", "line": 3, "speaker": "alice", "lang_code": "zh", "text": "你好。",
              "reason": "silent", "detail": "", "duration_s": 2.0, "source": "/in/wavs/a.wav", "audio_sha256": "ab",
              "row_key": "k1"}
    Journal(out, "key-a", schema).add(rows.drop_columns(["split"]), [reject])
    Journal(out, "key-a", schema).add(rows.drop_columns(["split"]), [dict(reject, row_key="k2")])
    folder = tmp_path / ".dataset.journal"
    half = next(p for p in folder.glob("rejects-*.parquet") if pq.read_table(p).column("row_key")[0].as_py() == "k2")
    half.unlink()  # killed between a block's two files: that block does not count
    kept, rejects = Journal(out, "key-a", schema).load()
    assert kept.num_rows == 0 and kept.schema.names == [n for n in schema.names if n != "split"]
    assert set(rejects) == {"k1"} and rejects["k1"]["reason"] == "silent"
    assert pq.read_table(sorted(folder.glob("kept-*.parquet"))[0]).schema.names == kept.schema.names
    # rows made with other settings are never reused: the journal is discarded
    assert Journal(out, "key-b", schema).load() == (None, {})
    assert not folder.exists()
