"""Running a preset: each variant and seed trains then tests (as ``tools/train.py`` and
``tools/test.py``) in its own subprocess (a crash is a failed run) and work dir
(``reproduce.log``, ``result.json``). :func:`collect` reads finished work dirs back."""
import ast
import collections
import copy
import glob
import json
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .presets import COCO_METRICS, VOC_METRICS, select_variants, variant_dir

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RESULT_FILE = 'result.json'
LOG_FILE = 'reproduce.log'


def _set_data_root(cfg, data_root):
    """Point every dataset at ``data_root``, and evaluator ann_files under the old root."""
    from ..apis.input_validation import split_datasets
    evaluators = [cfg.get(k) for k in ('val_evaluator', 'test_evaluator')]
    evaluators = [e for ev in evaluators for e in (ev if isinstance(ev, list) else [ev])
                  if isinstance(e, dict) and e.get('ann_file')]
    for _, _, ds in split_datasets(cfg):
        old, ds['data_root'] = ds.get('data_root'), data_root
        for ev in evaluators:
            if old and ev['ann_file'].startswith(old):
                ev['ann_file'] = osp.join(data_root, ev['ann_file'][len(old):])


def variant_config(spec):
    """The Config of one run: ``spec['config']`` with the overrides of ``spec['options']``
    (preset, variant, command line, in that order), its data root and seed."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, spec['config']))
    options = spec.get('options') or []
    # they travel as a Python literal: JSON would turn tuples (Resize scales) into lists
    for opts in filter(None, ast.literal_eval(options) if isinstance(options, str) else options):
        cfg.merge_from_dict(copy.deepcopy(opts))  # merging pops '_delete_' keys
    if spec.get('data_root'):
        _set_data_root(cfg, spec['data_root'])
    if spec.get('seed') is not None:
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=spec['seed'])
    return cfg


def run_variant(spec):
    """Train then test one run (the subprocess's job) from ``spec`` (name, seed, config,
    work_dir, options, data_root, input_shape, amp); writes and returns its result."""
    import gc

    from ..apis import build_test_config, build_train_config, run_test, run_train
    from ..checkpoint import latest_checkpoint
    from ..complexity import detector_complexity
    work_dir, t0 = spec['work_dir'], time.time()
    print(f'reproduce: train {spec["config"]} -> {work_dir}', flush=True)
    cfg = variant_config(spec)
    # the test follows training: a validation at its end would only repeat it
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = run_train(build_train_config(cfg, work_dir=work_dir, amp=spec.get('amp')))
    params = sum(p.numel() for p in runner.model.parameters())
    del runner
    gc.collect()
    checkpoint, t1 = latest_checkpoint(work_dir), time.time()
    print(f'reproduce: test {checkpoint}', flush=True)
    metrics = run_test(build_test_config(variant_config(spec), checkpoint, work_dir=work_dir))
    t2 = time.time()
    try:
        shape = tuple(spec['input_shape'])
        gflops = detector_complexity(variant_config(spec), shape)['flops'] / 1e9
    except Exception as e:  # a counting failure must not lose a finished run
        print(f'reproduce: GFLOPs count failed: {type(e).__name__}: {e}', flush=True)
        gflops = None
    result = dict(name=spec['name'], seed=spec['seed'], config=spec['config'], status='ok',
                  metrics={k: float(v) for k, v in metrics.items()
                           if isinstance(v, (int, float))}, params=params, gflops=gflops,
                  checkpoint=checkpoint, train_s=round(t1 - t0, 1), test_s=round(t2 - t1, 1))
    _write_json(osp.join(work_dir, RESULT_FILE), result)
    print(f'reproduce: done in {t2 - t0:.0f} s', flush=True)
    return result


def _write_json(path, obj):
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(path + '.tmp', path)


_PROGRESS = re.compile(r'((?:Iter|Epoch)\((?:train|val|test)\))\s*((?:\[[^\]]*\])+)(.*)')
_ERROR = re.compile(r'^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))\b:?(.*)$')
_SHOWN = ('eta', 'time', 'loss', *COCO_METRICS.values(), *VOC_METRICS.values())


def progress_line(line):
    """A short line for an mmengine progress line, a reproduce or an error line; else None."""
    line = line.rstrip()
    if line.startswith(('reproduce:', 'Traceback')) or _ERROR.match(line):
        return line
    m = _PROGRESS.search(line)
    if not m:
        return None
    found = [(k, re.search(rf'(?:^|\s){re.escape(k)}:\s*(\S+)', m.group(3))) for k in _SHOWN]
    return f'{m.group(1)} {m.group(2)} ' + '  '.join(f'{k} {v.group(1)}' for k, v in found if v)


def run_one(spec, tag, log=print, verbose=False):
    """Run one variant and seed in a subprocess, streaming its progress; returns its result
    (a failed one, with exit code and last error line, when the subprocess fails)."""
    work_dir, start = spec['work_dir'], time.time()
    os.makedirs(work_dir, exist_ok=True)
    result_path = osp.join(work_dir, RESULT_FILE)
    if osp.exists(result_path):
        os.remove(result_path)
    env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=os.pathsep.join(
        filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    if spec.get('device') == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''
    tail = collections.deque(maxlen=60)
    with open(osp.join(work_dir, LOG_FILE), 'w') as logf:
        proc = subprocess.Popen([sys.executable, '-u', '-m', 'cbam_mmdet.reproduce', '--worker',
                                 json.dumps(spec)], cwd=ROOT, env=env, text=True, bufsize=1,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            logf.write(line)
            tail.append(line.strip())
            shown = line.rstrip() if verbose else progress_line(line)
            if shown:
                log(f'[{tag}] {shown}')
        code = proc.wait()
    if code == 0 and osp.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    lines = [line for line in tail if line]
    error = ([line for line in lines if _ERROR.match(line)] or lines or ['no output'])[-1] \
        if code != 0 else f'no {RESULT_FILE} written'
    result = dict(name=spec['name'], seed=spec['seed'], config=spec['config'],
                  status='failed', exit_code=code, error=error,
                  wall_s=round(time.time() - start, 1), log=osp.join(work_dir, LOG_FILE))
    _write_json(result_path, result)
    log(f'[{tag}] FAILED (exit {code}): {error}')
    return result


def run_preset(preset, work_dir, variants=None, seeds=(0,), cfg_options=None,
               data_root=None, parallel=None, amp=False, device=None, verbose=False,
               log=print):
    """Train and test every variant with every seed (``parallel`` runs at a time, those
    of a seed together); returns their results, seed by seed."""
    runs = [(seed, v) for seed in seeds for v in select_variants(preset, variants)]
    # the subprocesses run in the repository root: paths given here are made absolute
    work_dir = osp.abspath(work_dir)
    data_root = osp.abspath(data_root) + os.sep if data_root else None
    lock = threading.Lock()

    def locked_log(msg):
        with lock:
            log(msg)

    def one(i, run):
        seed, variant = run
        spec = dict(name=variant.name, seed=seed, config=variant.config,
                    work_dir=variant_dir(work_dir, variant, seed),
                    options=repr([preset.options, cfg_options]),
                    data_root=data_root, input_shape=list(preset.input_shape), amp=amp,
                    device=device)
        tag = f'{i + 1}/{len(runs)} {variant.name}' + (f' seed {seed}' if len(seeds) > 1 else '')
        locked_log(f'[{tag}] start: {variant.config}')
        return run_one(spec, tag, log=locked_log, verbose=verbose)

    with ThreadPoolExecutor(max_workers=max(1, parallel or preset.parallel)) as pool:
        return list(pool.map(one, range(len(runs)), runs))


def _tools_test_metrics(vdir, metrics):
    """The newest test metrics json that tools/test.py (mmengine) wrote under ``vdir``."""
    for path in sorted(glob.glob(osp.join(vdir, '*', '*.json')), key=osp.getmtime)[::-1]:
        with open(path) as f:
            data = json.load(f)
        if isinstance(data, dict) and metrics['mAP'] in data:
            return path, data
    return None, None


def collect(preset, work_dir, variants=None, seeds=(0,)):
    """One result per variant and seed from ``work_dir``: its ``result.json``, else the
    metrics of a tools/test.py run (params and GFLOPs unknown), else a 'missing' result."""
    results = []
    for seed in seeds:
        for variant in select_variants(preset, variants):
            vdir = variant_dir(work_dir, variant, seed)
            if osp.exists(osp.join(vdir, RESULT_FILE)):
                with open(osp.join(vdir, RESULT_FILE)) as f:
                    results.append(dict(json.load(f), seed=seed))
                continue
            source, metrics = _tools_test_metrics(vdir, preset.metrics)
            results.append(dict(
                name=variant.name, seed=seed, config=variant.config, source=source,
                status='ok' if metrics else 'missing', error='' if metrics else
                f'no results in {vdir}', metrics={k: v for k, v in (metrics or {}).items()
                                                  if isinstance(v, (int, float))}))
    return results
