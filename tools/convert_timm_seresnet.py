"""Convert a timm SE-ResNet state dict (seresnet18/34/50/101/152) into
a backbone checkpoint for mmdet's ResNet + SE plugin.

    python tools/convert_timm_seresnet.py seresnet50.pth checkpoints/seresnet50_mmdet.pth

Then start a detector from it with
``init_cfg=dict(type='Pretrained', checkpoint='checkpoints/seresnet50_mmdet.pth')``
(configs/pretrained/). Any key that does not map is an error and nothing is written.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cbam_mmdet.convert import (CheckpointConversionError, conversion_summary,  # noqa: E402
                                convert_checkpoint_file)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='timm weights (.pth/.bin): a plain state dict or a '
                        'train checkpoint with a state_dict entry')
    parser.add_argument('dst', help='converted backbone checkpoint to write')
    parser.add_argument('--depth', type=int, choices=[18, 34, 50, 101, 152],
                        help='refuse a checkpoint of another depth (default: any)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        converted = convert_checkpoint_file(args.src, args.dst, 'timm_seresnet', args.depth)
    except CheckpointConversionError as e:
        sys.exit(f'error: {e}')
    print('\n'.join(conversion_summary(converted, args.dst)))


if __name__ == '__main__':
    main()
