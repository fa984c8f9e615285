"""Export a voice and its pretrained parts as ONNX graphs for `voicefleet.inference.onnx_engine`.

    voicefleet export onnx --gpt voice.ckpt --sovits voice.pth --pretrained pretrained_models -o voice-onnx

One folder holds everything the engine needs, so it runs without PyTorch:

| file | graph |
|---|---|
| `gpt_text.onnx` | one text's phonemes + BERT features -> embeddings |
| `gpt_prefill.onnx` | embedded texts + prompt tokens -> first logits and the key/value cache |
| `gpt_step.onnx` | one token per row + the cache -> logits and the cache one position longer |
| `sovits_decode.onnx` | semantic tokens + phonemes + reference spectrogram + noise -> audio |
| `sovits_latent.onnx` | HuBERT features -> the reference's prompt tokens |
| `hubert.onnx` | 16 kHz audio -> HuBERT features |
| `bert.onnx` + `tokenizer.json` | token ids -> BERT hidden states (Chinese text features) |

and `manifest.json`: versions, every graph's inputs and outputs (names, shapes with named dynamic
axes, types), opset, the configs the engine needs, the fingerprints of the source weights and of
every file written. `int8=True` also applies onnxruntime's dynamic int8 quantisation to the GPT
and BERT graphs (weights int8, activations quantised on the fly); the SoVITS decoder stays fp32.

The folder is staged beside its destination and renamed into place, so a failed export leaves
nothing half-written; an existing folder is kept unless `overwrite`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from voicefleet import __version__
from voicefleet.inference.onnx_engine import (FORMAT, FORMAT_VERSION, GRAPHS, MANIFEST_FILE, ONNX_MODEL_VERSIONS,
                                             TOKENIZER_FILE, file_sha256)
from voicefleet.inference.onnx_graphs import (MAX_POSITIONS, BertGraph, GPTPrefill, GPTStep, GPTTextEmbedding,
                                              HubertGraph, SoVITSDecode, SoVITSLatent)
from voicefleet.models.checkpoint.files import atomic_folder
from voicefleet.models.checkpoint.gpt_io import load_gpt
from voicefleet.models.checkpoint.sovits_io import load_sovits
from voicefleet.models.config import SAMPLE_RATE, SSL_SAMPLE_RATE
from voicefleet.models.features import REFERENCE_PAUSE_S, BertFeatures, HubertFeatures
from voicefleet.models.pretrained import PretrainedPaths

logger = logging.getLogger(__name__)

OPSET = 17
QUANTIZED_GRAPHS = ("gpt_text", "gpt_prefill", "gpt_step", "bert")  # what int8 quantises


@dataclass(frozen=True)
class OnnxExport:
    folder: Path
    manifest: dict[str, Any]


def _folder_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _export(module: nn.Module, args: tuple, path: Path, inputs: dict[str, dict[int, str]],
            outputs: dict[str, dict[int, str]]) -> None:
    """Trace `module` on `args` into `path` with named inputs/outputs and named dynamic axes.

    The tracer's warnings are silenced: every Python-level branch it freezes was checked to be one
    that does not depend on the traced lengths (the parity tests run other lengths than these).
    """
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", module=r"torch\.onnx.*")
        torch.onnx.export(module.eval(), args, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={**{k: v for k, v in inputs.items() if v}, **{k: v for k, v in outputs.items() if v}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _describe(path: Path, axes: dict[str, dict[int, str]]) -> dict[str, Any]:
    """Inputs and outputs of the written graph: name, type and shape (named axes for dynamic ones)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def value(v) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        return {"name": v.name, "type": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape}

    return {"inputs": [value(v) for v in model.graph.input], "outputs": [value(v) for v in model.graph.output]}


