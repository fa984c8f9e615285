"""Turning training results into registry voices (weights + a reference clip + its transcript), and
registry voices back into files for GPT-SoVITS's own weights folders or ONNX folders."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf

from voicefleet.models.config import SAMPLE_RATE
from voicefleet.models.pretrained import find_pretrained
from voicefleet.platform.data.schema import clip_arrays
from voicefleet.platform.registry import RegistryError, VoiceRecord, VoiceRegistry

logger = logging.getLogger(__name__)

REFERENCE_RANGE_S = (3.0, 10.0)
# GPT-SoVITS's WebUI and api_v2.py list the v2 weights in these folders of its checkout
OFFICIAL_SOVITS_FOLDER = "SoVITS_weights_{version}"  # the official WebUI's folders, per model version
OFFICIAL_GPT_FOLDER = "GPT_weights_{version}"


def registry_for(storage_path: str) -> VoiceRegistry:
    """The registry that lives beside the runs: `<storage>/registry`."""
    return VoiceRegistry(f"{storage_path.rstrip('/')}/registry")


def pick_reference(dataset: str | Path) -> dict[str, Any]:
    """The clip to use as the voice's reference: 3-10 s, longest under 10 s, preferring validation
    clips (never trained on). Returns its row (audio decoded) or raises when none fits."""
    table = pq.read_table(Path(dataset) / "data", columns=["clip_id", "lang", "text", "duration_s", "split",
                                                           "audio_32k", "hubert_shape", "hubert", "semantic",
                                                           "phone_ids", "bert_shape", "bert"])
    lo, hi = REFERENCE_RANGE_S
    table = table.filter(pc.and_(pc.greater_equal(table["duration_s"], lo), pc.less_equal(table["duration_s"], hi)))
    if table.num_rows == 0:
        raise ValueError(f"no clip of {lo:.0f}-{hi:.0f} s in {dataset} to use as the voice's reference")
    rows = sorted(table.to_pylist(), key=lambda r: (r["split"] != "val", -r["duration_s"], r["clip_id"]))
    row = rows[0]
    row["audio"] = clip_arrays(row).audio
    return row


def register_trained_voice(voice_id: str, storage_path: str, dataset: str | Path, pretrained: str | Path, *,
                           sovits: str | Path | None = None, gpt: str | Path | None = None,
                           metrics: Mapping[str, Any] | None = None, lineage: Mapping[str, Any] | None = None
                           ) -> VoiceRecord:
    """Register (or update) a voice. A stage not given keeps the voice's current weights, or the
    pretrained ones for a new voice."""
    registry = registry_for(storage_path)
    paths = find_pretrained(pretrained)
    dataset = Path(dataset).expanduser().resolve()  # lineage must name the dataset wherever it is read
    current = registry.local_files(voice_id) if registry.exists(voice_id) else {}
    old = registry.get(voice_id) if current else None
    ref = pick_reference(dataset)
    with tempfile.TemporaryDirectory() as tmp:
        # the voice's current files are copied aside first: registering rewrites its folder
        kept = {k: Path(shutil.copy(v, Path(tmp) / f"current-{k}")) for k, v in current.items() if k != "reference"}
        sovits_file = Path(sovits) if sovits else kept.get("sovits", paths.sovits_g)
        gpt_file = Path(gpt) if gpt else kept.get("gpt", paths.gpt)
        wav = Path(tmp) / "reference.wav"
        sf.write(wav, np.clip(ref["audio"], -1, 1), SAMPLE_RATE, subtype="PCM_16")
        record = registry.register(
            voice_id, gpt=gpt_file, sovits=sovits_file, reference=wav, prompt_text=ref["text"],
            prompt_lang=ref["lang"], language=ref["lang"],
            metrics={**(old.metrics if old else {}), **dict(metrics or {})},
            lineage={**(old.lineage if old else {}), **dict(lineage or {}), "dataset": str(dataset),
                     "reference_clip": ref["clip_id"], "pretrained": str(paths.root)},
            overwrite=old is not None)
    logger.info("voice %s registered (version %d) with reference clip %s", voice_id, record.version, ref["clip_id"])
    return record


@dataclass(frozen=True)
class ExportedVoice:
    voice_id: str
    version: int
    sovits: Path
    gpt: Path
    official_size: bool  # False: GPT-SoVITS's own code cannot build this voice (voicefleet can)


def merged_stage(model, adapter_path: str | Path):
    """`model` (a pretrained stage) with the adapter file's updates merged into its weights, in place;
    refused (`AdapterError`) when the adapter was trained on another base."""
    from voicefleet.models import adapters as lora

    return lora.merge_(model, lora.load_adapter(adapter_path).build(model))


def export_voice(voice_id: str, storage_path: str, to: str | Path, *, version: int | None = None,
                 overwrite: bool = False, pretrained: str | Path | None = None) -> ExportedVoice:
    """Write a registered voice for GPT-SoVITS's weights folders, named after the voice.

    Writes `<to>/SoVITS_weights_<model>/<voice>_v<version>.pth` and `<to>/GPT_weights_<model>/<voice>_v<version>.ckpt`
    (`<model>`: v2, v2Pro or v2ProPlus, the voice's model version) in the official export formats,
    with the voice's id as the experiment name inside (the SoVITS config's `name`, the GPT config's
    `train.exp_name`). The registry's own `sovits.pth`/`gpt.ckpt`
    would collide when several voices share one folder. The registry keeps each voice's current
    version only, so `version` (default: that one) must be it. Existing files are kept unless
    `overwrite` (both are checked, and both voice files loaded, before anything is written).
    Logs a warning when the voice is not of official size: GPT-SoVITS cannot load those.

    An adapter voice is written merged: each adapter is applied to the pretrained stage it was
    trained on (`pretrained`, default the folder its record names), so GPT-SoVITS loads ordinary
    full voices; a pretrained stage other than the adapter's base is refused.
    """
    from voicefleet.models.checkpoint.gpt_io import load_gpt, save_gpt
    from voicefleet.models.checkpoint.sovits_io import load_sovits, official_s2_hparams, save_sovits_export
    from voicefleet.models.pretrained import official_s1_config
    from voicefleet.platform.training.export import official_size_mismatches, warn_if_not_official_size

    registry = registry_for(storage_path)
    record = registry.get(voice_id)  # VoiceNotFound names the registry
    if version is not None and version != record.version:
        raise RegistryError(f"voice {voice_id!r} has no version {version} in {registry.uri}: the registry keeps only "
                            f"the current version, {record.version}")
    stem = f"{voice_id}_v{record.version}"
    target = Path(to).expanduser()
    files = registry.local_files(voice_id)
    base = None
    if record.adapters:
        root = pretrained or record.lineage.get("pretrained")
        if not root:
            raise RegistryError(f"voice {voice_id!r} is an adapter voice: give the pretrained folder its adapters were "
                                f"trained on (--pretrained) to export it merged")
        base = find_pretrained(root)
    # both files are loaded (every key and shape checked) and adapters merged before either is written
    sovits = load_sovits(base.sovits_g if "sovits" in record.adapters else files["sovits"])
    if "sovits" in record.adapters:
        merged_stage(sovits.model, files["sovits"])
    model_version = sovits.version
    sovits_path = target / OFFICIAL_SOVITS_FOLDER.format(version=model_version) / f"{stem}.pth"
    gpt_path = target / OFFICIAL_GPT_FOLDER.format(version=model_version) / f"{stem}.ckpt"
    existing = [str(p) for p in (sovits_path, gpt_path) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                              f"pass --overwrite to replace")
    hparams = dict(sovits.hparams) if sovits.hparams is not None else official_s2_hparams(sovits.config)
    hparams["name"] = voice_id
    gpt, gpt_config, gpt_info = load_gpt(base.gpt if "gpt" in record.adapters else files["gpt"])
    if "gpt" in record.adapters:
        merged_stage(gpt, files["gpt"])
    official = {**official_s1_config(gpt_config, version=model_version), **gpt_info.config}  # sections it lacks
    official["train"] = {**official["train"], "exp_name": voice_id}
    if model_version != "v2":
        official["train"] = {**official["train"], "half_weights_save_dir": f"GPT_weights_{model_version}"}

    save_sovits_export(sovits.model, sovits_path, hparams=hparams, info=sovits.info or "0epoch_0iteration",
                       name=voice_id, overwrite=overwrite)
    warn_if_not_official_size(sovits.config, sovits_path)
    save_gpt(gpt, official, gpt_path, info=gpt_info.info or "GPT-e0", overwrite=overwrite)
    logger.info("voice %s (version %d) exported to %s and %s", voice_id, record.version, sovits_path, gpt_path)
    return ExportedVoice(voice_id, record.version, sovits_path, gpt_path,
                         official_size=not official_size_mismatches(sovits.config))


def export_voice_onnx(voice_id: str, storage_path: str, pretrained, out: str | Path | None = None, *,
                      int8: bool = False, overwrite: bool = False, progress=None):
    """A registered voice as an ONNX folder (`voicefleet.inference.onnx_export.export_onnx`), with its
    reference clip, transcript and language stored in the folder, so the engine needs nothing else.
    `pretrained` is the `PretrainedPaths` of the HuBERT and BERT folders (and, for an adapter voice,
    the pretrained stages its adapters were trained on: they are exported merged, as `export_voice`
    writes them).

    Without `out` the folder goes into the registry, beside the voice's files
    (`voicefleet.platform.onnx_exports`: where ONNX serving replicas read it). Either way the
    manifest records the registry version and files it was made from (`export_stamp`), so a voice
    registered again later is known to need a new export."""
    from voicefleet.inference.onnx_export import export_onnx
    from voicefleet.platform.onnx_exports import ONNX_FOLDER, export_stamp

    registry = registry_for(storage_path)
    record = registry.get(voice_id)  # VoiceNotFound names the registry
    files = registry.local_files(voice_id)
    voice = {"id": voice_id, "version": record.version, "prompt_text": record.prompt_text,
             "prompt_lang": record.prompt_lang, "reference": str(files["reference"]),
             "registry": export_stamp(record, files)}
    local = registry.local_dir(voice_id)
    with tempfile.TemporaryDirectory() as tmp:
        gpt, sovits = files["gpt"], files["sovits"]
        if record.is_adapter:
            merged = export_voice(voice_id, storage_path, Path(tmp) / "merged", pretrained=pretrained.root)
            gpt, sovits = merged.gpt, merged.sovits
        if out is not None or local is not None:
            return export_onnx(gpt, sovits, pretrained, out if out is not None else local / ONNX_FOLDER, int8=int8,
                               overwrite=overwrite, voice=voice, progress=progress)
        # a registry on object storage: staged here, then copied beside the voice's files
        if registry.has_folder(voice_id, ONNX_FOLDER) and not overwrite:
            raise FileExistsError(f"voice {voice_id!r} already has an ONNX export in {registry.uri}; pass "
                                  "--overwrite to replace it")
        exported = export_onnx(gpt, sovits, pretrained, Path(tmp) / ONNX_FOLDER, int8=int8, voice=voice,
                               progress=progress)
        registry.store_folder(voice_id, ONNX_FOLDER, exported.folder)
    return replace(exported, folder=f"{registry.uri.rstrip('/')}/voices/{voice_id}/{ONNX_FOLDER}")
