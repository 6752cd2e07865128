"""Where a detector's training step spends its time, block by block, per variant.

    python tools/profile_step.py --device cuda --amp --batch-size 2 --shape 800x1216

Host time of every ResNet block's forward and backward, and the GPU's lag behind the
host where each block's backward ends (near 0: the host is the bound there, so host
time counts in full; see cbam_mmdet/step_timeline.py), medians over interleaved steps;
with --plugins, also each CBAM/SE module's forward and backward.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.benchmark import (add_profile_arguments,  # noqa: E402
                                  check_profile_arguments, describe_device,
                                  write_profile)
from cbam_mmdet.ops import extensions  # noqa: E402
from cbam_mmdet.step_timeline import VARIANTS, format_timeline, profile_step  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_profile_arguments(parser)
    parser.add_argument('--variants', nargs='+', default=['baseline', 'se', 'cbam'],
                        choices=VARIANTS)
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3, help='untimed rounds first')
    parser.add_argument('--plugins', action='store_true',
                        help="also time every CBAM/SE module's forward and backward "
                             '(the marks add host time inside what they time)')
    args = parser.parse_args(argv)
    check_profile_arguments(parser, args, ('batch_size', 'rounds'))
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f'device: {describe_device(args.device)}; batch {args.batch_size}, '
          f'{args.shape[0]}x{args.shape[1]}, amp={args.amp}, {args.rounds} rounds')
    print(extensions.describe(args.device))
    results = profile_step(variants=args.variants, device=args.device, amp=args.amp,
                           batch_size=args.batch_size, shape=args.shape,
                           rounds=args.rounds, warmup=args.warmup, plugins=args.plugins)
    print(format_timeline(results))
    write_profile(args, results)


if __name__ == '__main__':
    main()
