"""Typed model configs whose defaults are the official GPT-SoVITS v2 values.

SoVITS configs also describe the v2Pro and v2ProPlus generators (`version`), whose official
numbers differ from v2 in a few fields (`V2PRO_MODEL`); the speaker-verification network they
condition on is `SpeakerVerifierConfig`.

Field names follow the official config files (`s2.json`'s `model`/`data` sections and
`s1longer-v2.yaml`'s `model` section), because those dicts travel inside every official
checkpoint; `from_official` reads them and rejects keys it does not know.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

# Shared audio constants of the v2 acoustic model (s2.json `data`).
SAMPLE_RATE = 32000
N_FFT = 2048
HOP_LENGTH = 640
WIN_LENGTH = 2048
N_MELS = 128
SSL_SAMPLE_RATE = 16000  # HuBERT input rate
SV_SAMPLE_RATE = SSL_SAMPLE_RATE  # the v2Pro speaker-verification front end reads 16 kHz too
SSL_DIM = 768  # chinese-hubert-base hidden size, hard-coded in the official SoVITS
BERT_DIM = 1024  # chinese-roberta-wwm-ext-large hidden size, hard-coded in the official GPT


# SoVITS model versions voicefleet builds; v2Pro/v2ProPlus add the speaker-verification input.
SOVITS_VERSIONS = ("v2", "v2Pro", "v2ProPlus")
PRO_VERSIONS = ("v2Pro", "v2ProPlus")
SV_EMBEDDING_DIM = 20480  # ERes2NetV2 feature-map embedding width, hard-coded in the official v2Pro SoVITS
PRO_MRTE_HIDDEN = 512  # official v2Pro: the MRTE keeps its default width; `ge_to512` maps the style to it
# official s2v2Pro.json / s2v2ProPlus.json `model` values that differ from s2.json
V2PRO_MODEL = {
    "v2Pro": {"gin_channels": 1024, "p_dropout": 0.0},
    "v2ProPlus": {"gin_channels": 1024, "p_dropout": 0.0, "upsample_initial_channel": 768,
                  "upsample_kernel_sizes": (20, 16, 8, 2, 2)},
}


class ConfigError(ValueError):
    """A config dict has a key or value the model cannot be built from."""


def _check_keys(kind: str, given: Mapping[str, Any], known: set[str], ignored: set[str]) -> None:
    unknown = set(given) - known - ignored
    if unknown:
        raise ConfigError(f"{kind} config has unknown key(s) {sorted(unknown)}; known keys: {sorted(known)}")


@dataclass(frozen=True)
class AudioConfig:
    """Spectrogram settings of the v2 acoustic model (official `s2.json` `data`)."""

    sampling_rate: int = SAMPLE_RATE
    filter_length: int = N_FFT
    hop_length: int = HOP_LENGTH
    win_length: int = WIN_LENGTH
    n_mel_channels: int = N_MELS
    mel_fmin: float = 0.0
    mel_fmax: float | None = None

    @property
    def spec_channels(self) -> int:
        return self.filter_length // 2 + 1

    @classmethod
    def from_official(cls, data: Mapping[str, Any]) -> "AudioConfig":
        """From an official s2 config's `data` section (its other keys are not audio settings)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class SoVITSConfig:
    """SoVITS v2 generator (`SynthesizerTrn`) hyper-parameters, official `s2.json` `model`.

    `mrte_hidden_channels` and `mrte_heads` are fixed in the official constructor (512 and 4);
    they are exposed so reduced models can be built. `None` derives the official rule: in v2 the
    MRTE hidden width = `gin_channels` (the style vector is added to it); in v2Pro/v2ProPlus it
    is 512 whatever `gin_channels` is, and the style reaches it through `ge_to512`.

    v2Pro/v2ProPlus (`version`) add the speaker-verification projection `sv_emb`
    (`sv_embedding_dim` -> gin), a per-channel PReLU and `ge_to512`; their official sizes are the
    v2 defaults updated with `V2PRO_MODEL[version]`.
    """

    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    p_dropout: float = 0.1
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (10, 8, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 8, 2, 2)
    n_layers_q: int = 3  # unused by v2 (kept because official configs carry it)
    use_spectral_norm: bool = False
    gin_channels: int = 512
    semantic_frame_rate: str = "25hz"
    freeze_quantizer: bool = True
    version: str = "v2"
    # --- fixed in the official code, parameters here ---
    mrte_hidden_channels: int | None = None
    mrte_heads: int = 4
    n_speakers: int = 300  # official data.n_speakers; no speaker embedding is built in v2
    segment_size: int = 20480  # samples; training slices segment_size // hop_length frames
    audio: AudioConfig = field(default_factory=AudioConfig)
    ssl_dim: int = SSL_DIM
    codebook_size: int = 1024
    style_input_channels: int = 704  # v2 reference encoder reads the lowest 704 spec bins
    posterior_layers: int = 16  # enc_q WaveNet depth
    flow_layers: int = 4  # coupling layers in the flow (each followed by a flip)
    flow_wavenet_layers: int = 4
    wavenet_kernel_size: int = 5
    sv_embedding_dim: int = SV_EMBEDDING_DIM  # v2Pro only

    def __post_init__(self) -> None:
        if self.version not in SOVITS_VERSIONS:
            raise ConfigError(f"SoVITS version {self.version!r} is not supported; voicefleet builds "
                              f"{', '.join(SOVITS_VERSIONS)} models")
        if self.semantic_frame_rate != "25hz":
            raise ConfigError(f"semantic_frame_rate must be '25hz' for v2, got {self.semantic_frame_rate!r}")
        if self.resblock != "1":
            raise ConfigError(f"resblock must be '1' (the v2 HiFi-GAN ResBlock1), got {self.resblock!r}")
        if self.hidden_channels % self.n_heads:
            raise ConfigError(f"hidden_channels {self.hidden_channels} is not divisible by n_heads {self.n_heads}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ConfigError("upsample_rates and upsample_kernel_sizes must have the same length")
        hop = 1
        for r in self.upsample_rates:
            hop *= r
        if hop != self.audio.hop_length:
            raise ConfigError(f"the product of upsample_rates ({hop}) must equal hop_length ({self.audio.hop_length})")

    @property
    def is_pro(self) -> bool:
        """v2Pro or v2ProPlus: the style vector mixes in a speaker-verification embedding."""
        return self.version in PRO_VERSIONS

    @property
    def mrte_hidden(self) -> int:
        if self.mrte_hidden_channels is not None:
            return self.mrte_hidden_channels
        return PRO_MRTE_HIDDEN if self.is_pro else self.gin_channels

    @property
    def segment_frames(self) -> int:
        return self.segment_size // self.audio.hop_length

    # official `model` keys we accept from a checkpoint's config
    _OFFICIAL_MODEL_KEYS = {
        "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size",
        "p_dropout", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
        "upsample_initial_channel", "upsample_kernel_sizes", "n_layers_q", "use_spectral_norm",
        "gin_channels", "semantic_frame_rate", "freeze_quantizer", "version",
    }

    @classmethod
    def from_official(cls, model: Mapping[str, Any], data: Mapping[str, Any] | None = None,
                      train: Mapping[str, Any] | None = None, **overrides: Any) -> "SoVITSConfig":
        """Build from an official config's `model` (and optionally `data`/`train`) sections."""
        model = dict(model)
        _check_keys("SoVITS model", model, cls._OFFICIAL_MODEL_KEYS, set())
        kwargs: dict[str, Any] = {}
        for k, v in model.items():
            if k == "resblock_dilation_sizes":
                v = tuple(tuple(d) for d in v)
            elif isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        if data is not None:
            kwargs["audio"] = AudioConfig.from_official(data)
            if "n_speakers" in data:
                kwargs["n_speakers"] = data["n_speakers"]
        if train is not None and "segment_size" in train:
            kwargs["segment_size"] = train["segment_size"]
        kwargs.update(overrides)
        return cls(**kwargs)

    def to_official_model(self) -> dict[str, Any]:
        """The official `model` section (lists, not tuples, as the official JSON has)."""
        out: dict[str, Any] = {}
        for k in sorted(self._OFFICIAL_MODEL_KEYS, key=_OFFICIAL_MODEL_ORDER.index):
            v = getattr(self, k)
            if k == "resblock_dilation_sizes":
                v = [list(d) for d in v]
            elif isinstance(v, tuple):
                v = list(v)
            out[k] = v
        return out


_OFFICIAL_MODEL_ORDER = [
    "inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size",
    "p_dropout", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
    "upsample_initial_channel", "upsample_kernel_sizes", "n_layers_q", "use_spectral_norm",
    "gin_channels", "semantic_frame_rate", "freeze_quantizer", "version",
]


@dataclass(frozen=True)
class SpeakerVerifierConfig:
    """ERes2NetV2 sizes; defaults = the official `pretrained_eres2netv2w24s4ep4.ckpt`
    (`ERes2NetV2(baseWidth=24, scale=4, expansion=4)`, other arguments at their defaults)."""

    base_width: int = 24
    scale: int = 4
    expansion: int = 4
    m_channels: int = 64
    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    feat_dim: int = 80  # fbank bins
    embedding_size: int = 192  # the speaker-embedding head (unused by GPT-SoVITS)

    def __post_init__(self) -> None:
        if len(self.num_blocks) != 4 or min(self.num_blocks) < 1:
            raise ConfigError(f"num_blocks needs 4 positive stage depths, got {list(self.num_blocks)}")
        if self.feat_dim % 8:
            raise ConfigError(f"feat_dim must be divisible by 8 (three stride-2 stages), got {self.feat_dim}")

    @property
    def stats_dim(self) -> int:
        """Channels x frequency rows of the fused map = the width of `feature_map_embedding`."""
        return (self.feat_dim // 8) * self.m_channels * 8 * self.expansion


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-period discriminator (official `MultiPeriodDiscriminator`, v2 periods).

    The official classes hard-code the conv widths; they are parameters here so reduced
    discriminators can be built. The defaults are the official widths.
    """

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)  # v2Pro/v2ProPlus: + 17, 23 (PRO_PERIODS)
    # outputs of DiscriminatorS conv0..conv5 (conv_post maps the last to 1)
    s_channels: tuple[int, ...] = (16, 64, 256, 1024, 1024, 1024)
    # outputs of DiscriminatorP conv0..conv4
    p_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    use_spectral_norm: bool = False

    def __post_init__(self) -> None:
        if len(self.s_channels) != 6:
            raise ConfigError(f"s_channels needs 6 widths (DiscriminatorS conv0..conv5), got {len(self.s_channels)}")
        if len(self.p_channels) != 5:
            raise ConfigError(f"p_channels needs 5 widths (DiscriminatorP conv0..conv4), got {len(self.p_channels)}")
        # grouped convs of DiscriminatorS: groups 4, 16, 64, 256 must divide in and out widths
        for i, groups in zip(range(1, 5), (4, 16, 64, 256)):
            cin, cout = self.s_channels[i - 1], self.s_channels[i]
            if cin % groups or cout % groups:
                raise ConfigError(f"s_channels[{i - 1}]={cin} and s_channels[{i}]={cout} must be divisible by {groups}")


PRO_PERIODS = (2, 3, 5, 7, 11, 17, 23)


@dataclass(frozen=True)
class GPTConfig:
    """GPT v2 (`Text2SemanticDecoder`) hyper-parameters, official `s1longer-v2.yaml` `model`."""

    vocab_size: int = 1025  # 1024 semantic codes + EOS
    phoneme_vocab_size: int = 732  # len(symbols_v2)
    embedding_dim: int = 512
    hidden_dim: int = 512
    head: int = 16
    linear_units: int = 2048  # ignored by the official model: its FFN width is 4 * hidden_dim
    n_layer: int = 24
    dropout: float = 0.0
    EOS: int = 1024
    random_bert: int = 0  # official training-time flag; unused at inference
    bert_dim: int = BERT_DIM

    def __post_init__(self) -> None:
        if self.hidden_dim % self.head:
            raise ConfigError(f"hidden_dim {self.hidden_dim} is not divisible by head {self.head}")
        if not 0 <= self.EOS < self.vocab_size:
            raise ConfigError(f"EOS {self.EOS} must be a valid id below vocab_size {self.vocab_size}")

    @property
    def ffn_dim(self) -> int:
        return 4 * self.hidden_dim

    _OFFICIAL_KEYS = {"vocab_size", "phoneme_vocab_size", "embedding_dim", "hidden_dim", "head",
                      "linear_units", "n_layer", "dropout", "EOS", "random_bert"}

    @classmethod
    def from_official(cls, model: Mapping[str, Any], **overrides: Any) -> "GPTConfig":
        _check_keys("GPT model", model, cls._OFFICIAL_KEYS, set())
        return cls(**{**dict(model), **overrides})

    def to_official(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("vocab_size", "phoneme_vocab_size", "embedding_dim", "hidden_dim",
                                              "head", "linear_units", "n_layer", "dropout", "EOS", "random_bert")}
