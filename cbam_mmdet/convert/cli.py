"""The converter tools' command line (tools/convert_*.py) and what they print."""
import argparse
import pprint
import sys


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


def main(source_format, doc, argv=None):
    """Parse ``SRC DST [--depth N]``, convert, print the summary; a conversion error
    exits with its message."""
    from . import CheckpointConversionError, convert_checkpoint_file
    parser = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    parser.add_argument('src', help='source checkpoint (.pth/.pth.tar/.bin): a state dict '
                                    'or a dict with a state_dict entry')
    parser.add_argument('dst', help='converted backbone checkpoint to write')
    parser.add_argument('--depth', type=int, choices=[18, 34, 50, 101, 152],
                        help='refuse a checkpoint of another depth (default: any)')
    args = parser.parse_args(argv)
    try:
        converted = convert_checkpoint_file(args.src, args.dst, source_format, args.depth)
    except CheckpointConversionError as e:
        sys.exit(f'error: {e}')
    print('\n'.join(conversion_summary(converted, args.dst)))
