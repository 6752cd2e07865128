"""A ResNet with attention before its stages: after the stem, and at each stage's input.

The positions inside a block stay mmdet's ``plugins`` (``after_conv1``/``2``/``3``); the
backbone's outputs (what the neck receives) and the neck's outputs are
:class:`NeckAttention`'s ``position='before'`` and ``'after'``.
"""
from mmdet.registry import MODELS

from .attention_config import build_attention
from .resnet_basic_plugins import PluginResNet


@MODELS.register_module()
class AttentionResNet(PluginResNet):
    """mmdet's ``ResNet`` (R-18/34: :class:`PluginResNet`) with attention outside the
    blocks, a placement study's "pre-convolution" positions (not in the CBAM paper):

    .. code-block:: none

        image -> conv1 -> norm1 -> relu -> maxpool -> [stem_attention]
          -> [layer1_input_attention] -> layer1 -> C2 (to the neck)
          -> [layer2_input_attention] -> layer2 -> C3 ... -> layer4 -> C5

    A stage's input attention is on the path into the stage only: the map handed to the
    neck (C2..C5) is the stage output before it. ``stem_attention`` and
    ``layer1_input_attention`` sit at the same point (the stem's output).

    Args:
        depth (int): as mmdet's ``ResNet``; every other argument too (``plugins``
            included, whose keys do not change).
        stem_attention (dict, optional): config without ``in_channels`` (e.g.
            ``dict(type='CBAM', ratio=16)``) of one module named ``stem_attention`` on
            the stem's output (``stem_channels``).
        stage_input_attention (dict, optional): the same, built once per stage as
            ``layer<i>_input_attention`` on the input of its first block (the channels
            of the stem's output, then of the previous stage's output).

    The modules are not frozen with ``frozen_stages``. Without either option this is
    :class:`PluginResNet`: same modules, keys and outputs.
    """

    def __init__(self, depth, stem_attention=None, stage_input_attention=None, **kwargs):
        super().__init__(depth, **kwargs)
        self.with_stem_attention = stem_attention is not None
        self.with_stage_input_attention = stage_input_attention is not None
        if self.with_stem_attention:
            self.stem_attention = build_attention(
                'AttentionResNet', 'stem_attention', stem_attention, self.stem_channels)
        if self.with_stage_input_attention:
            for name in self.res_layers:
                self.add_module(f'{name}_input_attention', build_attention(
                    'AttentionResNet', 'stage_input_attention', stage_input_attention,
                    getattr(self, name)[0].conv1.in_channels))

    def forward(self, x):
        x = self.stem(x) if self.deep_stem else self.relu(self.norm1(self.conv1(x)))
        x = self.maxpool(x)
        if self.with_stem_attention:
            x = self.stem_attention(x)
        outs = []
        for i, name in enumerate(self.res_layers):
            if self.with_stage_input_attention:
                x = getattr(self, f'{name}_input_attention')(x)
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
