"""Running a preset's variants: each trains and tests as ``tools/train.py`` and
``tools/test.py`` do, in its own subprocess (a crash is a failed row) and work dir
(``reproduce.log``, ``result.json``). :func:`collect` reads finished work dirs back."""
import collections
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
    """Point every dataset of the dataloaders at ``data_root`` (and evaluator ann_files
    that lived under the old root)."""
    from ..apis.input_validation import split_datasets
    old_roots = set()
    for _, _, ds in split_datasets(cfg):
        if ds.get('data_root'):
            old_roots.add(ds['data_root'])
        ds['data_root'] = data_root
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        for ev in (evaluators if isinstance(evaluators, list) else [evaluators]):
            ann = ev.get('ann_file') if isinstance(ev, dict) else None
            for old in old_roots:
                if ann and ann.startswith(old):
                    ev['ann_file'] = osp.join(data_root, ann[len(old):])


def _variant_config(spec):
    from mmengine.config import Config
    cfg = Config.fromfile(spec['config'])
    if spec.get('cfg_options'):
        cfg.merge_from_dict(spec['cfg_options'])
    if spec.get('data_root'):
        _set_data_root(cfg, spec['data_root'])
    return cfg


def _gflops(cfg, input_shape):
    """GFLOPs of the detector on one ``input_shape`` (C, H, W) input."""
    from ..complexity import detector_complexity
    return detector_complexity(cfg, tuple(input_shape))['flops'] / 1e9


def run_variant(spec):
    """Train then test one variant (the subprocess's job) from ``spec`` (name, config,
    work_dir, cfg_options, data_root, input_shape, amp); writes and returns its result."""
    import gc

    from ..apis import build_test_config, build_train_config, run_test, run_train
    from ..checkpoint import latest_checkpoint

    work_dir = spec['work_dir']
    os.makedirs(work_dir, exist_ok=True)
    t0 = time.time()
    print(f'reproduce: train {spec["config"]} -> {work_dir}', flush=True)
    train_cfg = _variant_config(spec)
    # the test follows training: a validation at its end would only repeat it
    train_cfg.val_cfg = train_cfg.val_dataloader = train_cfg.val_evaluator = None
    runner = run_train(build_train_config(train_cfg, work_dir=work_dir,
                                          amp=spec.get('amp', False)))
    model = getattr(runner.model, 'module', runner.model)
    params = sum(p.numel() for p in model.parameters())
    del runner, model
    gc.collect()
    checkpoint = latest_checkpoint(work_dir)
    t1 = time.time()
    print(f'reproduce: test {checkpoint}', flush=True)
    metrics = run_test(build_test_config(_variant_config(spec), checkpoint,
                                         work_dir=work_dir))
    t2 = time.time()
    try:
        gflops = _gflops(_variant_config(spec), spec['input_shape'])
    except Exception as e:  # a counting failure must not lose a finished run
        print(f'reproduce: GFLOPs count failed: {type(e).__name__}: {e}', flush=True)
        gflops = None
    result = dict(name=spec['name'], config=spec['config'], status='ok',
                  metrics={k: float(v) for k, v in metrics.items()
                           if isinstance(v, (int, float))},
                  params=params, gflops=gflops, checkpoint=checkpoint,
                  train_s=round(t1 - t0, 1), test_s=round(t2 - t1, 1))
    _write_json(osp.join(work_dir, RESULT_FILE), result)
    print(f'reproduce: done in {t2 - t0:.0f} s', flush=True)
    return result


def _write_json(path, obj):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


_PROGRESS = re.compile(r'((?:Iter|Epoch)\((?:train|val|test)\))\s*((?:\[[^\]]*\])+)(.*)')
_ERROR = re.compile(r'^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))\b:?(.*)$')


def progress_line(line):
    """A short progress line for an mmengine log line (or a reproduce/traceback line);
    None for lines that are not shown."""
    line = line.rstrip()
    if line.startswith('reproduce:') or line.startswith('Traceback') or _ERROR.match(line):
        return line
    m = _PROGRESS.search(line)
    if not m:
        return None
    stage, where, rest = m.groups()
    keep = []
    for key in ('eta', 'time', 'loss', *COCO_METRICS.values(), *VOC_METRICS.values()):
        v = re.search(rf'(?:^|\s){re.escape(key)}:\s*(\S+)', rest)
        if v:
            keep.append(f'{key} {v.group(1)}')
    return f'{stage} {where} ' + '  '.join(keep)


