"""The official CBAM ImageNet checkpoints (Jongchan/attention-module) -> mmdet ResNet + CBAM.

The ResNet keys are mmdet's already and ``fc.*`` is dropped; :data:`CBAM_RULES` rename
the CBAM keys. Both pool channels as [max; mean]: the spatial weights carry over as they
are (timm's CbamModule pools [mean; max]).
"""
from .key_rules import TORCHVISION_RESNET_RULES, KeyRule
from .resnet_conversion import CheckpointConversionError, convert_resnet

CBAM_RULES = (
    KeyRule('layer{s}.{b}.cbam.ChannelGate.mlp.1.{p}',
            'layer{s}.{b}.cbam.channel_attention.fc1.{p}'),
    KeyRule('layer{s}.{b}.cbam.ChannelGate.mlp.3.{p}',
            'layer{s}.{b}.cbam.channel_attention.fc2.{p}'),
    KeyRule('layer{s}.{b}.cbam.SpatialGate.spatial.conv.weight',
            'layer{s}.{b}.cbam.spatial_attention.conv.weight'),
    KeyRule('layer{s}.{b}.cbam.SpatialGate.spatial.bn.{p}',
            'layer{s}.{b}.cbam.spatial_attention.bn.{p}'),
)
OFFICIAL_CBAM_RULES = TORCHVISION_RESNET_RULES + CBAM_RULES


def check_not_other_format(keys, expected, other_marker, other_format, other_tool):
    """A clear error when ``keys`` are another converter's format."""
    if any(other_marker in k for k in keys):
        example = next(k for k in keys if other_marker in k)
        raise CheckpointConversionError(
            f'this is a {other_format} checkpoint (keys like {example!r}), not '
            f'{expected}: convert it with {other_tool}')
    if any('.cbam.channel_attention.' in k for k in keys):
        raise CheckpointConversionError(
            'this checkpoint already has mmdet names (cbam.channel_attention, ...): load '
            "it directly with init_cfg=dict(type='Pretrained', checkpoint=...)")


def convert_official_cbam(state_dict, depth=None):
    """Convert an official ResNet + CBAM state dict (no ``module.`` prefix) into a
    :class:`ConvertedBackbone`: ``ResNet`` (CBAM ``after_conv3``) or, for depth 18/34,
    ``PluginResNet`` (``after_conv2``), the ratio read from the MLP shapes. ``depth``:
    refuse another layout. Raises :class:`CheckpointConversionError` listing every key
    that does not map (unknown, missing, unexpected, mis-shaped), for a timm file, or a
    wrong depth."""
    check_not_other_format(state_dict, 'an official ResNet + CBAM checkpoint', '.se.fc1.',
                           'timm SE-ResNet', 'tools/convert_timm_seresnet.py')
    plugin_cfg = dict(type='CBAM')
    kernels = {tuple(v.shape[-2:]) for k, v in state_dict.items()
               if k.endswith('cbam.SpatialGate.spatial.conv.weight')}
    if len(kernels) == 1 and next(iter(kernels)) != (7, 7):
        k = next(iter(kernels))
        if k[0] != k[1] or k[0] % 2 == 0:
            raise CheckpointConversionError(
                f'spatial gate kernel {k} is not square and odd: CBAM cannot hold it')
        plugin_cfg['spatial_kernel'] = k[0]
    return convert_resnet(
        state_dict, rules=OFFICIAL_CBAM_RULES, source_format='official_cbam',
        plugin_cfg=plugin_cfg, fc1_suffix='cbam.channel_attention.fc1.weight',
        depth=depth, describe_source="'layer1.0.cbam.ChannelGate.mlp.1.weight'")
