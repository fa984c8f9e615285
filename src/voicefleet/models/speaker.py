"""ERes2NetV2: the speaker-verification network whose feature map GPT-SoVITS v2Pro conditions on.

Input: Kaldi fbank features (batch, frames, 80) of 16 kHz audio (`models.speaker_frontend`).
A 3x3 stem, four residual stages (strides 1, 2, 2, 2; the last two fuse their width splits with
attentional feature fusion, AFF), then the stage-3 output is downsampled and fused with the
stage-4 output. GPT-SoVITS does not use the network's speaker embedding: it takes the fused map
(batch, C, F/8, T/8), flattens channels x frequency and averages over time (`feature_map_embedding`,
the official `forward3`): (batch, C * F/8) = (batch, 20480) at the official size.

Module names follow the official checkpoint (a bare state dict from the 3D-Speaker project:
`conv1`, `layer1..4`, `layer3_ds`, `fuse34`, `seg_1`): they already say what each part is, so
no key table is needed and the file loads as is. `seg_1` (the speaker embedding head) is kept
because the file holds it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voicefleet.models.config import SpeakerVerifierConfig

ACTIVATION_CLAMP = 20.0  # the blocks' "ReLU" is a Hardtanh(0, 20)


class AttentionalFusion(nn.Module):
    """AFF: a = 1 + tanh(att(cat(x, y))); out = x * a + y * (2 - a). x, y: (b, channels, f, t)."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        inner = channels // reduction
        # indices 0..4 as in the official Sequential (SiLU at 2 has no weights)
        self.local_att = nn.Sequential(
            nn.Conv2d(2 * channels, inner, 1), nn.BatchNorm2d(inner), nn.SiLU(),
            nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))
        return x * a + y * (2.0 - a)


class ResidualBlock(nn.Module):
    """1x1 conv -> `scale` width splits processed hierarchically by 3x3 convs -> 1x1 conv + shortcut.

    Split i (i > 0) first receives the previous split's output: added (`fuse=False`) or fused by
    AFF (`fuse=True`).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, base_width: int, scale: int, expansion: int,
                 fuse: bool):
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.width, self.scale = width, scale
        self.conv1 = nn.Conv2d(in_planes, width * scale, 1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1, bias=False) for _ in range(scale))
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(scale))
        if fuse:
            self.fuse_models = nn.ModuleList(AttentionalFusion(width) for _ in range(scale - 1))
        self.fuse = fuse
        out = planes * expansion
        self.conv3 = nn.Conv2d(width * scale, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))

    @staticmethod
    def _act(x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, 0.0, ACTIVATION_CLAMP)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = torch.split(self._act(self.bn1(self.conv1(x))), self.width, 1)
        outs = []
        for i in range(self.scale):
            if i == 0:
                sp = splits[0]
            elif self.fuse:
                sp = self.fuse_models[i - 1](sp, splits[i])
            else:
                sp = sp + splits[i]
            sp = self._act(self.bns[i](self.convs[i](sp)))
            outs.append(sp)
        out = self.bn3(self.conv3(torch.cat(outs, 1)))
        return self._act(out + self.shortcut(x))


class ERes2NetV2(nn.Module):
    """The speaker-verification network (official `ERes2NetV2`), sizes from `SpeakerVerifierConfig`."""

    def __init__(self, config: SpeakerVerifierConfig | None = None):
        super().__init__()
        cfg = self.config = config or SpeakerVerifierConfig()
        m = cfg.m_channels
        self.conv1 = nn.Conv2d(1, m, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self._in_planes = m
        self.layer1 = self._stage(m, cfg.num_blocks[0], 1, fuse=False)
        self.layer2 = self._stage(2 * m, cfg.num_blocks[1], 2, fuse=False)
        self.layer3 = self._stage(4 * m, cfg.num_blocks[2], 2, fuse=True)
        self.layer4 = self._stage(8 * m, cfg.num_blocks[3], 2, fuse=True)
        self.layer3_ds = nn.Conv2d(4 * m * cfg.expansion, 8 * m * cfg.expansion, 3, padding=1, stride=2, bias=False)
        self.fuse34 = AttentionalFusion(8 * m * cfg.expansion)
        # speaker-embedding head over mean+std pooling; unused by GPT-SoVITS, present in the file
        self.seg_1 = nn.Linear(2 * cfg.stats_dim, cfg.embedding_size)

    def _stage(self, planes: int, blocks: int, stride: int, fuse: bool) -> nn.Sequential:
        cfg = self.config
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(ResidualBlock(self._in_planes, planes, s, cfg.base_width, cfg.scale, cfg.expansion, fuse))
            self._in_planes = planes * cfg.expansion
        return nn.Sequential(*layers)

    def feature_map(self, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        """fbank (b, frames, feat_dim) -> the stage-4 map, the downsampled stage-3 map and their fusion,
        each (b, 8 * m_channels * expansion, feat_dim / 8, ceil(frames / 8))."""
        x = feats.transpose(1, 2).unsqueeze(1)
        x = F.relu(self.bn1(self.conv1(x)))
        out3 = self.layer3(self.layer2(self.layer1(x)))
        out4 = self.layer4(out3)
        out3_ds = self.layer3_ds(out3)
        return {"out4": out4, "out3_ds": out3_ds, "fused": self.fuse34(out4, out3_ds)}

    def feature_map_embedding(self, feats: torch.Tensor) -> torch.Tensor:
        """What GPT-SoVITS uses (official `forward3`): fbank (b, frames, 80) -> (b, embedding_dim).

        Index c * (feat_dim / 8) + f of the output is channel c, frequency row f, averaged over
        all frames.
        """
        return self.feature_map(feats)["fused"].flatten(1, 2).mean(-1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """The speaker embedding (b, embedding_size): mean+std pooling over time, then `seg_1`."""
        fused = self.feature_map(feats)["fused"]
        mean = fused.mean(dim=-1).flatten(1)
        std = torch.sqrt(torch.var(fused, dim=-1) + 1e-8).flatten(1)
        return self.seg_1(torch.cat((mean, std), 1))
