"""Pool several runs of benchmarks/benchmark.py (their --json files) of one workload.

    python benchmarks/pool.py run1.json run2.json run3.json

Prints, per mode and variant, each run's median ratio to the baseline and the mean,
standard deviation and range of those ratios over the runs. Runs in separate processes
build new models and meet the machine in other states, so their spread shows what one
run's confidence interval, which covers only its own rounds, does not. The runs must
share their device, their workload (:data:`WORKLOAD`) and the fast paths they ran;
rounds, steps and models per variant may differ.
"""
import argparse
import json
import statistics

# the settings that define the work a run timed
WORKLOAD = ('batch_size', 'shape', 'amp', 'channels_last', 'backbone_only')


def pool_runs(runs):
    """Pool runs, each a dict as ``benchmarks/benchmark.py --json`` writes it (``args``,
    ``device``, ``fast_paths``, ``results``): one dict per mode and variant with
    ``ratios`` (each run's median ratio to the baseline, None where the run lacks the
    variant), ``runs`` (how many have it), ``mean``, ``sd``, ``min`` and ``max``. Raises
    ValueError for fewer than two runs, or runs that differ in their device, their fast
    paths or a setting of :data:`WORKLOAD`."""
    if len(runs) < 2:
        raise ValueError(f'pooling needs at least 2 runs, got {len(runs)}')
    for name in ('device', 'fast_paths') + WORKLOAD:
        values = [run.get(name) if name in ('device', 'fast_paths')
                  else run['args'].get(name) for run in runs]
        if any(value != values[0] for value in values):
            raise ValueError(f'the runs differ in {name!r} ({values}): only runs of one '
                             'workload, device and build pool')
    ratios = {}  # (mode, variant) -> the ratio of each run, in the order first met
    for index, run in enumerate(runs):
        for r in run['results']:
            ratios.setdefault((r['mode'], r['variant']), [None] * len(runs))[index] = \
                r['ratio']
    pooled = []
    for (mode, variant), each in ratios.items():
        values = [v for v in each if v is not None]
        pooled.append(dict(
            mode=mode, variant=variant, ratios=each, runs=len(values),
            mean=statistics.fmean(values),
            sd=statistics.stdev(values) if len(values) > 1 else float('nan'),
            min=min(values), max=max(values)))
    return pooled


def format_pooled(pooled):
    lines = [f"{'mode':<6} {'variant':<10} {'runs':>4} {'mean':>7} {'sd':>7} "
             f"{'(min..max)':>16}  ratio of each run"]
    for p in pooled:
        each = ' '.join('-' if v is None else f'{v:.3f}' for v in p['ratios'])
        lines.append(f"{p['mode']:<6} {p['variant']:<10} {p['runs']:>4} {p['mean']:7.3f} "
                     f"{p['sd']:7.3f} {'(' + format(p['min'], '.3f') + '..':>9}"
                     f"{format(p['max'], '.3f') + ')':<7}  {each}")
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('runs', nargs='+', metavar='RUN.json',
                        help='files written by benchmarks/benchmark.py --json')
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
            parser.error(f'{path}: not a benchmarks/benchmark.py --json file (it needs the '
                         "keys 'args', 'device' and 'results')")
        runs.append(run)
    try:
        pooled = pool_runs(runs)
    except ValueError as e:
        parser.error(str(e))
    print(f'{len(runs)} runs on {runs[0]["device"]}')
    if runs[0].get('fast_paths'):
        print(runs[0]['fast_paths'])
    print(format_pooled(pooled))
    return pooled


if __name__ == '__main__':
    main()
