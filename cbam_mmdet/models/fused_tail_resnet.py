"""mmdet's ResNet whose Bottleneck hands its tail to an ``after_conv3`` plugin.

A Bottleneck ends with ``relu(plugin(norm3(conv3(.))) + identity)``: after the plugin,
two more operations (the addition and the ReLU), each a kernel and, in training, an
autograd node with its own backward. :class:`FusedTailBottleneck` instead calls the
plugin's ``forward_residual(out, identity)`` where the block's only ``after_conv3``
plugin has one (:meth:`cbam_mmdet.SE.forward_residual`,
:meth:`cbam_mmdet.CBAM.forward_residual`), which computes the same
``max(plugin(out) + identity, 0)`` in the plugin's own last pass on the Triton path (and
in CPU inference, in the C++ kernels' last pass). The values are those of mmdet's
Bottleneck (the same equation; fp16 rounds once instead of three times); the
parameters, buffers and state_dict keys are the same.

The block takes mmdet's own forward where the tail cannot be handed over: no such plugin
(or more than one at ``after_conv3``), checkpointing (``with_cp``) while training, or
hooks on the plugin (forward or backward, its own or global), which must see the
plugin's output as mmdet's block produces it.
"""
import torch.nn.modules.module as module_hooks
from mmdet.models.backbones.resnet import Bottleneck, ResNet
from mmdet.registry import MODELS

from .resnet_basic_plugins import BasicBlockWithPlugins, PluginResNet


def _hooked(module):
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or module_hooks._global_forward_hooks
                or module_hooks._global_forward_pre_hooks
                or module_hooks._global_backward_hooks
                or module_hooks._global_backward_pre_hooks)


class _FusedTail:
    """What the two blocks share: the plugin at ``TAIL_POSITION`` (the end of the
    residual branch) takes the tail; the subclass gives the branch up to it."""

    TAIL_POSITION = None

    def fused_tail(self):
        """The plugin's ``forward_residual`` this block hands its tail to, or None."""
        if not self.with_plugins:
            return None
        names = getattr(self, self.TAIL_POSITION + '_plugin_names')
        if len(names) != 1:
            return None
        plugin = getattr(self, names[0])
        tail = getattr(plugin, 'forward_residual', None)
        if tail is None or _hooked(plugin):
            return None
        return tail

    def forward(self, x):
        tail = self.fused_tail()
        if tail is None or (self.with_cp and x.requires_grad):
            return super().forward(x)
        out = self.branch(x)
        identity = x if self.downsample is None else self.downsample(x)
        return tail(out, identity)


class FusedTailBottleneck(_FusedTail, Bottleneck):
    """mmdet's ``Bottleneck`` whose residual addition and final ReLU run inside the
    ``after_conv3`` plugin's ``forward_residual`` where it has one (module docstring)."""

    TAIL_POSITION = 'after_conv3'

    def branch(self, x):
        """The residual branch up to the ``after_conv3`` plugin (mmdet's order)."""
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.forward_plugin(out, self.after_conv1_plugin_names)
        out = self.relu(self.norm2(self.conv2(out)))
        out = self.forward_plugin(out, self.after_conv2_plugin_names)
        return self.norm3(self.conv3(out))


class FusedTailBasicBlock(_FusedTail, BasicBlockWithPlugins):
    """:class:`BasicBlockWithPlugins` (ResNet-18/34) whose residual addition and final
    ReLU run inside the ``after_conv2`` plugin's ``forward_residual`` where it has one
    (the end of a BasicBlock's residual branch, as ``after_conv3`` is a Bottleneck's)."""

    TAIL_POSITION = 'after_conv2'

    def branch(self, x):
        """The residual branch up to the ``after_conv2`` plugin."""
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.forward_plugin(out, self.after_conv1_plugin_names)
        return self.norm2(self.conv2(out))


@MODELS.register_module()
class FusedTailResNet(PluginResNet):
    """mmdet's ``ResNet`` (as :class:`PluginResNet`, for every depth) whose Bottlenecks
    (depth 50/101/152) are :class:`FusedTailBottleneck` and whose BasicBlocks (depth
    18/34) are :class:`FusedTailBasicBlock`: with
    ``plugins=[dict(cfg=dict(type='SE'), position='after_conv3')]`` (or ``'CBAM'``;
    ``'after_conv2'`` in a BasicBlock) each block's residual addition and ReLU run inside
    the plugin (its ``forward_residual``). Same arguments, parameters and state_dict keys
    as mmdet's ``ResNet`` (:class:`PluginResNet` for 18/34); without such a plugin the
    blocks compute exactly those."""

    arch_settings = dict(PluginResNet.arch_settings)
    for _depth in (18, 34):
        arch_settings[_depth] = (FusedTailBasicBlock, ResNet.arch_settings[_depth][1])
    for _depth in (50, 101, 152):
        arch_settings[_depth] = (FusedTailBottleneck, ResNet.arch_settings[_depth][1])
    del _depth
