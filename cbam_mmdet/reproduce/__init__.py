"""Run a whole comparison (:data:`PRESETS`: baseline vs SE vs CBAM, or placements) and
write the paper-style table; the long presets (coco-*, voc-*) print distributed commands
unless ``--run``, and ``--collect`` rebuilds the table from finished work dirs."""
import argparse
import os.path as osp
import time

from mmengine.config import DictAction

from .presets import (COCO_METRICS, COLUMNS, PRESETS, VOC_METRICS, Preset,  # noqa: F401
                      Variant, iteration_budget, select_variants, variant_dir)
from .runner import (RESULT_FILE, collect, progress_line, run_one,  # noqa: F401
                     run_preset, run_variant)
from .table import (OUTPUTS, format_markdown, table_rows, write_csv,  # noqa: F401
                    write_outputs)


def distributed_commands(preset, work_dir, variants=None, gpus=None):
    """Shell lines that train and test each variant with tools/dist_*.sh (or slurm), then
    collect the table."""
    gpus = gpus or preset.gpus
    lines = [f'# {preset.name}: {preset.description}',
             f'# torchrun, {gpus} GPUs per run (one run after the other):']
    slurm = ['# or with slurm (PARTITION: yours):']
    for v in select_variants(preset, variants):
        vdir = variant_dir(work_dir, v)
        lines.append(f'bash tools/dist_train.sh {v.config} {gpus} --work-dir {vdir}')
        lines.append(f'bash tools/dist_test.sh {v.config} "$(cat {vdir}/last_checkpoint)" '
                     f'{gpus} --work-dir {vdir}')
        slurm.append(f'GPUS={gpus} bash tools/slurm_train.sh PARTITION '
                     f'{preset.name}-{osp.basename(vdir)} {v.config} {vdir}')
        slurm.append(f'srun -p PARTITION --gres=gpu:{min(gpus, 8)} --ntasks={gpus} '
                     f'--ntasks-per-node={min(gpus, 8)} python -u tools/test.py {v.config} '
                     f'"$(cat {vdir}/last_checkpoint)" --work-dir {vdir} --launcher slurm')
    collect_line = ['# then the table:',
                    f'python tools/reproduce.py --preset {preset.name} '
                    f'--work-dir {work_dir} --collect']
    return '\n'.join(lines + slurm + collect_line) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and test every variant of a preset and write the paper-style '
                    'comparison (comparison.md, comparison.csv, comparison.png).')
    parser.add_argument('--preset', required=True, choices=list(PRESETS))
    parser.add_argument('--work-dir', help='default: work_dirs/<preset>; a folder per variant')
    parser.add_argument('--variants', help="comma-separated subset of the preset's variants")
    parser.add_argument('--collect', action='store_true',
                        help='run nothing: build the table from finished work dirs')
    parser.add_argument('--run', action='store_true',
                        help='run presets of long trainings (coco-*, voc-*) here instead '
                             'of printing their distributed commands')
    parser.add_argument('--max-iters', type=int,
                        help='training budget in iterations (demo, placement only)')
    parser.add_argument('--parallel', type=int,
                        help="variants run at the same time (default: the preset's)")
    parser.add_argument('--gpus', type=int, help='GPUs per run in the printed commands')
    parser.add_argument('--data-root', help='dataset root for every dataloader')
    parser.add_argument('--amp', action='store_true', help='mixed precision training')
    parser.add_argument('--device-name', help='named in comparison.md, e.g. "1x H100"')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='config overrides for every variant, key=value')
    parser.add_argument('--verbose', action='store_true', help='stream whole logs')
    args = parser.parse_args(argv)
    if args.max_iters is not None and not PRESETS[args.preset].iteration_based:
        parser.error(f'--max-iters applies to the iteration-based presets '
                     f'{[p.name for p in PRESETS.values() if p.iteration_based]}, not '
                     f'{args.preset!r} (use --cfg-options train_cfg.max_epochs=N)')
    for name in ('max_iters', 'parallel'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be a positive integer, got '
                         f'{getattr(args, name)}')
    return args


def main(argv=None, log=print):
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    work_dir = args.work_dir or osp.join('work_dirs', preset.name)
    try:
        variants = select_variants(preset, args.variants)
    except ValueError as e:
        raise SystemExit(str(e))
    names = [v.name for v in variants]
    if not args.collect and not preset.runs_here and not args.run:
        log(distributed_commands(preset, work_dir, names, args.gpus))
        return None
    start = time.time()
    if args.collect:
        results = collect(preset, work_dir, names, log=log)
        wall = None
    else:
        cfg_options = dict(args.cfg_options)
        if args.max_iters is not None:
            cfg_options = dict(iteration_budget(args.max_iters), **cfg_options)
        log(f'reproduce: preset {preset.name}, {len(variants)} variants '
            f'({", ".join(names)}), work dir {work_dir}')
        results = run_preset(preset, work_dir, names, cfg_options=cfg_options,
                             data_root=args.data_root, parallel=args.parallel,
                             amp=args.amp, verbose=args.verbose, log=log)
        wall = time.time() - start
    md, paths = write_outputs(preset, work_dir, results, wall_s=wall,
                              device=args.device_name)
    log('')
    log(md)
    log('wrote ' + ', '.join(paths))
    return results
