from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule

from ._validate import check_choice, check_positive_int
from .attention_config import build_attention

UPSAMPLE_STRIDES = (1, 2)


class TopDownUpsample(nn.Module):
    """3x3 ConvTranspose2d (no bias) + BN from one level up to the next finer one; the
    output size is the finer level's, so the output_padding follows from it."""

    def __init__(self, channels: int, stride: int, norm_cfg: dict):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(channels, channels, kernel_size=3, stride=stride,
                                         padding=stride - 1, bias=False)
        self.bn = build_norm_layer(norm_cfg, channels)[1]

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        return self.bn(self.deconv(x, output_size=list(size)))


@MODELS.register_module()
class StairNetNeck(BaseModule):
    """StairNet's top-down feature combining (Woo, Hwang, Kweon, WACV 2018) on SSD300's
    VGG16, the detector of the CBAM paper's Table 7, with optional attention.

    .. math::
        S_1 \\dots S_L = \\mathrm{SSDNeck}(C_{4\\_3}, C_{fc7}), \\qquad
        T_L = \\mathrm{BN}(W_L S_L), \\quad
        T_l = \\mathrm{BN}(W_l S_l) + \\mathrm{BN}(\\mathrm{Deconv}_l\\, T_{l+1}),
        \\qquad P_l = A_l(\\mathrm{ReLU}(\\mathrm{BN}(\\mathrm{Conv}^{3\\times3}_l T_l)))

    The sources ``S_l`` are mmdet's :class:`~mmdet.models.necks.SSDNeck` on the backbone's
    conv4_3 and fc7: conv4_3 after L2Norm (scale 20) and the extra layers, SSD300's six
    maps (512, 1024, 512, 256, 256, 256 channels at 38, 19, 10, 5, 3, 1). ``W_l``: 1x1
    conv to ``out_channels`` without bias (lateral); ``Deconv_l``: 3x3 ConvTranspose2d
    without bias, stride 1 and padding 0 for the step from the top level (1 -> 3) and
    stride 2, padding 1 elsewhere, its output_padding set by the finer level's size
    (3 -> 5 -> 10 -> 19 -> 38); no ReLU after the sum; a 3x3 conv + BN + ReLU before each
    head. BatchNorm momentum 0.01, as the StairNet code (SoonminHwang/ssd.pytorch,
    ``models/stairnet.py``, from which the layout is read; this is not its code).

    Choices where the paper and that code differ or are silent:

    - ``num_outs=6`` (default) predicts on all six levels 38 ... 1. The code builds a
      pre-head conv and a head for each of the six levels but feeds only the five finest
      (38 ... 3) to the heads; the paper's parameter counts (32.0M; 32.1M with SE or CBAM)
      hold only when all six are used (six attention modules add 0.05M), so this follows
      the paper. ``num_outs=5`` is the code's forward (31.18M on VOC, with the SSDHead
      and its anchors cut to those five levels).
    - ``attention`` (e.g. ``dict(type='CBAM', ratio=16)``): one module per predicted
      level on the pre-head conv's output, i.e. directly before the SSDHead's classifier
      and box convs ("right before every classifier"); the paper says no more.
    - Initialisation: laterals and pre-head convs kaiming normal (fan_out), BN weight 1
      and bias 0, deconvolutions PyTorch's default (as the code); the SSDNeck keeps
      mmdet's Xavier and sets its L2Norm scale in :meth:`init_weights` (call it, as
      mmdet's detectors do); attention modules their own.

    Args:
        in_channels (Sequence[int]): channels of the backbone's outputs (conv4_3, fc7).
        source_channels (Sequence[int]): channels of the SSDNeck's levels, finest first.
        level_strides, level_paddings (Sequence[int]): SSDNeck's extra layers.
        l2_norm_scale (float): SSDNeck's L2Norm initial scale on conv4_3.
        out_channels (int): channels of the laterals, top-down path and outputs.
        num_outs (int): levels predicted on, from the finest (1 ... len(source_channels)).
        upsample_strides (Sequence[int]): stride (1 or 2) of each top-down step, the
            step into the finest level first.
        attention (dict, optional): config of one attention module per output level,
            without ``in_channels`` (set to ``out_channels``). None: plain StairNet.
        norm_cfg (dict): norm layer of the laterals, top-down steps and pre-head convs.
        init_cfg (dict, optional): mmengine init_cfg of this module.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (512, 1024),
                 source_channels: Sequence[int] = (512, 1024, 512, 256, 256, 256),
                 level_strides: Sequence[int] = (2, 2, 1, 1),
                 level_paddings: Sequence[int] = (1, 1, 0, 0),
                 l2_norm_scale: float = 20.,
                 out_channels: int = 256,
                 num_outs: int = 6,
                 upsample_strides: Sequence[int] = (2, 2, 2, 2, 1),
                 attention: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', momentum=0.01),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        levels = len(source_channels)
        check_positive_int('out_channels', out_channels)
        check_choice('num_outs', num_outs, range(1, levels + 1))
        if len(upsample_strides) != levels - 1 or \
                any(s not in UPSAMPLE_STRIDES for s in upsample_strides):
            raise ValueError(f'upsample_strides must have len(source_channels) - 1 = '
                             f'{levels - 1} entries (one per top-down step), each 1 or 2, '
                             f'got {tuple(upsample_strides)!r}')
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.sources = MODELS.build(dict(
            type='SSDNeck', in_channels=tuple(in_channels), out_channels=tuple(source_channels),
            level_strides=tuple(level_strides), level_paddings=tuple(level_paddings),
            l2_norm_scale=l2_norm_scale))
        self.laterals = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None)
            for c in source_channels)
        self.upsamples = nn.ModuleList(
            TopDownUpsample(out_channels, stride, norm_cfg) for stride in upsample_strides)
        self.head_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg)
            for _ in range(num_outs))
        self.attentions = None if attention is None else nn.ModuleList(
            build_attention('StairNetNeck', 'attention', attention, out_channels)
            for _ in range(num_outs))

    def top_down(self, sources: Sequence[torch.Tensor]) -> list:
        """``T_1 ... T_L``: each level's lateral plus the upsampled level above it."""
        merged = [self.laterals[-1](sources[-1])]
        for level in reversed(range(len(sources) - 1)):
            lateral = self.laterals[level](sources[level])
            merged.insert(0, lateral + self.upsamples[level](merged[0], lateral.shape[-2:]))
        return merged

    def forward(self, inputs) -> Tuple[torch.Tensor, ...]:
        merged = self.top_down(self.sources(inputs))
        outs = [conv(t) for conv, t in zip(self.head_convs, merged)]
        if self.attentions is not None:
            outs = [att(o) for att, o in zip(self.attentions, outs)]
        return tuple(outs)
