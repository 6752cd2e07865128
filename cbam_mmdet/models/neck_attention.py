from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmdet.registry import MODELS

from ._validate import check_choice


@MODELS.register_module()
class NeckAttention(nn.Module):
    """Any neck, followed (or preceded) by one attention module on each of its output
    (input) levels.

    .. math::
        P_l = \\mathrm{Neck}(C)_l, \\qquad \\tilde P_l = A_l(P_l), \\quad l = 1 \\dots L

    where each ``A_l`` is built from ``attention`` (any module registered in
    ``mmdet.registry.MODELS`` that takes ``in_channels`` and returns a map of the same
    shape, e.g. ``CBAM`` or ``SE``) with ``in_channels`` = the channels of level ``l``.
    This is the CBAM paper's detection placement "before every classifier" (SSD: every
    detection feature level) and, around an FPN, attention after the neck. With
    ``position='before'`` the modules are on the backbone's outputs instead, the neck's
    inputs: :math:`P = \\mathrm{Neck}(A_1(C_1), \\dots, A_L(C_L))`.

    Config, e.g. CBAM on every level of SSD300's neck::

        neck=dict(type='NeckAttention',
                  neck=dict(type='SSDNeck', in_channels=(512, 1024),
                            out_channels=(512, 1024, 512, 256, 256, 256), ...),
                  attention=dict(type='CBAM', ratio=16))

    The wrapped neck is the submodule ``neck`` and the attention modules are
    ``attentions.<level>``: inside a detector the inner neck's parameters are
    ``neck.neck.<its own keys>`` and the attention's ``neck.attentions.<l>.<keys>``.

    Args:
        neck (dict): config of the wrapped neck (any registered neck).
        attention (dict): config of the attention module, without ``in_channels``.
        in_channels (int | Sequence[int], optional): channels of the levels the modules
            are on. By default they are read from the neck: its ``out_channels`` (a
            per-level sequence, or an int with ``num_outs`` levels; ``position='before'``:
            its ``in_channels``), from the built module or else from its config. Give
            them for a neck that exposes neither.
        num_levels (int, optional): number of levels when ``in_channels`` is one int for
            all levels and the neck has no ``num_outs``.
        position (str): ``'after'`` (default: on the neck's outputs) or ``'before'`` (on
            its inputs, the backbone's outputs). The keys are the same.
    """

    def __init__(self,
                 neck: dict,
                 attention: dict,
                 in_channels: Union[int, Sequence[int], None] = None,
                 num_levels: Optional[int] = None,
                 position: str = 'after'):
        super().__init__()
        check_choice('NeckAttention position', position, ('after', 'before'))
        self.position = position
        for name, cfg in (('neck', neck), ('attention', attention)):
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise ValueError(f'NeckAttention: {name} must be a config dict with a '
                                 f"'type' key, got {cfg!r}")
        if 'in_channels' in attention:
            raise ValueError(
                'NeckAttention: attention must not set in_channels (got '
                f"{attention['in_channels']!r}); it is set per level from the neck's "
                'output channels (or NeckAttention.in_channels)')
        self.neck = MODELS.build(neck)
        self.in_channels = self._level_channels(neck, in_channels, num_levels)
        self.attentions = nn.ModuleList(
            MODELS.build(dict(attention, in_channels=c)) for c in self.in_channels)

    def _level_channels(self, neck_cfg, in_channels, num_levels) -> List[int]:
        """The channels of each level the modules are on, as a list of ints."""
        source = 'NeckAttention.in_channels'
        side, which = (('out_channels', 'output') if self.position == 'after'
                       else ('in_channels', 'input'))
        channels = in_channels
        if channels is None:
            channels = getattr(self.neck, side, None)
            source = f"{neck_cfg['type']}.{side}"
            if channels is None:
                channels = neck_cfg.get(side)
        if channels is None:
            raise ValueError(
                f"NeckAttention: cannot infer the {which} channels of "
                f"{neck_cfg['type']}: it has no {side} (attribute or config key); give "
                f'in_channels=<int or one int per level>')
        if num_levels is None and self.position == 'after':
            num_levels = getattr(self.neck, 'num_outs', None) or neck_cfg.get('num_outs')
        if isinstance(channels, int) and not isinstance(channels, bool):
            if num_levels is None:
                raise ValueError(
                    f'NeckAttention: {source}={channels} is one int, and the number of '
                    f"levels of {neck_cfg['type']} is unknown (no num_outs): give "
                    f'num_levels=<int> or in_channels=<one int per output level>')
            if isinstance(num_levels, bool) or not isinstance(num_levels, int) \
                    or num_levels < 1:
                raise ValueError(f'NeckAttention: num_levels must be an integer >= 1, '
                                 f'got {num_levels!r}')
            channels = [channels] * num_levels
        if not isinstance(channels, Sequence) or isinstance(channels, str) \
                or len(channels) == 0 or not all(
                    isinstance(c, int) and not isinstance(c, bool) and c >= 1
                    for c in channels):
            raise ValueError(f'NeckAttention: {source} must be an integer >= 1 or a '
                             f'non-empty sequence of integers >= 1, got {channels!r}')
        return list(channels)

    def init_weights(self):
        """Initialise the wrapped neck (its ``init_cfg``) and the attention modules
        (their own initialisation, e.g. CBAM's official one)."""
        for module in [self.neck, *self.attentions]:
            if hasattr(module, 'init_weights'):
                module.init_weights()

    def forward(self, inputs) -> Tuple[torch.Tensor, ...]:
        if self.position == 'before':
            return self.neck(self._attend(inputs, 'received'))
        return self._attend(self.neck(inputs), 'returned')

    def _attend(self, levels, verb):
        if len(levels) != len(self.attentions):
            raise ValueError(
                f'NeckAttention: the neck {verb} {len(levels)} levels but '
                f'{len(self.attentions)} attention modules were built for in_channels='
                f'{self.in_channels}; set in_channels/num_levels to match the neck')
        return tuple(att(level) for att, level in zip(self.attentions, levels))
