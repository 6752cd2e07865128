"""Time baseline, SE and CBAM (reference and fast) detectors or backbones, interleaved.

    python tools/benchmark.py --device cuda --amp --batch-size 2 --shape 800x1216
    python tools/benchmark.py --device cpu --backbone-only --shape 512 --modes infer

Prints each variant's median step time in ms and its ratio to the baseline (median of
per-round ratios, with their min..max); with ``--time-plugins`` also the time per step
inside the plugins and its share of the rest of the step; with ``--breakdown`` the
parameter tensors, optimiser time and (CUDA) kernel time per training step of each
variant against the baseline's. It also prints which fast paths this build runs
(the compiled extensions are optional: cbam_mmdet/ops/extensions.py) and, on CUDA, how
many plugin calls per step were replayed from C++, with a warning where fewer were than
the shipped path replays. Every detector proposes the same boxes (zeroed RPN
outputs and box classifier, learning rate 0) unless ``--random-proposals``.

Variants: baseline and, for se and cbam, the plugins' default (no suffix), ``-ref``
(reference implementation), ``-eager`` (fast path without CUDA graphs) and ``-graph``
(fast path from CUDA graphs for CUDA inference).
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402

from cbam_mmdet.benchmark import (DEFAULT_VARIANTS, MODES, VARIANTS,  # noqa: E402
                                  default_seeds, describe_device, parse_shape,
                                  run_benchmark)
from cbam_mmdet.ops import extensions  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', help="'cpu', 'cuda' or 'cuda:N'")
    parser.add_argument('--amp', action='store_true',
                        help='autocast (float16 on CUDA, bfloat16 on CPU)')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--shape', default='512x512', type=parse_shape, help='HxW')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--backbone-only', action='store_true',
                        help='time the configs\' backbones (ResNet) instead of detectors')
    parser.add_argument('--variants', nargs='+', default=list(DEFAULT_VARIANTS),
                        choices=VARIANTS)
    parser.add_argument('--modes', nargs='+', default=list(MODES), choices=MODES)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds first')
    parser.add_argument('--seeds', type=int,
                        help='models per variant, built from the seeds 0..N-1 (default: 3 '
                        'for detectors, whose step time depends on their random weights; '
                        '1 with --backbone-only)')
    parser.add_argument('--random-proposals', action='store_true',
                        help="keep the detectors' random output layers (learning rate "
                        '1e-4): each model proposes its own boxes and the heads\' work '
                        'follows its weights (default: zeroed output layers at learning '
                        'rate 0, the same proposals for every model)')
    parser.add_argument('--iters', type=int, default=3, help='steps per model per round')
    parser.add_argument('--threads', type=int, help='torch.set_num_threads (CPU)')
    parser.add_argument('--time-plugins', action='store_true',
                        help='also report the time inside the CBAM/SE modules per step and '
                        'its share of the rest of the step (forward hooks, in one more step '
                        'per model and round; the timed steps run without them; host time '
                        'on CUDA)')
    parser.add_argument('--breakdown', action='store_true',
                        help='after the timed rounds, per variant: the optimised parameter '
                        "tensors, the optimiser's time per training step and (CUDA) the "
                        'GPU kernel time per training step, each against the baseline')
    parser.add_argument('--collect-in-steps', action='store_true',
                        help="let Python's garbage collector run inside the timed steps "
                        '(default: it collects between the timed blocks, untimed, over '
                        'what the steps allocated)')
    parser.add_argument('--json', help='also write the results to this file')
    args = parser.parse_args(argv)
    for name in ('batch_size', 'rounds', 'iters', 'seeds'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be >= 1')
    if args.warmup < 0:
        parser.error('--warmup must be >= 0')
    if args.breakdown and 'train' not in args.modes:
        parser.error("--breakdown measures training steps: --modes must include 'train'")
    if args.random_proposals and args.backbone_only:
        parser.error('--random-proposals applies to detectors, not to --backbone-only')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = args.seeds or default_seeds(args.backbone_only)
    print(f'device: {describe_device(args.device)}; batch {args.batch_size}, '
          f'{args.shape[0]}x{args.shape[1]}, amp={args.amp}, '
          f'channels_last={args.channels_last}, backbone_only={args.backbone_only}, '
          f'proposals={"random" if args.random_proposals else "fixed"}, '
          f'{args.rounds} rounds x {args.iters} steps per model after {args.warmup} warm-up '
          f'rounds, {seeds} model(s) per variant')
    fast_paths = extensions.describe(args.device)
    print(fast_paths)
    results = run_benchmark(
        variants=args.variants, modes=args.modes, device=args.device, amp=args.amp,
        batch_size=args.batch_size, shape=args.shape, channels_last=args.channels_last,
        backbone_only=args.backbone_only, rounds=args.rounds, warmup=args.warmup,
        iters=args.iters, seeds=seeds, random_proposals=args.random_proposals,
        time_plugins=args.time_plugins, breakdown=args.breakdown,
        collect_in_steps=args.collect_in_steps)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args={**vars(args), 'seeds': seeds},
                           device=describe_device(args.device),
                           fast_paths=fast_paths, results=results), f,
                      indent=1)


if __name__ == '__main__':
    main()
