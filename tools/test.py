"""Evaluate a checkpoint: mmdet's tools/test.py command line, with cbam_mmdet registered.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl]
        [--show-dir DIR] [--cfg-options K=V ...]

The checkpoint must fit the model exactly; known input errors exit with status 2.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.apis import (build_test_config, exit_on_known_errors,  # noqa: E402
                             parse_tool_args, run_test)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='dump predictions to a pickle file (.pkl)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='dir to save drawn predictions')
    parser.add_argument('--wait-time', type=float, default=2, help='seconds per image')
    return parse_tool_args(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = build_test_config(args.config, args.checkpoint, work_dir=args.work_dir,
                            out=args.out, show=args.show, show_dir=args.show_dir,
                            wait_time=args.wait_time, cfg_options=args.cfg_options,
                            launcher=args.launcher)
    return run_test(cfg)


if __name__ == '__main__':
    exit_on_known_errors(main)
