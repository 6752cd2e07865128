"""What a conversion did, as the converter tools print it."""
import pprint


def conversion_summary(converted, dst):
    """Lines telling what was written, what was dropped, and the backbone config."""
    lines = [f'wrote {len(converted.state_dict)} tensors ({converted.source_format} -> '
             f'mmdet {converted.backbone["type"]}-{converted.backbone["depth"]}) to {dst}']
    if converted.dropped_keys:
        lines.append(f'dropped {len(converted.dropped_keys)} keys (ImageNet classifier): '
                     + ', '.join(converted.dropped_keys))
    if converted.filled_keys:
        lines.append(f'filled {len(converted.filled_keys)} BatchNorm num_batches_tracked '
                     f'counters the source lacks with 0')
    backbone = dict(converted.backbone,
                    init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    lines.append('use it in a config as:\nmodel = dict(backbone=' +
                 pprint.pformat(backbone, sort_dicts=False) + ')')
    return lines
