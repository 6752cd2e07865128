"""Grad-CAM of a detection, for one or several detectors side by side.

    python tools/grad_cam.py IMAGE [IMAGE ...] --model CONFIG CHECKPOINT [LABEL]
        [--model CONFIG CHECKPOINT [LABEL] ...] --out FILE.png
        [--layer backbone.layer4] [--level N|auto] [--rank 0] [--match iou|rank]
        [--target score|logit] [--score-thr THR]

One row per image, one column per model (the CBAM paper's Figure 4); see
cbam_mmdet/visualization/grad_cam.py.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.apis import parse_tool_args  # noqa: E402
from cbam_mmdet.visualization.grad_cam import (MATCHES, TARGETS,  # noqa: E402
                                               compare_grad_cam)
from cbam_mmdet.visualization.inference import load_detector  # noqa: E402


def level_arg(value):
    if value == 'auto':
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an int or 'auto', got {value!r}") from None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Grad-CAM of detections, side by side')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--model', nargs='+', action='append', required=True,
                        metavar='CONFIG CHECKPOINT [LABEL]',
                        help='a detector; repeat for side-by-side columns')
    parser.add_argument('--out', required=True, help='output PNG')
    parser.add_argument('--layer', default='backbone.layer4',
                        help='module whose output is explained (a named_modules name)')
    parser.add_argument('--level', type=level_arg, default=None,
                        help="output level, for a layer with several (e.g. neck): an "
                             "index, or 'auto' (the level the box was pooled from)")
    parser.add_argument('--target', choices=TARGETS, default='score',
                        help="differentiate the detection's score or (two-stage) its "
                             "class logit before the softmax")
    parser.add_argument('--rank', type=int, default=0,
                        help='the detection by score rank (0: the top-scoring one)')
    parser.add_argument('--match', choices=MATCHES, default='iou',
                        help='how later models choose their detection')
    parser.add_argument('--score-thr', type=float, default=None,
                        help="override the head's test score threshold")
    parser.add_argument('--dpi', type=int, default=100, help='resolution of the PNG')
    parser.add_argument('--device', default='cpu')
    args = parse_tool_args(parser, argv, launcher=False)
    for spec in args.model:
        if len(spec) not in (2, 3):
            parser.error(f'--model takes CONFIG CHECKPOINT [LABEL], got {spec}')
    return args


def main(argv=None):
    args = parse_args(argv)
    models = [(spec[2] if len(spec) == 3 else osp.splitext(osp.basename(spec[0]))[0],
               load_detector(spec[0], spec[1], device=args.device,
                             cfg_options=args.cfg_options)) for spec in args.model]
    path, results = compare_grad_cam(models, args.images, args.out, layer=args.layer,
                                     level=args.level, rank=args.rank, match=args.match,
                                     score_thr=args.score_thr, target=args.target,
                                     dpi=args.dpi)
    print(path)
    return path, results


if __name__ == '__main__':
    main()