def _last_error(lines):
    """The last error line of a log, else its last line."""
    lines = [line.strip() for line in lines if line.strip()]
    return ([line for line in lines if _ERROR.match(line)] or lines or ['no output'])[-1]


def _worker_env():
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [ROOT, env.get('PYTHONPATH')]))
    return env


def run_one(spec, tag, log=print, verbose=False):
    """Run one variant in a subprocess, streaming its progress; returns its result (a
    failed one, with exit code and last error line, when the subprocess fails)."""
    work_dir = spec['work_dir']
    os.makedirs(work_dir, exist_ok=True)
    result_path = osp.join(work_dir, RESULT_FILE)
    if osp.exists(result_path):
        os.remove(result_path)
    cmd = [sys.executable, '-u', '-m', 'cbam_mmdet.reproduce', '--worker',
           json.dumps(spec)]
    tail = collections.deque(maxlen=60)
    start = time.time()
    with open(osp.join(work_dir, LOG_FILE), 'w') as logf:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=_worker_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            logf.write(line)
            tail.append(line.rstrip('\n'))
            shown = line.rstrip() if verbose else progress_line(line)
            if shown:
                log(f'[{tag}] {shown}')
        code = proc.wait()
    if code == 0 and osp.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    error = _last_error(tail) if code != 0 else f'no {RESULT_FILE} written'
    result = dict(name=spec['name'], config=spec['config'], status='failed',
                  exit_code=code, error=error, wall_s=round(time.time() - start, 1),
                  log=osp.join(work_dir, LOG_FILE))
    _write_json(result_path, result)
    log(f'[{tag}] FAILED (exit {code}): {error}')
    return result


def run_preset(preset, work_dir, variants=None, cfg_options=None, data_root=None,
               parallel=None, amp=False, verbose=False, log=print):
    """Train and test every variant (``parallel`` at a time); returns their results."""
    variants = select_variants(preset, variants)
    parallel = parallel or preset.parallel
    # the subprocesses run in the repository root: paths given here are made absolute
    work_dir = osp.abspath(work_dir)
    data_root = osp.abspath(data_root) + os.sep if data_root else None
    lock = threading.Lock()

    def locked_log(msg):
        with lock:
            log(msg)

    def one(i, variant):
        spec = dict(name=variant.name, config=variant.config,
                    work_dir=variant_dir(work_dir, variant),
                    cfg_options=cfg_options or {},
                    data_root=data_root, input_shape=list(preset.input_shape), amp=amp)
        tag = f'{i + 1}/{len(variants)} {variant.name}'
        locked_log(f'[{tag}] start: {variant.config}')
        return run_one(spec, tag, log=locked_log, verbose=verbose)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, range(len(variants)), variants))


def _metrics_from_mmengine_logs(vdir, metrics):
    """The newest test metrics json mmengine wrote under ``vdir/<timestamp>/``."""
    found = []
    for path in glob.glob(osp.join(vdir, '*', '*.json')):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and metrics['mAP'] in data:
            found.append((osp.getmtime(path), path, data))
    return max(found)[1:] if found else None


def collect(preset, work_dir, variants=None, count_missing=True, log=print):
    """One result per variant from ``work_dir``: its ``result.json``, else the metrics of
    a test run by tools/test.py (params and GFLOPs then counted from the config when
    ``count_missing``), else a 'missing' result."""
    results = []
    for variant in select_variants(preset, variants):
        vdir = variant_dir(work_dir, variant)
        path = osp.join(vdir, RESULT_FILE)
        if osp.exists(path):
            with open(path) as f:
                results.append(json.load(f))
            continue
        found = _metrics_from_mmengine_logs(vdir, preset.metrics)
        if found is None:
            results.append(dict(name=variant.name, config=variant.config,
                                status='missing', error=f'no results in {vdir}'))
            continue
        json_path, metrics = found
        result = dict(name=variant.name, config=variant.config, status='ok',
                      metrics={k: v for k, v in metrics.items()
                               if isinstance(v, (int, float))},
                      params=None, gflops=None, source=json_path)
        if count_missing:
            try:
                from ..offline_model import build_model_offline
                config = osp.join(ROOT, variant.config)
                model = build_model_offline(config)
                result['params'] = sum(p.numel() for p in model.parameters())
                result['gflops'] = _gflops(config, preset.input_shape)
            except Exception as e:
                log(f'[{variant.name}] params/GFLOPs not counted: {type(e).__name__}: {e}')
        results.append(result)
    return results

