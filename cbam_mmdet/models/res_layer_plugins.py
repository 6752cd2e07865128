"""mmdet's C4 shared head with attention plugins in its blocks.

In Faster R-CNN C4 the backbone stops after conv4 and the ResNet's conv5 stage runs on
every RoI as the box head (mmdet's shared head ``ResLayer``). mmdet's ``ResLayer`` builds
its blocks without plugins; :class:`PluginResLayer` passes ``plugins`` to them as mmdet's
``ResNet`` backbone does, so CBAM or SE sits in every block of the detector, conv5
included. The module names stay mmdet's (``layer4.N.cbam.*``): the ImageNet checkpoint
converted for the backbone (``tools/convert_official_cbam.py``) loads into it as well.
"""
from mmdet.models.backbones.resnet import BasicBlock, ResNet
from mmdet.models.layers import ResLayer as BlockSequence
from mmdet.models.roi_heads.shared_heads import ResLayer
from mmdet.registry import MODELS

from .resnet_basic_plugins import BasicBlockWithPlugins


def check_plugins(plugins):
    """``plugins`` as mmdet's ResNet takes them, without ``stages`` (the shared head is
    one stage); ValueError naming the field otherwise."""
    if plugins is None:
        return None
    if not isinstance(plugins, (list, tuple)) or not all(
            isinstance(p, dict) and {'cfg', 'position'} <= set(p) for p in plugins):
        raise ValueError(f"shared_head.plugins must be None or a list of "
                         f"dict(cfg=..., position=...), got {plugins!r}")
    staged = [p for p in plugins if 'stages' in p]
    if staged:
        raise ValueError(f"shared_head.plugins apply to every block of the shared head's "
                         f"one stage: remove 'stages' from {staged!r}")
    return list(plugins)


@MODELS.register_module()
class PluginResLayer(ResLayer):
    """mmdet's shared head ``ResLayer`` (ResNet stage ``stage`` run on RoI features)
    with ``plugins`` in every block, e.g.
    ``[dict(cfg=dict(type='CBAM', ratio=16), position='after_conv3')]``.

    Without plugins it is mmdet's ``ResLayer``. For depth 18/34 the blocks are
    :class:`BasicBlockWithPlugins` (positions ``after_conv1`` / ``after_conv2``).
    """

    def __init__(self, depth, stage=3, stride=2, dilation=1, style='pytorch',
                 norm_cfg=dict(type='BN', requires_grad=True), norm_eval=True,
                 with_cp=False, dcn=None, plugins=None, pretrained=None, init_cfg=None):
        super().__init__(depth, stage=stage, stride=stride, dilation=dilation, style=style,
                         norm_cfg=norm_cfg, norm_eval=norm_eval, with_cp=with_cp, dcn=dcn,
                         pretrained=pretrained, init_cfg=init_cfg)
        self.plugins = check_plugins(plugins)
        if not self.plugins:
            return
        block, stage_blocks = ResNet.arch_settings[depth]
        if block is BasicBlock:
            block = BasicBlockWithPlugins
        # mmdet's ResLayer's stage, rebuilt with the plugins (same names, same order)
        self.add_module(f'layer{stage + 1}', BlockSequence(
            block, 64 * 2**(stage - 1) * block.expansion, 64 * 2**stage,
            stage_blocks[stage], stride=stride, dilation=dilation, style=style,
            with_cp=with_cp, norm_cfg=norm_cfg, dcn=dcn, plugins=self.plugins))
