"""The Ray Data stages of `prepare_dataset`: CPU functions and model actors over Arrow batches.

Every stage takes and returns a `pyarrow.Table` with `WORK_SCHEMA`: one row per list row, filled in
as it moves through the stages. A row that fails a check gets a `reason` and is passed through
untouched by later stages, so the driver receives every row exactly once.

* `decode_and_check` (CPU task): read the file, decode and resample to 32 kHz, run the quality
  checks, normalise loudness, make the 16 kHz HuBERT input.
* `TextStage` (actor): text normalisation and G2P for every row, BERT features for Chinese rows,
  as the official ``1-get-text.py`` does in one process. It is an actor, not a task, because the
  text front end is a model too (jieba's dictionary, the English lexicon and neural G2P): it
  loads in seconds, once per actor instead of once per task worker process.
* `AudioFeatureStage` (actor): HuBERT features and SoVITS semantic tokens (official
  ``2-get-hubert-wav32k.py`` and ``3-get-semantic.py``); with a v2Pro/v2ProPlus pretrained folder
  also each clip's speaker-verification embedding (`SpeakerEmbedder`, official ``2-get-sv.py``).
  The embedding shares the actor (and its GPU) rather than having a pool of its own: it is one
  more small network over the same audio, and a third pool would not fit a 2-core machine.
* `finalize` (CPU task): storage dtype of the audio; drops the intermediate column.

Rows go through each model one at a time: padding a batch would change HuBERT's group norm, and
batched matrix products may round differently from unbatched ones, so batching would make the
dataset depend on how Ray happened to group rows.
"""

from __future__ import annotations

import io
import logging
import re
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import soundfile

from voicefleet.models.audio import load_audio
from voicefleet.models.config import SAMPLE_RATE

from voicefleet.platform.data import quality, uris
from voicefleet.platform.data.quality import RejectReason
from voicefleet.platform.data.schema import SV_COLUMN, list_column, list_values, to_f16_blob
from voicefleet.platform.data.transcripts import BertPiece, transcribe

logger = logging.getLogger(__name__)

WORK_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("line", pa.int32()), ("source", pa.string()), ("speaker", pa.string()),
    ("lang_code", pa.string()), ("lang", pa.string()), ("text", pa.string()), ("row_key", pa.string()),
    ("audio_sha256", pa.string()),
    ("reason", pa.string()), ("detail", pa.string()),
    ("duration_s", pa.float32()), ("spectral_entropy", pa.float32()),
    ("audio_32k", pa.list_(pa.float32())),  # normalised; int16 after `finalize` when so configured
    ("hubert_input", pa.list_(pa.float32())),  # 16 kHz, official scale; dropped by the audio stage
    ("norm_text", pa.string()), ("phones", pa.list_(pa.string())), ("phone_ids", pa.list_(pa.int32())),
    ("word2ph", pa.list_(pa.int32())),
    ("hubert_shape", pa.list_(pa.int32())), ("hubert", pa.binary()), ("semantic", pa.list_(pa.int32())),
    ("bert_shape", pa.list_(pa.int32())), ("bert", pa.binary()),
    (SV_COLUMN, pa.list_(pa.float32())),  # v2Pro only: filled by `AudioFeatureStage`
])
INPUT_COLUMNS = ("clip_id", "line", "source", "speaker", "lang_code", "lang", "text", "row_key", "audio_sha256")
_NUMERIC_LISTS = ("audio_32k", "hubert_input", SV_COLUMN)  # carried as numpy arrays, not Python lists


# --- batches as columns ---------------------------------------------------------------------------

def read_batch(table: pa.Table) -> dict[str, list]:
    """Columns of a work batch as Python lists; numeric list columns as numpy arrays (or None)."""
    out: dict[str, list] = {}
    for name in WORK_SCHEMA.names:
        if name not in table.column_names:
            out[name] = [None] * table.num_rows
        elif name in _NUMERIC_LISTS:
            out[name] = list_values(table.column(name))
        else:
            out[name] = table.column(name).to_pylist()
    return out


