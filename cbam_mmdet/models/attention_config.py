"""Building an attention module (CBAM, SE, any registered one) from a config without
``in_channels``, on a feature map whose channels the owner knows."""
from mmdet.registry import MODELS


def build_attention(owner, field, cfg, in_channels):
    """The attention module of config ``cfg`` (``type`` and options, no ``in_channels``)
    on a feature map of ``in_channels`` channels."""
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f"{owner}: {field} must be None or a config dict with a 'type' "
                         f"key, e.g. dict(type='CBAM', ratio=16), got {cfg!r}")
    if 'in_channels' in cfg:
        raise ValueError(f"{owner}: {field} must not set in_channels (got "
                         f"{cfg['in_channels']!r}); it is the channels of the feature map "
                         f'the module sits on ({in_channels})')
    return MODELS.build(dict(cfg, in_channels=in_channels))
