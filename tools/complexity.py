"""Params and GFLOPs of configs as a markdown table: the backbone as an ImageNet classifier
beside the CBAM paper's numbers, and the whole detector (no data, no pretrained weights).

    python tools/complexity.py configs/faster_rcnn_r50_coco.py configs/faster_rcnn_r50_se_coco.py
        [--shape H [W]] [--no-backbone] [--no-detector]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.complexity import DETECTOR_SHAPE, complexity_table  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Params and GFLOPs of configs')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--shape', type=int, nargs='+', default=list(DETECTOR_SHAPE[1:]),
                        help='detector input H [W] (default 800 1333)')
    parser.add_argument('--no-backbone', action='store_true',
                        help='skip the backbone (ImageNet classifier) columns')
    parser.add_argument('--no-detector', action='store_true',
                        help='skip the whole-detector columns')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 1:
        parser.error(f'--shape takes H or H W (integers >= 1), got {args.shape}')
    return args


def main(argv=None):
    args = parse_args(argv)
    h, w = (args.shape * 2)[:2]
    table = complexity_table(args.configs, detector_shape=(3, h, w),
                             backbone=not args.no_backbone, detector=not args.no_detector)
    print(table)
    return table


if __name__ == '__main__':
    main()
