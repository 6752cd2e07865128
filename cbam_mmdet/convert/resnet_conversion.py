"""Rename an ImageNet ResNet + attention state dict into mmdet's ResNet + plugin, and
check it against the backbone it is meant for: every key, every shape."""
import re
from dataclasses import dataclass, field

import torch
from mmengine.registry import DefaultScope
from mmdet.registry import MODELS

from .errors import CheckpointConversionError
from .key_rules import CLASSIFIER_RULES, rename, source_name
from .resnet_layout import plugin_configs, reduction_ratios, resnet_depth

_SHOWN = 30


@dataclass
class ConvertedBackbone:
    """A ``state_dict`` with exactly the keys of the ``backbone`` config; the source keys
    dropped (the classifier) and the BatchNorm counters filled with 0."""
    state_dict: dict
    backbone: dict
    source_format: str
    dropped_keys: list = field(default_factory=list)
    filled_keys: list = field(default_factory=list)


def _listing(title, items):
    shown = '\n  '.join(items[:_SHOWN])
    more = f'\n  ... and {len(items) - _SHOWN} more' if len(items) > _SHOWN else ''
    return f'{title} ({len(items)}):\n  {shown}{more}'


def build_backbone(backbone_cfg):
    """The mmdet backbone of ``backbone_cfg``, randomly initialised (no init_cfg)."""
    from .. import models  # noqa: F401  (registers CBAM, SE, PluginResNet)
    import mmdet.models.backbones  # noqa: F401  (registers ResNet)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(dict(backbone_cfg, init_cfg=None))


def check_against_backbone(state_dict, backbone, rules):
    """Raise :class:`CheckpointConversionError` listing every missing, unexpected or
    mis-shaped key; returns the ``num_batches_tracked`` keys filled with 0 (when the
    source has none at all)."""
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in state_dict]
    filled = []
    if missing and all(k.endswith('num_batches_tracked') for k in missing) and not any(
            k.endswith('num_batches_tracked') for k in state_dict):
        for k in missing:
            state_dict[k] = torch.zeros_like(expected[k])
        filled, missing = missing, []
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [f'{k}: checkpoint {tuple(v.shape)}, backbone {tuple(expected[k].shape)}'
                  for k, v in state_dict.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(_listing(
            'missing keys (mmdet name <- expected source name)',
            [f'{k} <- {source_name(k, rules)}' for k in missing]))
    if unexpected:
        problems.append(_listing(
            'unexpected keys (mmdet name <- source name)',
            [f'{k} <- {source_name(k, rules)}' for k in unexpected]))
    if mis_shaped:
        problems.append(_listing('keys whose shape differs', mis_shaped))
    if problems:
        raise CheckpointConversionError(
            'the checkpoint does not map completely onto mmdet ResNet backbone '
            f'{_describe(backbone)}; nothing was written.\n' + '\n'.join(problems))
    return filled


def _describe(backbone):
    return f'{type(backbone).__name__}(depth={backbone.depth}, plugins={backbone.plugins})'


def convert_resnet(state_dict, *, rules, source_format, plugin_cfg, fc1_suffix,
                   depth=None, describe_source=''):
    """Convert a torchvision-named ResNet + attention state dict (no 'module.' prefix)
    with ``rules`` (the classifier is dropped) into a :class:`ConvertedBackbone` with
    ``plugin_cfg`` (e.g. ``dict(type='CBAM')``), the ratio read from the shape of the
    block key ``fc1_suffix``. ``depth``: refuse another layout; ``describe_source``: the
    expected source keys, for error messages."""
    renamed, dropped, unknown = rename(state_dict, rules, CLASSIFIER_RULES)
    if unknown:
        raise CheckpointConversionError(
            f'keys that map to no mmdet ResNet key ({source_format} format); nothing '
            f'was written.\n' + _listing('unknown keys', sorted(unknown)))
    depth = resnet_depth(renamed, depth)
    pattern = re.compile(r'(layer\d+\.\d+)\.' + re.escape(fc1_suffix) + r'\Z')
    hidden = {m.group(1): (v.shape[1], v.shape[0]) for k, v in renamed.items()
              if (m := pattern.match(k)) and v.dim() == 2}
    if not hidden:
        raise CheckpointConversionError(
            f'no attention weights found: expected keys like {describe_source} in every '
            f'block; this is not a {source_format} checkpoint')
    position = 'after_conv3' if depth >= 50 else 'after_conv2'
    backbone_cfg = dict(type='ResNet' if depth >= 50 else 'PluginResNet', depth=depth,
                        plugins=plugin_configs(plugin_cfg, reduction_ratios(hidden),
                                               position))
    backbone = build_backbone(backbone_cfg)
    filled = check_against_backbone(renamed, backbone, rules)
    state = {k: renamed[k] for k in backbone.state_dict()}  # the backbone's key order
    return ConvertedBackbone(state_dict=state, backbone=backbone_cfg,
                             source_format=source_format, dropped_keys=dropped,
                             filled_keys=filled)
