"""What a ResNet state dict (mmdet names) says about its network: depth, block type, and
the attention plugin's reduction ratio in each stage."""
import re

from mmdet.models.backbones.resnet import Bottleneck, ResNet

from .errors import CheckpointConversionError

_BLOCK_KEY = re.compile(r'layer(\d+)\.(\d+)\.')


def stage_blocks(keys):
    """``{stage: number of blocks}`` (stages 1..4) from keys ``layer{s}.{b}.*``."""
    blocks = {}
    for key in keys:
        m = _BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != [1, 2, 3, 4]:
        raise CheckpointConversionError(
            f'expected the four ResNet stages layer1..layer4, found stages '
            f'{sorted(blocks)}: not a ResNet state dict')
    for stage, indices in blocks.items():
        if sorted(indices) != list(range(len(indices))):
            raise CheckpointConversionError(
                f'layer{stage} has blocks {sorted(indices)}: block indices must run 0..n-1')
    return {stage: len(indices) for stage, indices in sorted(blocks.items())}


def resnet_depth(keys, depth=None):
    """The ResNet depth of a state dict in mmdet names (block type and counts per stage);
    ``depth``, when given, must agree."""
    counts = tuple(stage_blocks(keys).values())
    bottleneck = any(re.match(r'layer\d+\.\d+\.conv3\.', k) for k in keys)
    found = [d for d, (block, n) in ResNet.arch_settings.items()
             if tuple(n) == counts and (block is Bottleneck) == bottleneck]
    block_name = 'Bottleneck' if bottleneck else 'BasicBlock'
    if not found:
        known = {d: (('Bottleneck' if b is Bottleneck else 'BasicBlock'), n)
                 for d, (b, n) in ResNet.arch_settings.items()}
        raise CheckpointConversionError(
            f'{block_name} blocks {counts} per stage match no ResNet depth; known layouts: '
            f'{known}')
    if depth is not None and depth != found[0]:
        raise CheckpointConversionError(
            f'depth={depth} was asked for, but the checkpoint holds a ResNet-{found[0]} '
            f'({block_name} blocks {counts} per stage)')
    return found[0]


def ratios_for(pairs):
    """The integer reductions r with ``channels // r == hidden`` for every
    ``(channels, hidden)`` pair, as a set."""
    allowed = None
    for channels, hidden in pairs:
        ok = {r for r in range(1, channels + 1) if channels // r == hidden}
        allowed = ok if allowed is None else allowed & ok
    return allowed or set()


def reduction_ratios(hidden_sizes):
    """The reduction ratio of stages 1..4 from ``{block: (channels, hidden)}``: the
    largest one ratio that fits every stage, else the largest per stage (timm's
    SE-ResNet-18/34 have r = 8 in layer1, 16 elsewhere)."""
    by_stage = {}
    for block, pair in hidden_sizes.items():
        by_stage.setdefault(int(block.split('.')[0][len('layer'):]), []).append(pair)
    common = ratios_for([p for pairs in by_stage.values() for p in pairs])
    if common:
        return [max(common)] * len(by_stage)
    ratios = []
    for stage, pairs in sorted(by_stage.items()):
        allowed = ratios_for(pairs)
        if not allowed:
            raise CheckpointConversionError(
                f'no integer reduction ratio r gives the hidden sizes of layer{stage} '
                f'({sorted(set(pairs))} as (channels, hidden)) with hidden = channels // '
                f'r: the plugin cannot hold these weights')
        ratios.append(max(allowed))
    return ratios


def plugin_configs(plugin_cfg, ratios, position):
    """mmdet ``plugins`` entries giving every stage its ratio: one entry when all stages
    share it, else one entry per run of equal ratios with a ``stages`` mask."""
    if len(set(ratios)) == 1:
        return [dict(cfg=dict(plugin_cfg, ratio=ratios[0]), position=position)]
    return [dict(cfg=dict(plugin_cfg, ratio=ratio), stages=tuple(r == ratio for r in ratios),
                 position=position) for ratio in dict.fromkeys(ratios)]


# Plugin arguments that choose how a plugin runs, not what it computes or its weights.
EXECUTION_OPTIONS = ('implementation', )


def plugin_architecture(plugins):
    """mmdet ``plugins`` entries without :data:`EXECUTION_OPTIONS` in their ``cfg``: two
    backbones with equal architectures build the same modules and state dict keys."""
    return [dict(p, cfg={k: v for k, v in p['cfg'].items() if k not in EXECUTION_OPTIONS})
            for p in plugins or []]
