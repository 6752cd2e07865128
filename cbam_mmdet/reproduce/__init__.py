"""Run a whole comparison (:data:`PRESETS`: baseline vs SE vs CBAM, or placements; or
``custom``, on the user's own data) over one or more seeds and write the comparison table;
the long presets (coco-*, voc-*) print distributed commands unless ``--run``, and
``--collect`` rebuilds the table from finished work dirs."""
import argparse
import os.path as osp
import time

from mmengine.config import DictAction

from ..apis.errors import InputError
from .custom import custom_preset
from .device import DEVICES, choose_device
from .presets import (COCO_METRICS, COLUMNS, PRESETS, VOC_METRICS, Preset,  # noqa: F401
                      Variant, iteration_budget, select_variants, variant_dir)
from .runner import (RESULT_FILE, collect, progress_line, run_one,  # noqa: F401
                     run_preset, run_variant, variant_config)
from .table import OUTPUTS, format_markdown, table_rows, write_csv, write_outputs  # noqa: F401


def distributed_commands(preset, work_dir, variants=None, gpus=None, seeds=(0,)):
    """Shell lines that train and test each run with tools/dist_*.sh, then the table."""
    gpus = gpus or preset.gpus
    lines = [f'# {preset.name}: {preset.description}',
             f'# torchrun, {gpus} GPUs per run (one run after the other):']
    for seed in seeds:
        for v in select_variants(preset, variants):
            vdir = variant_dir(work_dir, v, seed)
            lines += [f'bash tools/dist_train.sh {v.config} {gpus} --work-dir {vdir} '
                      f'--cfg-options randomness.seed={seed}',
                      f'bash tools/dist_test.sh {v.config} "$(cat {vdir}/last_checkpoint)" '
                      f'{gpus} --work-dir {vdir}']
    return '\n'.join(lines + ['# then the table:', f'python tools/reproduce.py --preset '
                              f'{preset.name} --work-dir {work_dir} --collect'
                              + f' --seeds {len(seeds)}' * (len(seeds) > 1)]) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train and test every variant of a preset '
                                     'with every seed and write comparison.md/.csv/.png.')
    add = parser.add_argument
    add('--preset', required=True, choices=list(PRESETS) + ['custom'])
    add('--work-dir', help='default: work_dirs/<preset>; WORK_DIR/<variant>/seed<s> per run')
    add('--variants', help="comma-separated subset of the preset's variants")
    add('--seeds', type=int, default=1, help='runs per variant, seeds 0..N-1 (default 1)')
    add('--collect', action='store_true', help='run nothing: the table from finished runs')
    add('--run', action='store_true', help='run coco-*/voc-* here, not print commands')
    add('--max-iters', type=int, help='training budget in iterations (demo, placement, custom)')
    add('--parallel', type=int, help="runs at the same time (default: the preset's)")
    add('--gpus', type=int, help='GPUs per run in the printed commands')
    add('--data-root', help='dataset root for every dataloader (custom: the dataset folder)')
    add('--amp', action='store_true', help='fp16 mixed precision training (on CUDA only)')
    add('--device', choices=DEVICES, default='auto',
        help='auto (default): cuda where there is a GPU and mmcv has its CUDA ops, else cpu')
    add('--device-name', help='named in comparison.md (default: cpu, or the GPU and precision)')
    add('--cfg-options', nargs='+', action=DictAction, default={}, help='key=value overrides')
    add('--verbose', action='store_true', help='stream whole logs')
    add('--format', choices=['voc', 'coco'], default='voc', help='custom: the data layout')
    add('--classes', help='custom: comma-separated (default: read from the data)')
    add('--train-ann', default='annotations/train.json', help='custom coco, under --data-root')
    add('--val-ann', default='annotations/val.json', help='custom coco, under --data-root')
    add('--img-dir', default='images', help='custom coco: the image folder under --data-root')
    add('--epochs', type=int, default=12, help='custom: the schedule unless --max-iters')
    add('--scale', type=int, default=480, help='custom: shorter side (longer <= 5/3 of it)')
    add('--backbone-checkpoint', help='custom: converted ImageNet backbone (else from scratch)')
    args = parser.parse_args(argv)
    if args.max_iters is not None and args.preset != 'custom' \
            and not PRESETS[args.preset].iteration_based:
        parser.error(f'--max-iters applies to the presets demo, placement and custom, not '
                     f'{args.preset!r} (use --cfg-options train_cfg.max_epochs=N)')
    for name in ('max_iters', 'parallel', 'seeds', 'epochs', 'scale'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be a positive integer, got '
                         f'{getattr(args, name)}')
    return args


def main(argv=None, log=print):
    args = parse_args(argv)
    work_dir = args.work_dir or osp.join('work_dirs', args.preset)
    seeds = tuple(range(args.seeds))
    cfg_options = dict(args.cfg_options)
    if args.max_iters is not None and args.preset != 'custom':
        cfg_options = dict(iteration_budget(args.max_iters), **cfg_options)
    try:
        preset = custom_preset(args) if args.preset == 'custom' else PRESETS[args.preset]
        variants = select_variants(preset, args.variants)
        runs_here = not args.collect and (preset.runs_here or args.run)
        device, amp, device_name, note = (choose_device(args.device, args.amp) if runs_here
                                          else (None, False, args.device_name, ''))
        if args.preset == 'custom' and not args.collect:  # tools/train.py's data checks
            from ..apis.input_validation import validate_config
            from ..offline_model import load_config
            validate_config(load_config(variant_config(dict(config=variants[0].config, options=[
                preset.options, cfg_options]))), ('train', 'test'))
    except (ValueError, InputError) as e:
        raise SystemExit(f'reproduce: error: {e}')
    names = [v.name for v in variants]
    if not args.collect and not preset.runs_here and not args.run:
        log(distributed_commands(preset, work_dir, names, args.gpus, seeds))
        return None
    start = time.time()
    if args.collect:
        results, wall = collect(preset, work_dir, names, seeds), None
    else:
        log(f'reproduce: {preset.name}: {", ".join(names)} x {len(seeds)} seed(s) in {work_dir}')
        log(f'reproduce: device: {device_name}' + (f' ({note})' if note else ''))
        results = run_preset(preset, work_dir, names, seeds, cfg_options=cfg_options,
                             data_root=None if args.preset == 'custom' else args.data_root,
                             parallel=args.parallel, amp=amp, device=device,
                             verbose=args.verbose, log=log)
        wall = time.time() - start
    md, paths = write_outputs(preset, work_dir, results, wall_s=wall,
                              device=args.device_name or device_name)
    log('\n' + md + 'wrote ' + ', '.join(paths))
    return results
