"""SoVITS v2: the VITS acoustic model with semantic-token content and a HiFi-GAN decoder.

Pipeline (inference): semantic codes -> codebook vectors (25 Hz, upsampled x2 to 50 Hz) ->
text encoder (content self-attention, phoneme self-attention, MRTE cross-attention, style
vector added) -> prior mean/log-std -> sample -> inverse flow -> HiFi-GAN -> 32 kHz waveform.
The style vector `ge` comes from the mel style encoder over the reference spectrogram's lowest
704 bins.

v2Pro / v2ProPlus (`config.is_pro`) mix a speaker-verification embedding into it:
ge = PReLU(style(spec) + speaker_projection(sv)), sv (b, 20480) from ERes2NetV2 (`models.speaker`);
the MRTE receives `style_to_mrte(ge)` (512 wide officially), everything else `ge`. With several
references, each one's ge is computed (PReLU included) and the results are averaged.

Training adds the posterior encoder over the target linear spectrogram, the forward flow for
the KL term and a random decoder slice (`segment_size` samples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from voicefleet.models.config import SoVITSConfig
from voicefleet.models.modules.attention import ConvAttention, RelativeTransformerEncoder
from voicefleet.models.modules.flow import CouplingFlow
from voicefleet.models.modules.hifigan import HiFiGANGenerator, remove_weight_norm
from voicefleet.models.modules.masks import length_mask, random_segment_starts, slice_segments
from voicefleet.models.modules.quantizer import VectorQuantizer
from voicefleet.models.modules.style import MelStyleEncoder
from voicefleet.models.modules.wavenet import WaveNet

N_SYMBOLS_V2 = 732  # rows of the v2 phoneme table (symbols_v2)


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content attends to text; the style vector is added.

    Widths: content/text in and out = `channels`; the attention width `hidden` must equal the
    style vector's width because `ge` is added to it (official: 192 / 512 / 512).
    """

    def __init__(self, channels: int, hidden: int, n_heads: int):
        super().__init__()
        self.cross_attention = ConvAttention(hidden, hidden, n_heads)
        self.content_pre = nn.Conv1d(channels, hidden, 1)
        self.text_pre = nn.Conv1d(channels, hidden, 1)
        self.content_post = nn.Conv1d(hidden, channels, 1)

    def forward(self, content: torch.Tensor, content_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, ge: torch.Tensor | None) -> torch.Tensor:
        attn_mask = text_mask.unsqueeze(2) * content_mask.unsqueeze(-1)
        content = self.content_pre(content * content_mask)
        text = self.text_pre(text * text_mask)
        x = self.cross_attention(content * content_mask, text * text_mask, attn_mask) + content
        if ge is not None:
            x = x + ge
        return self.content_post(x * content_mask)


@dataclass
class TextEncoderOutput:
    """hidden (b, hidden, t); mean / log_std (b, inter, t'); mask (b, 1, t'), t' = t after speed change."""

    hidden: torch.Tensor
    mean: torch.Tensor
    log_std: torch.Tensor
    mask: torch.Tensor


