"""Loss and mAP of several training runs on one PNG.

    python tools/plot_curves.py WORK_DIR [WORK_DIR ...] --out curves.png
        [--keys loss mAP] [--labels A B ...] [--smooth N]

A run is a work dir, a timestamp folder or a scalars.json; 'mAP' is the runs' metric
(see cbam_mmdet/visualization/curves.py).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.visualization.curves import plot_curves  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Plot training curves of several runs')
    parser.add_argument('runs', nargs='+', help='work dirs or scalars.json files')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--keys', nargs='+', default=['loss', 'mAP'],
                        help="scalars to plot, one panel each ('mAP': the runs' metric)")
    parser.add_argument('--labels', nargs='+', default=None, help='legend labels')
    parser.add_argument('--smooth', type=int, default=1,
                        help='moving-average window for the losses (records)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    path, _ = plot_curves(args.runs, args.out, keys=args.keys, labels=args.labels,
                          smooth=args.smooth)
    print(path)
    return path


if __name__ == '__main__':
    main()
