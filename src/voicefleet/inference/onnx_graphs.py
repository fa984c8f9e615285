"""The torch modules that become the ONNX graphs of a voice (`voicefleet.inference.onnx_export`).

Each wraps the fp32 network's own layers and weights and computes exactly what the torch
inference path computes, written so that the exporter can trace it with dynamic batch and
lengths: positions are gathered from the network's sinusoid tables by index (not sliced with a
Python int), the GPT key/value cache is an explicit input and output, and the SoVITS prior is
resized to the length of the noise it is given (which encodes the speed).

GPT cache layout, shared by the prefill and step graphs and by the engine:
`keys` / `values` (layers, batch, heads, positions, head_dim) float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from voicefleet.models.gpt import GPT, ScaledPositionalEncoding
from voicefleet.models.sovits import SoVITS

# The sinusoid tables are baked into the graphs with this many positions (text and audio each):
# longer than any text fragment plus a 10 s prompt (250 tokens) and the 1500-token cap.
MAX_POSITIONS = 4096


def _positioned(encoding: ScaledPositionalEncoding, x: Tensor, positions: Tensor) -> Tensor:
    """`encoding(x)` at the given positions (frames,) instead of a Python start index."""
    return x * encoding.x_scale + encoding.alpha * encoding.table.index_select(0, positions).to(x.dtype)


def _grow_tables(gpt: GPT) -> None:
    for encoding in (gpt.text_position, gpt.audio_position):
        if encoding.table.shape[0] < MAX_POSITIONS:
            encoding._positions(0, MAX_POSITIONS, encoding.table)


def _attend(layer, x: Tensor, mask: Tensor, past_k: Tensor | None, past_v: Tensor | None
            ) -> tuple[Tensor, Tensor, Tensor]:
    """One post-norm decoder layer with explicit cache tensors. mask: bool (batch|1, 1, frames, keys)."""
    attn = layer.attn
    batch, frames, dim = x.shape
    q, k, v = attn.qkv(x).view(batch, frames, 3, attn.heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    if past_k is not None:
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
    scores = (q @ k.transpose(-2, -1)) * attn.head_dim**-0.5
    scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    y = attn.out(y.transpose(1, 2).reshape(batch, frames, dim))
    x = layer.norm1(x + y)
    return layer.norm2(x + layer.ffn(x)), k, v


class GPTTextEmbedding(nn.Module):
    """phonemes (1, text_len) int64 + bert (1, bert_dim, text_len) -> (1, text_len, dim): one text
    embedded on its own (positions from 0), as the batched decode embeds each row."""

    def __init__(self, gpt: GPT):
        super().__init__()
        _grow_tables(gpt)
        self.gpt = gpt

    def forward(self, phonemes: Tensor, bert: Tensor) -> Tensor:
        x = self.gpt.text_embedding(phonemes) + self.gpt.bert_proj(bert.transpose(1, 2))
        return _positioned(self.gpt.text_position, x, torch.arange(phonemes.shape[1]))


class GPTPrefill(nn.Module):
    """The prompt pass: embedded, left-padded texts + semantic prompts -> first logits and the cache.

    Inputs: text_embeddings (batch, text_len, dim); text_mask (batch, text_len) bool, False at
    padding; prompt_tokens (batch, prompt_len) int64 (prompt_len may be 0).
    Outputs: logits (batch, vocab) at the last position; keys / values (layers, batch, heads,
    text_len + prompt_len, head_dim).
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        _grow_tables(gpt)
        self.gpt = gpt

    def forward(self, text_embeddings: Tensor, text_mask: Tensor, prompt_tokens: Tensor):
        gpt = self.gpt
        text_len = text_embeddings.shape[1]
        audio = _positioned(gpt.audio_position, gpt.audio_embedding(prompt_tokens),
                            torch.arange(prompt_tokens.shape[1]))
        x = torch.cat([text_embeddings, audio], dim=1)
        total = torch.arange(x.shape[1])
        # text attends to text; audio to all text and causally to audio (`text_audio_mask`)
        allowed = (total[None, :] < text_len) | ((total[:, None] >= text_len) & (total[None, :] <= total[:, None]))
        key_ok = torch.cat([text_mask, torch.ones_like(prompt_tokens, dtype=torch.bool)], dim=1)
        mask = allowed[None, None] & key_ok[:, None, None, :]
        keys, values = [], []
        for layer in gpt.layers:
            x, k, v = _attend(layer, x, mask, None, None)
            keys.append(k)
            values.append(v)
        return gpt.head(x[:, -1]), torch.stack(keys), torch.stack(values)


