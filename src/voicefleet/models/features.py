"""Frozen feature extractors of GPT-SoVITS v2: HuBERT content features and BERT text features.

Both are loaded from the official folders a user already owns (``chinese-hubert-base`` and
``chinese-roberta-wwm-ext-large``), from local paths only: nothing here ever asks a hub.

* `HubertFeatures` turns 16 kHz audio into the 768-channel, 50 Hz features that SoVITS' ``ssl_proj``
  quantises into semantic codes.
* `BertFeatures` turns normalised Chinese text into one 1024-channel vector per phone, the GPT's
  ``bert_feature`` input.

`write_tiny_hubert` / `write_tiny_bert` write random-initialised folders in the official layout so
tests never need the real weights; `write_full_hubert` / `write_full_bert` do the same at the
official sizes for benchmarks.

Two transformers 5 behaviours matter for parity with the official code (which ran transformers 4):
``from_pretrained`` now loads weights in their *stored* dtype (the official HuBERT folder ships
float16), so both loaders force float32 the way transformers 4 did; and old key names
(``weight_g``/``weight_v`` of HuBERT's positional conv) are still renamed on load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from voicefleet.models.checkpoint.errors import CheckpointError
from voicefleet.models.config import BERT_DIM, SAMPLE_RATE, SSL_DIM, SSL_SAMPLE_RATE

logger = logging.getLogger(__name__)

__all__ = [
    "BertFeatures",
    "HubertFeatures",
    "REFERENCE_MAX_SAMPLES_16K",
    "REFERENCE_MIN_SAMPLES_16K",
    "REFERENCE_PAUSE_S",
    "pad_reference_16k",
]

# --- official constants -------------------------------------------------------------------------

# The official inference appends `int(sovits_sampling_rate * 0.3)` zeros to the 16 kHz reference
# clip: it multiplies by the SoVITS rate (32 kHz in v2), not by 16 kHz, so the pad is 9600 samples,
# i.e. 0.6 s of silence at 16 kHz. We reproduce the sample count, not the intent.
REFERENCE_PAUSE_S = 0.3
# Official reference-clip bounds at 16 kHz (3 s to 10 s); outside them official inference refuses.
REFERENCE_MIN_SAMPLES_16K = 48_000
REFERENCE_MAX_SAMPLES_16K = 160_000

# Wav2Vec2FeatureExtractor adds this to the variance before the square root.
_FEATURE_EXTRACTOR_VARIANCE_EPS = 1e-7
# The official text feature is hidden_states[-3]: the output of the third-to-last encoder layer.
_BERT_HIDDEN_STATE_INDEX = -3

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")

# chinese-hubert-base (HuBERT base): the conv feature encoder's strides multiply to 320 samples,
# i.e. 50 frames per second at 16 kHz.
_OFFICIAL_HUBERT = dict(
    hidden_size=SSL_DIM,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    feat_extract_norm="group",
    feat_extract_activation="gelu",
    feat_proj_layer_norm=True,
    do_stable_layer_norm=False,
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    vocab_size=32,
)
_OFFICIAL_HUBERT_PREPROCESSOR = dict(
    feature_size=1,
    sampling_rate=SSL_SAMPLE_RATE,
    padding_value=0.0,
    do_normalize=True,
    return_attention_mask=False,  # group-norm HuBERT is run without an attention mask
)
# chinese-roberta-wwm-ext-large (a BERT-large masked LM despite the name).
_OFFICIAL_BERT = dict(
    vocab_size=21128,
    hidden_size=BERT_DIM,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    hidden_act="gelu",
    max_position_embeddings=512,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
    pad_token_id=0,
)


# --- folder checks --------------------------------------------------------------------------------


def _read_folder_config(folder: Path, *, kind: str, model_type: str, needs: dict[str, Sequence[str]]) -> dict:
    """Check that `folder` is a transformers folder of `model_type` holding every file in `needs`.

    `needs` maps a description to alternative file names (any one of them will do). Returns the
    parsed config.json. Raises `CheckpointError` naming the folder and the missing or wrong file.
    """
    if not folder.is_dir():
        raise CheckpointError(folder, f"is not a folder; expected the {kind} folder (a transformers model folder)")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(folder, f"is not a {kind} folder: config.json is missing")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(config_path, f"cannot be read as JSON ({exc})") from exc
    found_type = config.get("model_type")
    if found_type != model_type:
        raise CheckpointError(
            folder, f"is not a {kind} folder: config.json has model_type {found_type!r}, expected {model_type!r}"
        )
    for what, names in needs.items():
        if not any((folder / name).is_file() for name in names):
            listed = " or ".join(names)
            raise CheckpointError(folder, f"is not a complete {kind} folder: {what} missing (looked for {listed})")
    return config


def _check_loading_info(folder: Path, info: dict[str, Any], *, allowed_missing: Sequence[str] = ()) -> None:
    """Refuse a load that left weights randomly initialised."""
    missing = [k for k in info.get("missing_keys", []) if not any(k.startswith(p) for p in allowed_missing)]
    if missing:
        raise CheckpointError(folder, f"weights are missing {len(missing)} key(s), e.g. {sorted(missing)[:5]}")
    unexpected = info.get("unexpected_keys", [])
    if unexpected:
        logger.info("%s: ignoring %d stored key(s) the model does not use, e.g. %s", folder, len(unexpected),
                    sorted(unexpected)[:3])
    mismatched = info.get("mismatched_keys", [])
    if mismatched:
        raise CheckpointError(
            folder, f"weights have {len(mismatched)} key(s) of the wrong shape, e.g. {mismatched[:3]}"
        )


# --- HuBERT -------------------------------------------------------------------------------------


def pad_reference_16k(
    wave: Tensor,
    *,
    pause_s: float = REFERENCE_PAUSE_S,
    sovits_sample_rate: int = SAMPLE_RATE,
    check_duration: bool = False,
) -> Tensor:
    """Append the silence the official inference appends to a 16 kHz reference clip before HuBERT.

    The official code appends ``int(sovits_sample_rate * pause_s)`` zeros (9600 for v2's 32 kHz),
    i.e. 0.6 s at 16 kHz although the setting reads 0.3 s. Only the prompt's semantic codes see
    this pad; training features are computed on unpadded clips.

    Args:
        wave: ``(samples,)`` or ``(batch, samples)`` audio at 16 kHz.
        pause_s: the official pause setting (0.3 s, the webui's default and the TTS backend's fixed value).
        sovits_sample_rate: the SoVITS model's rate, which the official code multiplies by.
        check_duration: raise, as official inference does, if the clip is outside 3..10 s.

    Returns:
        ``wave`` with the zeros appended on the last dim, same dtype and device.
    """
    if wave.dim() not in (1, 2):
        raise ValueError(f"wave must be (samples,) or (batch, samples), got shape {tuple(wave.shape)}")
    samples = wave.shape[-1]
    if check_duration and not REFERENCE_MIN_SAMPLES_16K <= samples <= REFERENCE_MAX_SAMPLES_16K:
        raise ValueError(
            f"reference clip has {samples} samples ({samples / SSL_SAMPLE_RATE:.2f} s at 16 kHz); "
            f"the official range is {REFERENCE_MIN_SAMPLES_16K}..{REFERENCE_MAX_SAMPLES_16K} samples (3..10 s)"
        )
    pad = int(sovits_sample_rate * pause_s)
    return torch.nn.functional.pad(wave, (0, pad))


class HubertFeatures(nn.Module):
    """chinese-hubert-base as GPT-SoVITS uses it: 16 kHz audio -> ``last_hidden_state`` at 50 Hz.

    Input is mono audio at 16 kHz (the official feature extractor's rate); nothing is resampled
    here. For a reference clip, official inference first appends silence: call `pad_reference_16k`
    before this module. The official dataset preparation instead feeds a loudness-mixed clip
    multiplied by 1145.14 (so roughly +-1000, not +-1); that scaling belongs to the data pipeline.
    HuBERT base group-normalises its first (bias-free) conv layer over time, which cancels input
    scale and DC offset except through the norm's eps, so such scalings change features only for
    very quiet clips.

    Normalisation: the official ``CNHubert`` wrapper owns a ``Wav2Vec2FeatureExtractor`` whose
    config says ``do_normalize`` (per-clip zero mean, unit variance, eps 1e-7), but every v2 code
    path -- dataset preparation and both inference front ends -- calls the wrapped ``HubertModel``
    directly and skips it. So ``normalize=False`` (the default) is what the official semantic codes
    were computed with; ``normalize=True`` reproduces the wrapper's ``forward`` (normalisation only
    if the folder's ``do_normalize`` is true).

    The module is frozen: parameters need no grad and the inner model stays in eval mode even if a
    parent calls ``.train()`` (dropout, layer drop and SpecAugment masking would change features).
    """

    def __init__(self, model: nn.Module, *, normalize: bool = False):
        super().__init__()
        self.model = model
        self.normalize = normalize
        config = model.config
        self.hidden_size: int = config.hidden_size
        self.conv_kernel: tuple[int, ...] = tuple(config.conv_kernel)
        self.conv_stride: tuple[int, ...] = tuple(config.conv_stride)
        self.samples_per_frame = 1
        for stride in self.conv_stride:
            self.samples_per_frame *= stride
        # fewest samples that give one frame: walk the conv stack backwards from one output frame
        needed = 1
        for kernel, stride in zip(reversed(self.conv_kernel), reversed(self.conv_stride)):
            needed = (needed - 1) * stride + kernel
        self.min_samples = needed
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(cls, folder: str | Path, *, normalize: bool = False) -> "HubertFeatures":
        """Load a ``chinese-hubert-base`` folder (config.json, weights, preprocessor_config.json).

        Weights are loaded as float32 whatever their stored dtype, as the official code got them.
        Raises `CheckpointError` naming the folder and the missing file when it is not such a folder.
        """
        from transformers import HubertModel

        folder = Path(folder)
        _read_folder_config(
            folder,
            kind="HuBERT (chinese-hubert-base)",
            model_type="hubert",
            needs={"weights": _WEIGHT_FILES, "feature extractor config": ("preprocessor_config.json",)},
        )
        preprocessor_path = folder / "preprocessor_config.json"
        try:
            preprocessor = json.loads(preprocessor_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(preprocessor_path, f"cannot be read as JSON ({exc})") from exc
        rate = preprocessor.get("sampling_rate", SSL_SAMPLE_RATE)
        if rate != SSL_SAMPLE_RATE or preprocessor.get("feature_size", 1) != 1:
            raise CheckpointError(
                preprocessor_path,
                f"expects sampling_rate {rate} and feature_size {preprocessor.get('feature_size')}; "
                f"GPT-SoVITS needs mono 16 kHz ({SSL_SAMPLE_RATE}, 1)",
            )
        do_normalize = bool(preprocessor.get("do_normalize", True))
        if normalize and not do_normalize:
            logger.info("%s: do_normalize is false, so normalize=True changes nothing", preprocessor_path)
        model, info = HubertModel.from_pretrained(
            str(folder), local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
        # masked_spec_embed is only used for SpecAugment in training; some exports drop it
        _check_loading_info(folder, info, allowed_missing=("masked_spec_embed",))
        logger.info("loaded HuBERT from %s (%d layers, hidden %d)", folder, model.config.num_hidden_layers,
                    model.config.hidden_size)
        return cls(model, normalize=normalize and do_normalize)

    def train(self, mode: bool = True) -> "HubertFeatures":
        super().train(mode)
        self.model.eval()  # frozen feature extractor, see the class docstring
        return self

    def num_frames(self, samples: int | Tensor) -> int | Tensor:
        """Frames HuBERT's conv stack yields for `samples` input samples (16000 -> 49)."""
        frames = samples
        for kernel, stride in zip(self.conv_kernel, self.conv_stride):
            frames = (frames - kernel) // stride + 1
        return frames

    def _normalize_rows(self, wave: Tensor) -> Tensor:
        """Per-row zero mean / unit variance, as Wav2Vec2FeatureExtractor does for one clip."""
        stats = wave.double()
        mean = stats.mean(dim=-1, keepdim=True)
        var = stats.var(dim=-1, unbiased=False, keepdim=True)
        return ((stats - mean) / torch.sqrt(var + _FEATURE_EXTRACTOR_VARIANCE_EPS)).to(wave.dtype)

    def _encode(self, wave: Tensor) -> Tensor:
        if self.normalize:
            wave = self._normalize_rows(wave)
        hidden = self.model(wave).last_hidden_state  # (batch, frames, hidden)
        return hidden.transpose(1, 2)

    @torch.no_grad()
    def forward(self, wave: Tensor, lengths: Tensor | Sequence[int] | None = None) -> Tensor:
        """Content features of 16 kHz audio.

        Args:
            wave: ``(batch, samples)`` float audio at 16 kHz.
            lengths: optional valid sample count per row of a right-padded batch. HuBERT base's
                first conv layer group-normalises over time, so padding would change every frame;
                rows are therefore run in groups of equal length, trimmed, which keeps each row's
                numbers those of running it alone. Without `lengths` every row is taken whole.

        Returns:
            ``(batch, hidden, frames)`` features (hidden 768 for the official model), in the model's
            dtype. With `lengths`, frames is ``num_frames(max(lengths))`` and row ``i`` is
            zero beyond ``num_frames(lengths[i])``.
        """
        if wave.dim() != 2:
            raise ValueError(f"wave must be (batch, samples) at 16 kHz, got shape {tuple(wave.shape)}")
        param = next(self.model.parameters())
        wave = wave.to(device=param.device, dtype=param.dtype)
        if lengths is None:
            if wave.shape[1] < self.min_samples:
                raise ValueError(f"wave has {wave.shape[1]} samples; HuBERT needs at least {self.min_samples}")
            return self._encode(wave)

        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.shape != (wave.shape[0],):
            raise ValueError(f"lengths must have shape ({wave.shape[0]},), got {tuple(lengths.shape)}")
        if int(lengths.max()) > wave.shape[1] or int(lengths.min()) < self.min_samples:
            raise ValueError(
                f"lengths must lie in {self.min_samples}..{wave.shape[1]} samples, got {lengths.tolist()}"
            )
        frames = int(self.num_frames(int(lengths.max())))
        out = wave.new_zeros(wave.shape[0], self.hidden_size, frames)
        for length in torch.unique(lengths).tolist():
            rows = (lengths == length).nonzero().squeeze(1).to(wave.device)
            feats = self._encode(wave[rows, :length])
            out[rows, :, : feats.shape[-1]] = feats
        return out


# --- BERT ---------------------------------------------------------------------------------------


class BertFeatures(nn.Module):
    """chinese-roberta-wwm-ext-large as GPT-SoVITS uses it: phone-level text features.

    The official feature is ``hidden_states[-3]`` of the masked LM for each character (without
    [CLS]/[SEP]), repeated once per phone of that character. The last two encoder layers and the
    LM head never contribute to it, so they are dropped at load time: same numbers, less work.
    The hidden size comes from the folder's config (1024 for the official model).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, source_num_layers: int | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.hidden_size: int = model.config.hidden_size
        self.max_tokens: int = model.config.max_position_embeddings
        self.source_num_layers = source_num_layers if source_num_layers is not None else len(model.encoder.layer)
        self.model.requires_grad_(False)
        self.model.eval()

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "BertFeatures":
        """Load a ``chinese-roberta-wwm-ext-large`` folder (config.json, weights, tokenizer files).

        Raises `CheckpointError` naming the folder and the missing file when it is not such a folder.
        """
        from transformers import AutoTokenizer, BertForMaskedLM

        folder = Path(folder)
        config = _read_folder_config(
            folder,
            kind="BERT (chinese-roberta-wwm-ext-large)",
            model_type="bert",
            needs={"weights": _WEIGHT_FILES, "tokenizer": _TOKENIZER_FILES},
        )
        layers = int(config.get("num_hidden_layers", 0))
        keep = layers + 1 + _BERT_HIDDEN_STATE_INDEX  # hidden_states holds the embeddings + one per layer
        if keep < 0:
            raise CheckpointError(
                folder, f"has {layers} layer(s); the official feature hidden_states[-3] needs at least 2"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        # Loaded as the official class (a masked LM) so every stored key is expected; only the
        # encoder is kept. The LM head is unused, so a folder without it is accepted.
        masked_lm, info = BertForMaskedLM.from_pretrained(
            str(folder), local_files_only=True, dtype=torch.float32, output_loading_info=True
        )
        _check_loading_info(folder, info, allowed_missing=("cls.",))
        model = masked_lm.bert
        model.encoder.layer = nn.ModuleList(list(model.encoder.layer)[:keep])
        logger.info("loaded BERT from %s (running %d of %d layers, hidden %d)", folder, keep, layers,
                    model.config.hidden_size)
        return cls(model, tokenizer, source_num_layers=layers)

    def train(self, mode: bool = True) -> "BertFeatures":
        super().train(mode)
        self.model.eval()  # frozen feature extractor
        return self

    @staticmethod
    def _check_word2ph(text: str, word2ph: Sequence[int]) -> None:
        if not text:
            raise ValueError("text is empty; the official feature needs at least one character")
        if len(word2ph) != len(text):
            raise ValueError(
                f"word2ph has {len(word2ph)} entries but text {text!r} has {len(text)} characters; "
                "it needs one phone count per character"
            )
        if any(int(n) != n or n < 0 for n in word2ph):
            raise ValueError(f"word2ph entries must be non-negative integers, got {list(word2ph)}")

    @torch.no_grad()
    def phone_level_features_batch(
        self, texts: Sequence[str], word2phs: Sequence[Sequence[int]]
    ) -> list[Tensor]:
        """`phone_level_features` for several texts in one padded forward pass.

        Padding is masked out of attention and positions start at 0 for every row, so each result
        equals the single-text one up to float rounding.

        Returns:
            one ``(hidden, sum(word2ph))`` float32 tensor per text.
        """
        if len(texts) != len(word2phs):
            raise ValueError(f"got {len(texts)} texts but {len(word2phs)} word2ph lists")
        if not texts:
            return []
        for text, word2ph in zip(texts, word2phs):
            self._check_word2ph(text, word2ph)
        encoded = self.tokenizer(list(texts), padding=True, return_tensors="pt")
        token_counts = encoded["attention_mask"].sum(dim=1) - 2  # without [CLS] and [SEP]
        for text, count in zip(texts, token_counts.tolist()):
            if count != len(text):
                raise ValueError(
                    f"text {text!r} has {len(text)} characters but {count} tokens (without [CLS]/[SEP]); "
                    "the official feature needs one token per character, so pass the normalised Chinese "
                    "text (spaces, Latin words and digit runs break the alignment)"
                )
            if count + 2 > self.max_tokens:
                raise ValueError(
                    f"text of {len(text)} characters exceeds the model's {self.max_tokens - 2}-character limit"
                )
        device = next(self.model.parameters()).device
        inputs = {name: value.to(device) for name, value in encoded.items()}
        hidden = self.model(**inputs).last_hidden_state  # (batch, tokens, hidden) = official hidden_states[-3]
        features = []
        for row, (text, word2ph) in enumerate(zip(texts, word2phs)):
            per_char = hidden[row, 1 : 1 + len(text)]  # drop [CLS] (and [SEP]/padding after the text)
            repeats = torch.as_tensor(list(word2ph), dtype=torch.long, device=per_char.device)
            features.append(torch.repeat_interleave(per_char, repeats, dim=0).T.float())
        return features

    def phone_level_features(self, text: str, word2ph: Sequence[int]) -> Tensor:
        """The official ``get_bert_feature(text, word2ph)``.

        Args:
            text: normalised text, one BERT token per character (the Chinese front end's norm_text).
            word2ph: phones per character; ``len(word2ph) == len(text)``.

        Returns:
            ``(hidden, sum(word2ph))`` float32: character ``i``'s vector repeated ``word2ph[i]`` times.
        """
        return self.phone_level_features_batch([text], [word2ph])[0]

    def forward(self, text: str, word2ph: Sequence[int]) -> Tensor:
        return self.phone_level_features(text, word2ph)
