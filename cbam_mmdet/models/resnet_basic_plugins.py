"""mmdet's ResNet whose BasicBlock (ResNet-18/34) takes plugins, as its Bottleneck does.

mmdet 3.3.0's ``BasicBlock`` asserts ``plugins is None``, so CBAM or SE cannot go into a
ResNet-18/34 backbone (the official CBAM code has it in the BasicBlock too).
:class:`PluginResNet` is mmdet's ``ResNet`` with :class:`BasicBlockWithPlugins` for
depths 18 and 34; for 50/101/152 it is mmdet's ``ResNet`` unchanged (same Bottleneck,
same keys), so one backbone type covers every depth.
"""
import torch.utils.checkpoint as cp
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck, ResNet
from mmdet.registry import MODELS

BASIC_BLOCK_POSITIONS = ('after_conv1', 'after_conv2')


class BasicBlockWithPlugins(BasicBlock):
    """mmdet's ``BasicBlock`` with plugins, inserted like the Bottleneck's:

    .. code-block:: none

        x -> conv1 -> norm1 -> relu -> [after_conv1] -> conv2 -> norm2 -> [after_conv2]
          -> (+ identity or downsample(x)) -> relu

    ``after_conv2`` is the end of the residual branch, before the addition: where the
    official CBAM code puts CBAM in its BasicBlock (and where ``after_conv3`` puts it in a
    Bottleneck). A BasicBlock has no third convolution, so ``position='after_conv3'`` is
    refused with a ValueError naming the allowed positions (it is not silently moved).
    Both positions get ``in_channels = planes``. Without plugins the block computes
    exactly mmdet's ``BasicBlock``.
    """

    def __init__(self, inplanes, planes, plugins=None, **kwargs):
        super().__init__(inplanes, planes, plugins=None, **kwargs)
        self.plugins = plugins
        self.with_plugins = plugins is not None
        self.after_conv1_plugin_names = []
        self.after_conv2_plugin_names = []
        if not self.with_plugins:
            return
        if not isinstance(plugins, (list, tuple)):
            raise ValueError(f'plugins must be a list of dicts, got {plugins!r}')
        for plugin in plugins:
            position = plugin.get('position')
            if position not in BASIC_BLOCK_POSITIONS:
                raise ValueError(
                    f'plugin position must be one of {list(BASIC_BLOCK_POSITIONS)} in a '
                    f'BasicBlock (ResNet-18/34), got {position!r}: a BasicBlock has two '
                    f'convolutions; after_conv2 is the end of its residual branch, '
                    f'where after_conv3 is in a Bottleneck')
        self.after_conv1_plugin_names = self.make_block_plugins(
            planes, [p['cfg'] for p in plugins if p['position'] == 'after_conv1'])
        self.after_conv2_plugin_names = self.make_block_plugins(
            planes, [p['cfg'] for p in plugins if p['position'] == 'after_conv2'])

    # The Bottleneck's helpers, same behaviour (build_plugin_layer, optional postfix).
    make_block_plugins = Bottleneck.make_block_plugins
    forward_plugin = Bottleneck.forward_plugin

    def forward(self, x):
        def _inner_forward(x):
            identity = x
            out = self.relu(self.norm1(self.conv1(x)))
            out = self.forward_plugin(out, self.after_conv1_plugin_names)
            out = self.norm2(self.conv2(out))
            out = self.forward_plugin(out, self.after_conv2_plugin_names)
            if self.downsample is not None:
                identity = self.downsample(x)
            return out + identity

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner_forward, x)
        else:
            out = _inner_forward(x)
        return self.relu(out)


@MODELS.register_module()
class PluginResNet(ResNet):
    """mmdet's ``ResNet`` whose ResNet-18/34 blocks accept ``plugins``.

    Arguments are mmdet's ``ResNet``'s. For depth 18/34 the blocks are
    :class:`BasicBlockWithPlugins`: plugin positions ``'after_conv1'`` and
    ``'after_conv2'`` (the block end, the official CBAM placement), e.g.
    ``plugins=[dict(cfg=dict(type='CBAM'), position='after_conv2')]``. For depth
    50/101/152 it is mmdet's ``ResNet`` (Bottleneck, positions after_conv1/2/3).
    ``zero_init_residual`` zero-initialises ``norm2`` of the BasicBlocks as mmdet does.
    """

    arch_settings = dict(ResNet.arch_settings)
    arch_settings[18] = (BasicBlockWithPlugins, ResNet.arch_settings[18][1])
    arch_settings[34] = (BasicBlockWithPlugins, ResNet.arch_settings[34][1])

    def __init__(self, depth, pretrained=None, init_cfg=None, **kwargs):
        super().__init__(depth, pretrained=pretrained, init_cfg=init_cfg, **kwargs)
        # mmdet's ResNet picks the zero-init rule with `block is BasicBlock`.
        if (issubclass(self.block, BasicBlockWithPlugins) and self.zero_init_residual
                and pretrained is None and init_cfg is None):
            zero_norm2 = dict(type='Constant', val=0, override=dict(name='norm2'))
            for name in self.res_layers:
                for block in getattr(self, name):
                    block.init_cfg = dict(zero_norm2)
