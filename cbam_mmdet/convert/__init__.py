"""Start mmdet backbones from ImageNet attention checkpoints: the official ResNet + CBAM
(Jongchan/attention-module) and timm's SE-ResNets, converted into mmdet's ResNet (or
:class:`~cbam_mmdet.models.PluginResNet` for depth 18/34) with the CBAM / SE plugin."""
from .checkpoint_io import read_state_dict, save_converted
from .official_cbam import convert_official_cbam
from .resnet_conversion import (CheckpointConversionError, ConvertedBackbone,
                                build_backbone)
from .resnet_layout import plugin_architecture
from .cli import conversion_summary
from .timm_seresnet import convert_timm_seresnet

CONVERTERS = dict(official_cbam=convert_official_cbam,
                  timm_seresnet=convert_timm_seresnet)


def convert_checkpoint_file(src, dst, source_format, depth=None):
    """Read ``src``, convert it with ``CONVERTERS[source_format]``, write ``dst``; returns
    the :class:`ConvertedBackbone`."""
    if source_format not in CONVERTERS:
        raise ValueError(f'source_format must be one of {sorted(CONVERTERS)}, '
                         f'got {source_format!r}')
    converted = CONVERTERS[source_format](read_state_dict(src), depth=depth)
    save_converted(converted, dst, source=src)
    return converted


__all__ = ['CheckpointConversionError', 'ConvertedBackbone', 'CONVERTERS', 'build_backbone',
           'conversion_summary', 'convert_checkpoint_file', 'convert_official_cbam',
           'convert_timm_seresnet', 'plugin_architecture', 'read_state_dict',
           'save_converted']
