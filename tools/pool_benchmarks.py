"""Pool several runs of tools/benchmark.py (their --json files) of one workload.

    python tools/pool_benchmarks.py run1.json run2.json run3.json

Prints, per mode and variant, each run's median ratio to the baseline and the mean,
standard deviation and range of those ratios over the runs. Runs in separate processes
build new models and meet the machine in other states, so their spread shows what one
run's confidence interval does not. The runs must share their device and workload
(batch size, shape, amp, channels_last, backbone_only) and the fast paths they record;
rounds, steps and models per variant may differ.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from cbam_mmdet.benchmark import format_pooled, pool_runs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', metavar='RUN.json',
                        help='files written by tools/benchmark.py --json')
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        try:
            with open(path) as f:
                run = json.load(f)
        except OSError as e:
            parser.error(f'{path}: cannot read it ({e.strerror})')
        except ValueError as e:
            parser.error(f'{path}: not JSON ({e})')
        if not (isinstance(run, dict) and {'args', 'device', 'results'} <= run.keys()):
            parser.error(f'{path}: not a tools/benchmark.py --json file (it needs the '
                         "keys 'args', 'device' and 'results')")
        runs.append(run)
    try:
        pooled = pool_runs(runs)
    except ValueError as e:
        parser.error(str(e))
    print(f'{len(runs)} runs on {runs[0]["device"]}')
    recorded = [run['fast_paths'] for run in runs if 'fast_paths' in run]
    if recorded:
        print(f'{recorded[0]} ({len(recorded)} of the runs record it)')
    print(format_pooled(pooled))
    return pooled


if __name__ == '__main__':
    main()
