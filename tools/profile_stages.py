"""Time one CBAM or SE module per ResNet-50 stage: kernels and device-bound wall time.

    python tools/profile_stages.py --device cuda --amp --batch-size 2 --shape 800x1216
    python tools/profile_stages.py --device cuda --amp --variants se se-ref --modes infer

For each stage's block output (batch, 256-2048 channels, the image's size over 4-32),
one module per variant: per training call (forward and the gradients of the input and
the parameters, BatchNorm in running statistics as with mmdet's norm_eval) or inference
call, the wall time with the device as the only bound (a note says where the host was
the bound after all) and, on CUDA, each kernel's time; per step weighs the stages by
their blocks (3, 4, 6, 3).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.benchmark import (add_profile_arguments,  # noqa: E402
                                  check_profile_arguments, describe_device,
                                  write_profile)
from cbam_mmdet.ops import extensions  # noqa: E402
from cbam_mmdet.stage_profile import (MODES, VARIANTS, format_profile,  # noqa: E402
                                      profile_stages)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_profile_arguments(parser)
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--variants', nargs='+', default=['se', 'cbam'], choices=VARIANTS)
    parser.add_argument('--modes', nargs='+', default=['train'], choices=MODES)
    parser.add_argument('--batch-stats', action='store_true',
                        help="the modules' BatchNorm in batch statistics (default: "
                        'running statistics, as mmdet keeps it with norm_eval=True)')
    parser.add_argument('--iters', type=int, default=40, help='calls per timing')
    args = parser.parse_args(argv)
    check_profile_arguments(parser, args, ('batch_size', 'iters'))
    return args


def main(argv=None):
    args = parse_args(argv)
    print(f'device: {describe_device(args.device)}; batch {args.batch_size}, '
          f'{args.shape[0]}x{args.shape[1]}, amp={args.amp}, '
          f'channels_last={args.channels_last}, batch_stats={args.batch_stats}')
    print(extensions.describe(args.device))
    results = []
    for mode in args.modes:
        results += profile_stages(
            variants=args.variants, mode=mode, device=args.device,
            batch_size=args.batch_size, shape=args.shape, amp=args.amp,
            channels_last=args.channels_last, batch_stats=args.batch_stats,
            iters=args.iters)
    print(format_profile(results))
    write_profile(args, results)


if __name__ == '__main__':
    main()
