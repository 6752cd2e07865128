"""Draw what the attention modules of a detector do on some images.

    python tools/vis_attention.py CONFIG CHECKPOINT IMAGE [IMAGE ...] --out-dir DIR
        [--score-thr 0.3] [--reduce last|mean] [--scale relative|absolute] [--dpi 100]

For each image: DIR/<name>_attention.png (detections, each stage's spatial map) and
DIR/<name>_channel_attention.png/.json; see cbam_mmdet/visualization/attention_figures.py.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.apis import parse_tool_args  # noqa: E402
from cbam_mmdet.visualization.attention_figures import (SCALES,  # noqa: E402
                                                        visualize_attention)
from cbam_mmdet.visualization.attention_maps import STAGE_REDUCTIONS  # noqa: E402
from cbam_mmdet.visualization.inference import load_detector  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Attention maps of a CBAM/SE detector')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out-dir', required=True, help='folder for the PNGs')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='draw detections with at least this score')
    parser.add_argument('--reduce', choices=STAGE_REDUCTIONS, default='last',
                        help="a stage's spatial map: its last block's or the blocks' mean")
    parser.add_argument('--scale', choices=SCALES, default='relative',
                        help='colour scale of the maps: stretched to their '
                             'range of values (relative) or fixed to [0, 1] (absolute)')
    parser.add_argument('--dpi', type=int, default=100, help='resolution of the PNGs')
    parser.add_argument('--device', default='cpu')
    return parse_tool_args(parser, argv, launcher=False)


def main(argv=None):
    args = parse_args(argv)
    model = load_detector(args.config, args.checkpoint, device=args.device,
                          cfg_options=args.cfg_options)
    written = []
    for image in args.images:
        out = visualize_attention(model, image, args.out_dir, score_thr=args.score_thr,
                                  reduce=args.reduce, scale=args.scale, dpi=args.dpi)
        written += [p for p in (out['attention'], out['channel'], out['stats']) if p]
    for p in written:
        print(p)
    return written


if __name__ == '__main__':
    main()
