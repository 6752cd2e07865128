"""Train a detector: mmdet's tools/train.py command line, with cbam_mmdet registered.

    python tools/train.py configs/faster_rcnn_r50_cbam_coco.py [--work-dir DIR]
        [--resume [CHECKPOINT]] [--amp] [--auto-scale-lr] [--load-from-partial]
        [--cfg-options K=V ...]

Known input errors print one message and exit with status 2.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.apis import (build_train_config, exit_on_known_errors,  # noqa: E402
                             parse_tool_args, run_train)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate to the real batch size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or, with no path, from the '
                             'latest checkpoint of the work dir')
    parser.add_argument('--load-from-partial', action='store_true',
                        help='let load_from load only the weights that fit the model '
                             '(fine-tuning to another number of classes); by default a '
                             'checkpoint that does not fit is an error')
    parser.add_argument('--no-exact-resume', action='store_true',
                        help="keep mmengine's train loop: do not save and restore the "
                             'random generators in checkpoints')
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = build_train_config(args.config, work_dir=args.work_dir, resume=args.resume,
                             amp=args.amp, auto_scale_lr=args.auto_scale_lr,
                             cfg_options=args.cfg_options, launcher=args.launcher,
                             exact_resume=not args.no_exact_resume,
                             load_from_partial=args.load_from_partial)
    return run_train(cfg)


if __name__ == '__main__':
    exit_on_known_errors(main)