def _quantize(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staged = path.with_suffix(".int8.onnx")
    quantize_dynamic(str(path), str(staged), weight_type=QuantType.QInt8)
    staged.replace(path)


Graph = tuple[nn.Module, tuple, dict[str, dict[int, str]], dict[str, dict[int, str]]]


def voice_graphs(gpt, sovits) -> dict[str, Graph]:
    """The voice's graphs: name -> (module, example inputs, input axes, output axes); the example
    sizes are arbitrary (every length is a dynamic axis)."""
    gcfg, scfg = gpt.config, sovits.config
    heads, head_dim = gcfg.head, gcfg.hidden_dim // gcfg.head
    text_len, prompt_len, past = 5, 4, 9
    cache = torch.zeros(gcfg.n_layer, 2, heads, past, head_dim)
    return {
        "gpt_text": (GPTTextEmbedding(gpt),
                     (torch.zeros(1, text_len, dtype=torch.long), torch.zeros(1, gcfg.bert_dim, text_len)),
                     {"phonemes": {1: "text_len"}, "bert": {2: "text_len"}}, {"text_embeddings": {1: "text_len"}}),
        "gpt_prefill": (GPTPrefill(gpt),
                        (torch.zeros(2, text_len, gcfg.hidden_dim), torch.ones(2, text_len, dtype=torch.bool),
                         torch.zeros(2, prompt_len, dtype=torch.long)),
                        {"text_embeddings": {0: "batch", 1: "text_len"}, "text_mask": {0: "batch", 1: "text_len"},
                         "prompt_tokens": {0: "batch", 1: "prompt_len"}},
                        {"logits": {0: "batch"}, "keys": {1: "batch", 3: "positions"},
                         "values": {1: "batch", 3: "positions"}}),
        "gpt_step": (GPTStep(gpt),
                     (torch.zeros(2, 1, dtype=torch.long), torch.tensor([past]),
                      torch.ones(2, past + 1, dtype=torch.bool), cache, cache.clone()),
                     {"tokens": {0: "batch"}, "position": {}, "key_mask": {0: "batch", 1: "positions_next"},
                      "past_keys": {1: "batch", 3: "positions"}, "past_values": {1: "batch", 3: "positions"}},
                     {"logits": {0: "batch"}, "keys": {1: "batch", 3: "positions_next"},
                      "values": {1: "batch", 3: "positions_next"}}),
        "sovits_decode": (SoVITSDecode(sovits),
                          (torch.zeros(1, 1, 6, dtype=torch.long), torch.zeros(1, 7, dtype=torch.long),
                           torch.rand(1, scfg.audio.spec_channels, 20), torch.zeros(1, scfg.inter_channels, 12),
                           torch.tensor([0.5])),
                          {"codes": {2: "tokens"}, "phonemes": {1: "phonemes"}, "refer_spec": {2: "spec_frames"},
                           "noise": {2: "prior_frames"}, "noise_scale": {}},
                          {"audio": {2: "samples"}}),
        "sovits_latent": (SoVITSLatent(sovits), (torch.zeros(1, scfg.ssl_dim, 20),),
                          {"ssl": {2: "ssl_frames"}}, {"codes": {2: "tokens"}}),
    }


def write_graphs(graphs: dict[str, Graph], folder: Path, *, int8: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Export each graph into `folder` (int8: quantise those in `QUANTIZED_GRAPHS`); their manifest entries."""
    described = {}
    for name, (module, args, inputs, outputs) in graphs.items():
        if progress:
            progress(name)
        path = folder / f"{name}.onnx"
        _export(module, args, path, inputs, outputs)
        if int8 and name in QUANTIZED_GRAPHS:
            _quantize(path)
        described[name] = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
                           "int8": bool(int8 and name in QUANTIZED_GRAPHS), **_describe(path, outputs)}
    return described


def export_onnx(gpt_path: str | Path, sovits_path: str | Path, pretrained: PretrainedPaths, out: str | Path, *,
                int8: bool = False, overwrite: bool = False, voice: dict[str, Any] | None = None,
                progress: Callable[[str], None] | None = None) -> OnnxExport:
    """Export a voice (GPT .ckpt + SoVITS .pth) and the pretrained HuBERT/BERT into folder `out`.

    `voice` (optional) is stored in the manifest as is (e.g. the registry id, prompt transcript
    and language); a `reference` path in it is copied into the folder as `reference.wav`.
    """
    try:
        import onnx  # noqa: F401  (torch's exporter and the int8 quantiser write through it)
    except ImportError:
        raise ValueError("exporting ONNX needs the onnx package: pip install 'voicefleet[onnx]'") from None
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    step = progress or (lambda name: None)
    gpt, _, _ = load_gpt(gpt_path)
    gpt = gpt.eval()
    loaded = load_sovits(sovits_path)
    if loaded.version not in ONNX_MODEL_VERSIONS:
        # v2Pro/v2ProPlus decoding also needs the speaker-verification embedding, which no graph carries
        raise ValueError(f"{sovits_path} is a {loaded.version} SoVITS; the ONNX export covers "
                         f"{', '.join(ONNX_MODEL_VERSIONS)} voices only (serve this one on the torch engine)")
    sovits = loaded.model.prepare_for_inference()
    hubert = HubertFeatures.from_pretrained(pretrained.hubert)
    bert = BertFeatures.from_pretrained(pretrained.bert)
    gcfg, scfg = gpt.config, sovits.config
    heads, head_dim = gcfg.head, gcfg.hidden_dim // gcfg.head

    with atomic_folder(out, replace=overwrite) as stage:
        stage = Path(stage)
        graphs = {
            **voice_graphs(gpt, sovits),
            "hubert": (HubertGraph(hubert), (torch.rand(1, SSL_SAMPLE_RATE) - 0.5,), {"wave": {1: "samples"}},
                       {"ssl": {2: "ssl_frames"}}),
            "bert": (BertGraph(bert),
                     (torch.tensor([[101, 872, 1962, 102]]), torch.ones(1, 4, dtype=torch.long),
                      torch.zeros(1, 4, dtype=torch.long)),
                     {"input_ids": {1: "tokens"}, "attention_mask": {1: "tokens"}, "token_type_ids": {1: "tokens"}},
                     {"hidden_states": {1: "tokens"}}),
        }
        backend = getattr(bert.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ValueError(f"{pretrained.bert}: the BERT tokenizer is not a fast (tokenizers) one; "
                             "the ONNX engine needs its tokenizer.json")
        backend.save(str(stage / TOKENIZER_FILE))
        assert tuple(graphs) == GRAPHS, "every graph the engine opens is exported"
        described = write_graphs(graphs, stage, int8=int8, progress=step)
        voice_info = dict(voice or {})
        if voice_info.get("reference"):
            shutil.copyfile(voice_info["reference"], stage / "reference.wav")
            voice_info["reference"] = "reference.wav"
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": {"voicefleet": __version__, "torch": torch.__version__, "onnx_opset": OPSET,
                         "onnx": _module_version("onnx"), "onnxruntime": _module_version("onnxruntime")},
            "precision": "int8" if int8 else "fp32",
            "gpt": {"layers": gcfg.n_layer, "heads": heads, "head_dim": head_dim, "hidden_dim": gcfg.hidden_dim,
                    "bert_dim": gcfg.bert_dim, "vocab_size": gcfg.vocab_size, "eos": gcfg.EOS,
                    "max_positions": MAX_POSITIONS},
            "sovits": {"inter_channels": scfg.inter_channels, "audio": asdict(scfg.audio)},
            "hubert": {"min_samples": hubert.min_samples,
                       # the official silence after a 16 kHz reference clip (`pad_reference_16k`)
                       "reference_pad_samples": int(SAMPLE_RATE * REFERENCE_PAUSE_S)},
            "bert": {"max_tokens": bert.max_tokens, "hidden": bert.hidden_size},
            "sources": {"gpt": {"path": str(gpt_path), "sha256": file_sha256(gpt_path)},
                        "sovits": {"path": str(sovits_path), "sha256": file_sha256(sovits_path)},
                        "hubert": {"path": str(pretrained.hubert), "sha256": _folder_fingerprint(Path(pretrained.hubert))},
                        "bert": {"path": str(pretrained.bert), "sha256": _folder_fingerprint(Path(pretrained.bert))}},
            "graphs": described,
            "voice": voice_info,
        }
        (stage / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                             encoding="utf-8")
    logger.info("exported %s to %s (%s)", gpt_path, out, manifest["precision"])
    return OnnxExport(out, manifest)


def _module_version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except ImportError:
        return None