class GPTStep(nn.Module):
    """One decoding step on an explicit cache.

    Inputs: tokens (batch, 1) int64, the tokens just drawn; position (1,) int64, their audio
    position (prompt_len + step); key_mask (batch, past + 1) bool, False at text padding;
    past_keys / past_values (layers, batch, heads, past, head_dim).
    Outputs: logits (batch, vocab); keys / values with one more position.
    """

    def __init__(self, gpt: GPT):
        super().__init__()
        _grow_tables(gpt)
        self.gpt = gpt

    def forward(self, tokens: Tensor, position: Tensor, key_mask: Tensor, past_keys: Tensor, past_values: Tensor):
        gpt = self.gpt
        x = _positioned(gpt.audio_position, gpt.audio_embedding(tokens), position)
        mask = key_mask[:, None, None, :]
        keys, values = [], []
        for i, layer in enumerate(gpt.layers):
            x, k, v = _attend(layer, x, mask, past_keys[i], past_values[i])
            keys.append(k)
            values.append(v)
        return gpt.head(x[:, -1]), torch.stack(keys), torch.stack(values)


class SoVITSDecode(nn.Module):
    """`SoVITS.decode` for one fragment with its noise given.

    Inputs: codes (1, 1, tokens) int64; phonemes (1, phonemes) int64; refer_spec (1, spec_channels,
    frames) the reference's linear spectrogram; noise (1, inter_channels, prior_frames), whose
    length sets the speed (`SoVITS.prior_frames`); noise_scale (1,) float32.
    Output: audio (1, 1, samples) float32, before peak normalisation.
    """

    def __init__(self, sovits: SoVITS):
        super().__init__()
        self.sovits = sovits

    def forward(self, codes: Tensor, phonemes: Tensor, refer_spec: Tensor, noise: Tensor, noise_scale: Tensor):
        model = self.sovits
        enc = model.text_encoder
        ge = model.style(refer_spec)
        content = model.quantizer.decode(codes)
        content = F.interpolate(content, size=content.shape[-1] * 2, mode="nearest")
        mask = torch.ones_like(content[:, :1])
        text_mask = torch.ones_like(phonemes, dtype=content.dtype).unsqueeze(1)
        y = enc.ssl_proj(content * mask) * mask
        y = enc.encoder_ssl(y * mask, mask)
        t = enc.text_embedding(phonemes).transpose(1, 2)
        t = enc.encoder_text(t * text_mask, text_mask)
        y = enc.mrte(y, mask, t, text_mask, ge)
        y = enc.encoder2(y * mask, mask)
        # speed 1: the same length (an identity resize); otherwise the prior's length at that speed
        y = F.interpolate(y, size=noise.shape[-1], mode="linear")
        mean, log_std = enc.proj(y).split(enc.inter_channels, dim=1)
        z_p = mean + noise * torch.exp(log_std) * noise_scale
        prior_mask = torch.ones_like(z_p[:, :1])
        z = model.flow(z_p, prior_mask, g=ge, reverse=True)
        return model.decoder(z, g=ge)


class SoVITSLatent(nn.Module):
    """HuBERT features (1, ssl_dim, frames at 50 Hz) -> prompt semantic codes (1, 1, frames / 2)."""

    def __init__(self, sovits: SoVITS):
        super().__init__()
        self.sovits = sovits

    def forward(self, ssl: Tensor) -> Tensor:
        return self.sovits.extract_latent(ssl)


class HubertGraph(nn.Module):
    """16 kHz audio (1, samples) -> HuBERT features (1, hidden, frames), as `HubertFeatures` computes them."""

    def __init__(self, hubert):
        super().__init__()
        self.hubert = hubert

    def forward(self, wave: Tensor) -> Tensor:
        return self.hubert._encode(wave)


class BertGraph(nn.Module):
    """Token ids (1, tokens) -> the hidden states BERT features are read from (1, tokens, hidden)."""

    def __init__(self, bert):
        super().__init__()
        self.model = bert.model

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state