def write_batch(columns: dict[str, list], schema: pa.Schema = WORK_SCHEMA) -> pa.Table:
    arrays = [list_column(columns[f.name], f.type.value_type) if f.name in _NUMERIC_LISTS
              else pa.array(columns[f.name], type=f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def input_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A work table for new input rows: the `INPUT_COLUMNS` set, everything else null."""
    return write_batch({name: [row.get(name) for row in rows] for name in WORK_SCHEMA.names})


def _reject(columns: dict[str, list], i: int, reason: RejectReason, detail: str) -> None:
    columns["reason"][i] = reason.value
    columns["detail"][i] = detail


# --- stage 1: decode and check --------------------------------------------------------------------

def wav_truncation(data: bytes) -> str | None:
    """For a RIFF/WAVE file: a message if its data chunk declares more bytes than the file holds.

    libsndfile reads such a file without complaint (it just returns fewer frames), so a copy or
    download that stopped early would otherwise pass as a shorter clip with the full transcript.
    """
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return None
    endian = "<" if data[:4] == b"RIFF" else ">"
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        (size,) = struct.unpack(endian + "I", data[pos + 4:pos + 8])
        if chunk_id == b"data":
            available = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and size > available:  # 0 / -1: streaming writers leave it open
                return f"WAV data chunk declares {size} bytes but the file holds {available}"
            return None
        pos += 8 + size + (size & 1)
    return None


def _decoder_message(error: Exception) -> str:
    # libsndfile names the in-memory file by its repr (with an address); keep the message stable
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", str(error))


def decode_and_check(batch: pa.Table, *, settings: dict) -> pa.Table:
    """Stage 1 (CPU): decode to 32 kHz, check, normalise; see the module docstring."""
    from voicefleet.platform.data.config import PrepareConfig

    config = PrepareConfig.model_validate(settings)
    thresholds = config.thresholds()
    columns = read_batch(batch)
    for i in range(batch.num_rows):
        if columns["reason"][i] is not None:
            continue
        source = columns["source"][i]
        try:
            data = uris.read_bytes(source)
        except FileNotFoundError:
            _reject(columns, i, RejectReason.MISSING_FILE, f"no such file: {source}")
            continue
        truncated = wav_truncation(data)
        if truncated:
            _reject(columns, i, RejectReason.TRUNCATED_FILE, truncated)
            continue
        try:
            # native-rate samples for the plateau check (resampling smooths clipped tops away)
            native, _ = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
            wave = load_audio(data, SAMPLE_RATE)
        except (ValueError, RuntimeError, soundfile.LibsndfileError) as e:
            _reject(columns, i, RejectReason.CORRUPT_FILE, f"not readable audio: {_decoder_message(e)}")
            continue
        report = quality.check_clip(wave, None, thresholds, native=native)
        columns["duration_s"][i] = report.duration_s
        columns["spectral_entropy"][i] = report.spectral_entropy
        if report.reason is not None:
            _reject(columns, i, report.reason, report.detail)
            continue
        normalized = quality.normalize_loudness(wave, config.norm_peak, config.norm_alpha)
        columns["audio_32k"][i] = normalized
        columns["hubert_input"][i] = quality.hubert_input(normalized, config.hubert_input_scale)
    return write_batch(columns)


# --- model stages -------------------------------------------------------------------------------------

def _device(num_gpus: float):
    import torch

    if num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if num_gpus > 0:
        logger.warning("num_gpus=%s requested but CUDA is not available; running on the CPU", num_gpus)
    return torch.device("cpu")


class AudioFeatureStage:
    """Actor: HuBERT content features (50 Hz) and SoVITS semantic tokens (25 Hz) of each kept row.

    Only the SoVITS parts that make tokens (``ssl_proj`` and the quantizer) are kept after loading.
    """

    def __init__(self, hubert_dir: str, sovits_path: str, torch_threads: int = 1, num_gpus: float = 0.0,
                 sv_path: str | None = None, audio_dtype: str = "int16"):
        import torch

        from voicefleet.models.checkpoint.sovits_io import load_sovits
        from voicefleet.models.features import HubertFeatures

        torch.set_num_threads(torch_threads)
        self.device = _device(num_gpus)
        self.hubert = HubertFeatures.from_pretrained(hubert_dir).to(self.device).eval()
        sovits = load_sovits(sovits_path).model
        self.tokenizer = torch.nn.ModuleDict({"ssl_proj": sovits.ssl_proj, "quantizer": sovits.quantizer})
        self.tokenizer.to(self.device).eval()
        del sovits
        self.speaker = SpeakerEmbedder(sv_path, audio_dtype, self.device) if sv_path is not None else None

    def semantic_tokens(self, features):
        """HuBERT features `(1, 768, frames)` -> tokens `(frames // 2,)` (official ``extract_latent``)."""
        codes = self.tokenizer["quantizer"].encode(self.tokenizer["ssl_proj"](features))  # (1, 1, frames // 2)
        return codes[0, 0]

    def __call__(self, batch: pa.Table) -> pa.Table:
        import torch

        columns = read_batch(batch)
        for i in range(batch.num_rows):
            wave = columns["hubert_input"][i]
            columns["hubert_input"][i] = None  # no longer needed downstream
            if columns["reason"][i] is not None:
                continue
            with torch.no_grad():
                features = self.hubert(torch.from_numpy(np.array(wave, dtype=np.float32))[None].to(self.device))
                if not torch.isfinite(features).all():
                    _reject(columns, i, RejectReason.FEATURE_ERROR, "HuBERT features contain NaN or inf")
                    continue
                tokens = self.semantic_tokens(features)
            columns["hubert_shape"][i], columns["hubert"][i] = to_f16_blob(features[0].float().cpu().numpy())
            columns["semantic"][i] = tokens.cpu().numpy().astype(np.int32).tolist()
            if self.speaker is not None:
                emb = self.speaker.embedding(columns["audio_32k"][i])
                if not np.isfinite(emb).all():
                    _reject(columns, i, RejectReason.FEATURE_ERROR,
                            "the speaker-verification embedding contains NaN or inf")
                    continue
                columns[SV_COLUMN][i] = emb
        return write_batch(columns)


class TextStage:
    """Actor: normalised text, phones, ids and word2ph of each kept row; `(1024, phones)` BERT
    features for Chinese rows (zeros under English pieces, as official inference gives them)."""

    def __init__(self, bert_dir: str, torch_threads: int = 1, num_gpus: float = 0.0, load_bert: bool = True,
                 g2pw_model: str | None = None):
        import torch

        from voicefleet.models.features import BertFeatures
        from voicefleet.text import g2pw

        g2pw.enable(g2pw_model, bert_dir)  # None keeps the dictionary readings

        torch.set_num_threads(torch_threads)
        self.device = _device(num_gpus)
        self.bert = BertFeatures.from_pretrained(bert_dir).to(self.device).eval() if load_bert else None

    def features(self, pieces: list[BertPiece], n_phones: int) -> np.ndarray:
        """BERT features of a transcript's Chinese pieces, `(hidden, n_phones)` float32."""
        if self.bert is None:
            raise RuntimeError("this TextStage was built without BERT (load_bert=False)")
        out = np.zeros((self.bert.hidden_size, n_phones), dtype=np.float32)
        for piece in pieces:
            feats = self.bert.phone_level_features(piece.norm_text, piece.word2ph).cpu().numpy()
            if piece.phone_start + feats.shape[1] > n_phones:
                raise ValueError(f"BERT piece {piece.norm_text!r} runs past the transcript's {n_phones} phones")
            out[:, piece.phone_start:piece.phone_start + feats.shape[1]] = feats
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        from voicefleet.text.frontend import TextFrontendError

        columns = read_batch(batch)
        for i in range(batch.num_rows):
            if columns["reason"][i] is not None:
                continue
            try:
                result = transcribe(columns["text"][i], columns["lang"][i])
                bert = self.features(result.bert_pieces, len(result.phones)) if columns["lang"][i] == "zh" else None
            except (TextFrontendError, ValueError, KeyError) as e:
                _reject(columns, i, RejectReason.TEXT_ERROR, str(e))
                continue
            columns["norm_text"][i] = result.norm_text
            columns["phones"][i] = list(result.phones)
            columns["phone_ids"][i] = [int(p) for p in result.phone_ids]
            columns["word2ph"][i] = None if result.word2ph is None else [int(n) for n in result.word2ph]
            if bert is not None:
                columns["bert_shape"][i], columns["bert"][i] = to_f16_blob(bert)
        return write_batch(columns)


class SpeakerEmbedder:
    """The speaker-verification embedding `(sv_dim,)` of a clip (v2Pro/v2ProPlus datasets).

    The official chain (``2-get-sv.py``): 32 kHz -> 16 kHz -> Kaldi fbank -> ERes2NetV2 feature-map
    embedding, computed from the clip as stored: with int16 storage the audio is rounded to int16
    first, as reading the official ``5-wav32k`` file does.
    """

    def __init__(self, sv_path: str, audio_dtype: str, device):
        from voicefleet.models.checkpoint.speaker_io import load_speaker_verifier

        self.device = device
        self.verifier = load_speaker_verifier(sv_path).to(device).eval()
        self.audio_dtype = audio_dtype

    def embedding(self, audio: np.ndarray) -> np.ndarray:
        """Normalised 32 kHz audio `(samples,)` -> `(sv_dim,)` float32."""
        import torch

        from voicefleet.models.speaker_frontend import speaker_features

        if self.audio_dtype == "int16":
            audio = quality.to_pcm16(audio).astype(np.float32) / 32768.0
        wave = torch.from_numpy(np.asarray(audio, dtype=np.float32))[None].to(self.device)
        with torch.no_grad():
            emb = self.verifier.feature_map_embedding(speaker_features(wave, SAMPLE_RATE))
        return emb[0].float().cpu().numpy()


# --- last stage ---------------------------------------------------------------------------------------

def result_schema(audio_dtype: str, speaker_embedding: bool = False) -> pa.Schema:
    """`WORK_SCHEMA` without the intermediate columns, with the configured audio type; the
    `sv_emb` column only when `speaker_embedding` (v2Pro datasets)."""
    dropped = {"hubert_input"} | (set() if speaker_embedding else {SV_COLUMN})
    fields = [f for f in WORK_SCHEMA if f.name not in dropped]
    audio_type = pa.list_(pa.int16() if audio_dtype == "int16" else pa.float32())
    return pa.schema([pa.field("audio_32k", audio_type) if f.name == "audio_32k" else f for f in fields])


def finalize(batch: pa.Table, *, audio_dtype: str, speaker_embedding: bool = False) -> pa.Table:
    """Last stage (CPU): audio in its storage dtype; intermediate columns dropped."""
    columns = read_batch(batch)
    if audio_dtype == "int16":
        columns["audio_32k"] = [None if a is None else quality.to_pcm16(a) for a in columns["audio_32k"]]
    return write_batch(columns, result_schema(audio_dtype, speaker_embedding))