class TextEncoder(nn.Module):
    """Content (50 Hz codebook vectors) + phonemes + style -> prior statistics."""

    def __init__(self, cfg: SoVITSConfig, n_symbols: int = N_SYMBOLS_V2):
        super().__init__()
        h = cfg.hidden_channels
        self.inter_channels = cfg.inter_channels
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, h, 1)
        self.encoder_ssl = RelativeTransformerEncoder(
            h, cfg.filter_channels, cfg.n_heads, cfg.n_layers // 2, cfg.kernel_size, cfg.p_dropout)
        self.encoder_text = RelativeTransformerEncoder(
            h, cfg.filter_channels, cfg.n_heads, cfg.n_layers, cfg.kernel_size, cfg.p_dropout)
        self.text_embedding = nn.Embedding(n_symbols, h)
        self.mrte = MRTE(h, cfg.mrte_hidden, cfg.mrte_heads)
        self.encoder2 = RelativeTransformerEncoder(
            h, cfg.filter_channels, cfg.n_heads, cfg.n_layers // 2, cfg.kernel_size, cfg.p_dropout)
        self.proj = nn.Conv1d(h, 2 * cfg.inter_channels, 1)

    def forward(self, content: torch.Tensor, content_lengths: torch.Tensor, text: torch.Tensor,
                text_lengths: torch.Tensor, ge: torch.Tensor | None, speed: float = 1.0) -> TextEncoderOutput:
        """content (b, ssl_dim, t), text (b, n) ids, ge (b, gin, 1); speed > 1 shortens the output."""
        mask = length_mask(content_lengths, content.size(2), content.dtype)
        y = self.ssl_proj(content * mask) * mask
        y = self.encoder_ssl(y * mask, mask)
        text_mask = length_mask(text_lengths, text.size(1), y.dtype)
        t = self.text_embedding(text).transpose(1, 2)
        t = self.encoder_text(t * text_mask, text_mask)
        y = self.mrte(y, mask, t, text_mask, ge)
        y = self.encoder2(y * mask, mask)
        hidden = y
        if speed != 1:
            y = F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")
            mask = F.interpolate(mask, size=y.shape[-1], mode="nearest")
        stats = self.proj(y) * mask
        mean, log_std = stats.split(self.inter_channels, dim=1)
        return TextEncoderOutput(hidden, mean, log_std, mask)


class PosteriorEncoder(nn.Module):
    """Linear spectrogram -> posterior latent z = mean + eps * exp(log_std) (VITS `enc_q`)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel_size: int, n_layers: int,
                 gin_channels: int):
        super().__init__()
        self.out_channels = out_channels
        self.pre = nn.Conv1d(in_channels, hidden, 1)
        self.enc = WaveNet(hidden, kernel_size, 1, n_layers, gin_channels=gin_channels)
        self.proj = nn.Conv1d(hidden, 2 * out_channels, 1)

    def forward(self, spec: torch.Tensor, lengths: torch.Tensor, g: torch.Tensor | None,
                noise: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """spec (b, spec_channels, t) -> z, mean, log_std (b, out, t), mask (b, 1, t)."""
        mask = length_mask(lengths, spec.size(2), spec.dtype)
        x = self.enc(self.pre(spec) * mask, mask, g=None if g is None else g.detach())
        mean, log_std = (self.proj(x) * mask).split(self.out_channels, dim=1)
        if noise is None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        z = (mean + noise * torch.exp(log_std)) * mask
        return z, mean, log_std, mask


@dataclass
class SoVITSTrainOutput:
    """Training forward results.

    wave: (b, 1, segment_size) decoded slice; slice_starts: (b,) start frames of the slice;
    mask: (b, 1, t); z, z_p, prior_mean, prior_log_std, post_mean, post_log_std: (b, inter, t);
    quantized: (b, ssl_dim, t) the upsampled codebook vectors; ge: (b, gin, 1);
    commit_loss: scalar (0 while the quantizer is frozen).
    """

    wave: torch.Tensor
    commit_loss: torch.Tensor
    slice_starts: torch.Tensor
    mask: torch.Tensor
    z: torch.Tensor
    z_p: torch.Tensor
    prior_mean: torch.Tensor
    prior_log_std: torch.Tensor
    post_mean: torch.Tensor
    post_log_std: torch.Tensor
    quantized: torch.Tensor
    ge: torch.Tensor


class SoVITS(nn.Module):
    """The SoVITS generator (official `SynthesizerTrn`, versions v2, v2Pro and v2ProPlus)."""

    def __init__(self, config: SoVITSConfig | None = None, n_symbols: int = N_SYMBOLS_V2):
        super().__init__()
        cfg = self.config = config or SoVITSConfig()
        self.text_encoder = TextEncoder(cfg, n_symbols)
        self.decoder = HiFiGANGenerator(
            cfg.inter_channels, cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, cfg.upsample_rates,
            cfg.upsample_initial_channel, cfg.upsample_kernel_sizes, gin_channels=cfg.gin_channels)
        self.posterior_encoder = PosteriorEncoder(
            cfg.audio.spec_channels, cfg.inter_channels, cfg.hidden_channels, cfg.wavenet_kernel_size,
            cfg.posterior_layers, cfg.gin_channels)
        self.flow = CouplingFlow(cfg.inter_channels, cfg.hidden_channels, cfg.wavenet_kernel_size, 1,
                                 cfg.flow_wavenet_layers, cfg.flow_layers, gin_channels=cfg.gin_channels)
        self.style_encoder = MelStyleEncoder(cfg.style_input_channels, cfg.gin_channels)
        self.ssl_proj = nn.Conv1d(cfg.ssl_dim, cfg.ssl_dim, 2, stride=2)  # 50 Hz -> 25 Hz
        self.quantizer = VectorQuantizer(cfg.ssl_dim, cfg.codebook_size)
        if cfg.is_pro:  # created last, as officially, so the state dict keeps the official order
            self.speaker_projection = nn.Linear(cfg.sv_embedding_dim, cfg.gin_channels)
            self.style_to_mrte = nn.Linear(cfg.gin_channels, cfg.mrte_hidden)
            self.style_activation = nn.PReLU(cfg.gin_channels)

    # ---- pieces -------------------------------------------------------------------------
    def style(self, spec: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Reference linear spectrogram (b, spec_channels, t) -> style vector (b, gin, 1)."""
        if mask is None:
            mask = spec.new_ones(spec.size(0), 1, spec.size(2))
        return self.style_encoder(spec[:, : self.config.style_input_channels] * mask, mask)

    def global_style(self, spec: torch.Tensor, mask: torch.Tensor | None = None,
                     sv: torch.Tensor | None = None) -> torch.Tensor:
        """The style vector every part but the MRTE uses (b, gin, 1).

        v2: `style(spec)`. v2Pro: PReLU(style(spec) + speaker_projection(sv)), sv (b, sv_dim).
        """
        ge = self.style(spec, mask)
        if not self.config.is_pro:
            return ge
        if sv is None:
            raise ValueError(f"a {self.config.version} SoVITS needs the reference's speaker-verification "
                             "embedding (sv_emb); none was given")
        return self.style_activation(ge + self.speaker_projection(sv).unsqueeze(-1))

    def mrte_style(self, ge: torch.Tensor) -> torch.Tensor:
        """The style the MRTE adds: `style_to_mrte(ge)` (b, mrte_hidden, 1) for v2Pro, `ge` for v2."""
        if not self.config.is_pro:
            return ge
        return self.style_to_mrte(ge.transpose(1, 2)).transpose(1, 2)

    def reference_style(self, refer: torch.Tensor | Sequence[torch.Tensor],
                        sv: torch.Tensor | Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Style of one reference spectrogram, or the mean style of several (each (1, spec, t)).

        v2Pro: `sv` is the matching speaker-verification embedding (1, sv_dim), or one per
        reference; each reference's style is finished (PReLU) before averaging, as officially.
        """
        if isinstance(refer, torch.Tensor):
            return self.global_style(refer, sv=sv)
        if sv is None:
            svs: Sequence[torch.Tensor | None] = [None] * len(refer)
        else:
            svs = list(sv)
            if len(svs) != len(refer):
                raise ValueError(f"{len(refer)} reference spectrograms but {len(svs)} speaker embeddings")
            svs = [s.reshape(1, -1) for s in svs]
        return torch.stack([self.global_style(r, sv=s) for r, s in zip(refer, svs)], 0).mean(0)

    def extract_latent(self, ssl: torch.Tensor) -> torch.Tensor:
        """HuBERT features (b, ssl_dim, t@50Hz) -> semantic codes (1, b, t/2) at 25 Hz."""
        return self.quantizer.encode(self.ssl_proj(ssl))

    def _content(self, ssl: torch.Tensor):
        frozen = self.config.freeze_quantizer
        if frozen:
            self.ssl_proj.eval()
            self.quantizer.eval()
        with torch.autocast(device_type=ssl.device.type, enabled=False), torch.set_grad_enabled(
                torch.is_grad_enabled() and not frozen):
            q = self.quantizer(self.ssl_proj(ssl.float()))
        return q

    # ---- training -----------------------------------------------------------------------
    def forward(self, ssl: torch.Tensor, spec: torch.Tensor, spec_lengths: torch.Tensor, text: torch.Tensor,
                text_lengths: torch.Tensor, sv: torch.Tensor | None = None, *,
                posterior_noise: torch.Tensor | None = None,
                slice_uniform: torch.Tensor | None = None) -> SoVITSTrainOutput:
        """Teacher-forced pass for training.

        ssl (b, ssl_dim, t) HuBERT features padded to the spectrogram length t (even);
        spec (b, spec_channels, t); text (b, n) phoneme ids; sv (b, sv_dim) the clips'
        speaker-verification embeddings (v2Pro only). `posterior_noise` (b, inter, t) and
        `slice_uniform` (b,) inject the two random draws (otherwise the global RNG is used).
        """
        mask = length_mask(spec_lengths, spec.size(2), spec.dtype)
        ge = self.global_style(spec, mask, sv)
        q = self._content(ssl)
        quantized = F.interpolate(q.quantized, size=q.quantized.shape[-1] * 2, mode="nearest")
        prior = self.text_encoder(quantized, spec_lengths, text, text_lengths, self.mrte_style(ge))
        z, post_mean, post_log_std, mask = self.posterior_encoder(spec, spec_lengths, ge, noise=posterior_noise)
        z_p = self.flow(z, mask, g=ge)
        starts = random_segment_starts(spec_lengths, self.config.segment_frames, slice_uniform)
        wave = self.decoder(slice_segments(z, starts, self.config.segment_frames), g=ge)
        return SoVITSTrainOutput(wave, q.commit_loss, starts, mask, z, z_p, prior.mean, prior.log_std,
                                 post_mean, post_log_std, quantized, ge)

    # ---- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, codes: torch.Tensor, text: torch.Tensor, refer: torch.Tensor | Sequence[torch.Tensor] | None,
               noise_scale: float = 0.5, speed: float = 1.0, *, ge: torch.Tensor | None = None,
               code_lengths: torch.Tensor | None = None, text_lengths: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
               sv: torch.Tensor | Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Semantic codes (1, b, t) + phonemes (b, n) + reference -> waveform (b, 1, 2 * t * hop / speed).

        refer: a reference spectrogram (1, spec_channels, t_ref) or a list of them (styles are
        averaged); or pass a precomputed style `ge` (b or 1, gin, 1). For padded batches give
        `code_lengths` / `text_lengths`; the output of row i is valid for its first
        2 * code_lengths[i] * hop samples. `noise` (b, inter, 2t) injects the prior sample's draw;
        otherwise it comes from `generator`. v2Pro: `sv` is the reference's speaker-verification
        embedding (1, sv_dim), or a list with one per reference (not needed with `ge`).
        """
        if ge is None:
            ge = self.reference_style(refer, sv) if refer is not None else None
        b = codes.size(1)
        if code_lengths is None:
            code_lengths = torch.full((b,), codes.size(2), dtype=torch.long, device=codes.device)
        if text_lengths is None:
            text_lengths = torch.full((b,), text.size(-1), dtype=torch.long, device=text.device)
        quantized = self.quantizer.decode(codes)
        quantized = F.interpolate(quantized, size=quantized.shape[-1] * 2, mode="nearest")
        mrte_ge = self.mrte_style(ge) if ge is not None else None
        prior = self.text_encoder(quantized, code_lengths * 2, text, text_lengths, mrte_ge, speed)
        if noise is None:
            noise = torch.randn(prior.mean.shape, generator=generator, device=prior.mean.device,
                                dtype=prior.mean.dtype)
        z_p = prior.mean + noise * torch.exp(prior.log_std) * noise_scale
        z = self.flow(z_p, prior.mask, g=ge, reverse=True)
        return self.decoder(z * prior.mask, g=ge)

    @staticmethod
    def prior_frames(tokens: int, speed: float = 1.0) -> int:
        """Frames of the prior (and of `decode`'s `noise`) for `tokens` semantic codes at `speed`."""
        return 2 * tokens if speed == 1 else int(2 * tokens / speed) + 1

    def prepare_for_inference(self) -> "SoVITS":
        """eval mode with weight norm folded into plain weights (same outputs, faster)."""
        remove_weight_norm(self.eval())
        return self
