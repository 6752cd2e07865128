"""Run a whole comparison (baseline vs SE vs CBAM, or attention placements) and write the
paper-style table.

Each variant of a preset is trained and tested through the same Runner path as
``tools/train.py`` and ``tools/test.py`` (:func:`cbam_mmdet.apis.build_train_config`,
:func:`~cbam_mmdet.apis.run_train`, :func:`~cbam_mmdet.apis.build_test_config`,
:func:`~cbam_mmdet.apis.run_test`), in its own subprocess and work dir
(``WORK_DIR/<variant>/``), so that a crash in one variant is a failed row of the table and
the others still run. Their log is streamed as one progress line per logged iteration,
and kept whole in ``WORK_DIR/<variant>/reproduce.log``. Each variant's outcome is
``WORK_DIR/<variant>/result.json``; ``--collect`` rebuilds the table from these (or, for
work dirs filled by ``tools/dist_train.sh`` + ``tools/dist_test.sh``, from the test's
metrics json that mmengine writes), and the table is written as ``comparison.md``,
``comparison.csv`` (one row per variant; mAP columns in percent) and ``comparison.png``.

Presets (:data:`PRESETS`): ``demo`` (embedded dataset, CPU, minutes), ``placement``
(where CBAM goes, embedded dataset), ``mini`` (BCCD from scratch on one GPU),
``coco-r50``, ``coco-r101``, ``voc-frcnn``, ``voc-ssd`` (the real configs: printed as
distributed commands unless ``--run``).

Run as ``python -m cbam_mmdet.reproduce --worker SPEC_JSON`` it is the per-variant
subprocess.
"""
import argparse
import collections
import csv
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
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULT_FILE = 'result.json'
LOG_FILE = 'reproduce.log'
OUTPUTS = ('comparison.md', 'comparison.csv', 'comparison.png')
COLUMNS = ('mAP', 'mAP50', 'mAP75')

COCO_METRICS = {'mAP': 'coco/bbox_mAP', 'mAP50': 'coco/bbox_mAP_50',
                'mAP75': 'coco/bbox_mAP_75'}
VOC_METRICS = {'mAP': 'pascal_voc/mAP', 'mAP50': 'pascal_voc/AP50',
               'mAP75': 'pascal_voc/AP75'}


@dataclass(frozen=True)
class Variant:
    """One row: a config, and the paper's numbers for it (percent) where it has them;
    ``paper['delta']`` overrides the paper delta computed against the first row."""
    name: str
    config: str
    paper: Optional[Dict[str, float]] = None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    variants: Tuple[Variant, ...]
    metrics: Dict[str, str]
    input_shape: Tuple[int, int, int]  # (C, H, W) of the GFLOPs count
    metric_note: str
    runs_here: bool = True  # False: print distributed commands unless --run
    iteration_based: bool = False  # True: --max-iters rescales the schedule
    parallel: int = 1  # variants run at the same time by default
    gpus: int = 8  # GPUs per run in the printed distributed commands
    paper_note: str = ''
    default_options: Dict = field(default_factory=dict)


def _demo(name):
    return f'configs/demo/faster_rcnn_r50_shapes{name}.py'


_SHAPES_NOTE = ('COCO mAP@[.5:.95] (CocoMetric) on 128 held-out scenes (seed 1) of the '
                'embedded SyntheticShapesDataset, 128x128; trained from scratch on 512 '
                'scenes (seed 0).')

PRESETS = {p.name: p for p in [
    Preset(
        name='demo',
        description='baseline vs SE vs CBAM, Faster R-CNN R-50-FPN (narrow, from scratch) '
                    'on the embedded shapes dataset, CPU',
        variants=(Variant('baseline', _demo('')), Variant('SE', _demo('_se')),
                  Variant('CBAM', _demo('_cbam'))),
        metrics=COCO_METRICS, input_shape=(3, 128, 128), metric_note=_SHAPES_NOTE,
        iteration_based=True),
    Preset(
        name='placement',
        description='where CBAM goes: inside the block (after conv2), at the block end '
                    '(after conv3, the paper), after the neck (every FPN level), or both '
                    '(after conv3 and after the neck); embedded shapes dataset, CPU',
        variants=(Variant('baseline', _demo('')),
                  Variant('CBAM after_conv2', _demo('_cbam_after_conv2')),
                  Variant('CBAM after_conv3 (paper)', _demo('_cbam')),
                  Variant('CBAM after neck', _demo('_cbam_neck')),
                  Variant('CBAM after_conv3 + neck', _demo('_cbam_after_conv3_neck'))),
        metrics=COCO_METRICS, input_shape=(3, 128, 128), metric_note=_SHAPES_NOTE,
        iteration_based=True),
    Preset(
        name='mini',
        description='baseline vs SE vs CBAM, Faster R-CNN R-50-FPN from scratch on BCCD '
                    '(640x480, fp16 AMP, 18 epochs), one GPU, the three runs sharing it',
        variants=(Variant('baseline', 'configs/mini/faster_rcnn_r50_bccd.py'),
                  Variant('SE', 'configs/mini/faster_rcnn_r50_bccd_se.py'),
                  Variant('CBAM', 'configs/mini/faster_rcnn_r50_bccd_cbam.py')),
        metrics=VOC_METRICS, input_shape=(3, 480, 640), parallel=3,
        metric_note='VOCMetric area AP on the BCCD test split (72 images): mAP is the '
                    'mean over IoU .50:.05:.95, mAP50/mAP75 at IoU .5/.75. One seed: '
                    'differences of a point or less are within seed noise.'),
    Preset(
        name='coco-r50',
        description='Faster R-CNN R-50-FPN 1x on COCO 2017 (train2017 -> val2017), '
                    'baseline vs SE vs CBAM, ImageNet-pretrained backbones',
        variants=(Variant('baseline', 'configs/faster_rcnn_r50_coco.py',
                          dict(mAP=27.0, mAP50=46.2, mAP75=28.1)),
                  Variant('SE', 'configs/faster_rcnn_r50_se_coco.py'),
                  Variant('CBAM', 'configs/faster_rcnn_r50_cbam_coco.py',
                          dict(mAP=28.1, mAP50=48.2, mAP75=29.2))),
        metrics=COCO_METRICS, input_shape=(3, 800, 1333), runs_here=False,
        metric_note='COCO mAP@[.5:.95], mAP@.5, mAP@.75 on val2017.',
        paper_note='Paper: Woo et al. 2018, Table 6 (COCO, Faster R-CNN, ResNet-50); '
                   'these ResNet-50 values were recalled, not read from the paper: check '
                   'them against arXiv 1807.06521. The paper\'s detector is not mmdet\'s '
                   'FPN (mmdet R50-FPN 1x reaches 37.4): compare deltas.'),
    Preset(
        name='coco-r101',
        description='Faster R-CNN R-101-FPN 1x on COCO 2017 (train2017 -> val2017), '
                    'baseline vs SE vs CBAM, ImageNet-pretrained backbones',
        variants=(Variant('baseline', 'configs/faster_rcnn_r101_coco.py',
                          dict(mAP=29.1, mAP50=48.4, mAP75=30.7)),
                  Variant('SE', 'configs/faster_rcnn_r101_se_coco.py'),
                  Variant('CBAM', 'configs/faster_rcnn_r101_cbam_coco.py',
                          dict(mAP=30.8, mAP50=50.5, mAP75=32.6))),
        metrics=COCO_METRICS, input_shape=(3, 800, 1333), runs_here=False,
        metric_note='COCO mAP@[.5:.95], mAP@.5, mAP@.75 on val2017.',
        paper_note='Paper: Woo et al. 2018, Table 6 (COCO, Faster R-CNN, ResNet-101). '
                   'The paper\'s detector is not mmdet\'s FPN: compare deltas.'),
    Preset(
        name='voc-frcnn',
        description='Faster R-CNN R-50-FPN on PASCAL VOC (07+12 trainval -> 07 test), '
                    'baseline vs SE vs CBAM',
        variants=(Variant('baseline', 'configs/faster_rcnn_r50_voc0712.py'),
                  Variant('SE', 'configs/faster_rcnn_r50_se_voc0712.py'),
                  Variant('CBAM', 'configs/faster_rcnn_r50_cbam_voc0712.py')),
        metrics={'mAP': 'pascal_voc/mAP'}, input_shape=(3, 600, 1000), runs_here=False,
        metric_note='VOC2007 test 11-point mAP at IoU .5 (mmdet\'s VOCMetric).',
        paper_note='The paper has no Faster R-CNN VOC table.'),
    Preset(
        name='voc-ssd',
        description='SSD300 VGG16 on PASCAL VOC (07+12 trainval -> 07 test), attention on '
                    'every detection feature level: baseline vs SE vs CBAM',
        variants=(Variant('baseline', 'configs/ssd300_vgg16_voc0712.py',
                          dict(mAP=77.8)),
                  Variant('SE', 'configs/ssd300_vgg16_se_voc0712.py',
                          dict(mAP=79.1, delta=0.2)),
                  Variant('CBAM', 'configs/ssd300_vgg16_cbam_voc0712.py',
                          dict(mAP=79.3, delta=0.4))),
        metrics={'mAP': 'pascal_voc/mAP'}, input_shape=(3, 300, 300), runs_here=False,
        metric_note='VOC2007 test 11-point mAP at IoU .5 (mmdet\'s VOCMetric).',
        paper_note='Paper: Woo et al. 2018, Table 7 (VOC2007 test, VGG16): SSD 77.8; its '
                   'SE and CBAM rows are on StairNet (78.9): StairNet+SE 79.1, '
                   'StairNet+CBAM 79.3, so the paper deltas are against StairNet.'),
]}


# ----------------------------------------------------------------------------- options
def iteration_budget(max_iters):
    """cfg options that give an iteration-based preset (demo, placement) a budget of
    ``max_iters`` iterations, with the demo configs' schedule rescaled to it."""
    if not isinstance(max_iters, int) or max_iters < 1:
        raise ValueError(f'--max-iters must be a positive integer, got {max_iters!r}')
    return {
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': max_iters,
        'default_hooks.checkpoint.interval': max_iters,
        'default_hooks.logger.interval': max(1, min(10, max_iters // 5)),
        'param_scheduler': [
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
                 end=min(50, max_iters)),
            dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
                 milestones=[max(1, int(max_iters * 0.8))], gamma=0.1),
        ],
    }


def select_variants(preset, names=None):
    """The preset's variants, or those named (comma-separated or a list), in order."""
    if not names:
        return list(preset.variants)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(',') if n.strip()]
    known = {v.name: v for v in preset.variants}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f'--variants: unknown variant(s) {unknown} for preset '
                         f'{preset.name!r}; allowed: {list(known)}')
    return [known[n] for n in names]


def variant_dir(work_dir, variant):
    """``WORK_DIR/<variant name with spaces and symbols as '_'>``."""
    return osp.join(work_dir, re.sub(r'[^A-Za-z0-9_.-]+', '_', variant.name).strip('_'))


# ----------------------------------------------------------------------------- worker
def _set_data_root(cfg, data_root):
    """Point every dataset of the dataloaders at ``data_root`` (and evaluator ann_files
    that lived under the old root)."""
    from .apis.dataset_check import _leaf_datasets
    old_roots = set()
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for _, ds in _leaf_datasets(loader.get('dataset'), split):
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
    """GFLOPs of the detector on one input (cbam_mmdet.complexity), or None without it."""
    try:
        from .complexity import detector_complexity
    except ImportError:
        return None
    return detector_complexity(cfg, tuple(input_shape))['flops'] / 1e9


def _last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def run_variant(spec):
    """Train then test one variant (the subprocess's job); writes and returns its result.

    ``spec``: dict(name, config, work_dir, cfg_options, data_root, input_shape, metrics,
    amp)."""
    import gc

    import cbam_mmdet  # noqa: F401  (plugins, datasets, safe checkpoint loading)
    from .apis import build_test_config, build_train_config, run_test, run_train

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
    checkpoint = _last_checkpoint(work_dir)
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


# ----------------------------------------------------------------------------- running
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
    for key in ('eta', 'time', 'loss', 'coco/bbox_mAP', 'coco/bbox_mAP_50',
                'coco/bbox_mAP_75', 'pascal_voc/mAP', 'pascal_voc/AP50',
                'pascal_voc/AP75'):
        v = re.search(rf'(?:^|\s){re.escape(key)}:\s*(\S+)', rest)
        if v:
            keep.append(f'{key} {v.group(1)}')
    return f'{stage} {where} ' + '  '.join(keep)


def _last_error(lines):
    for line in reversed(lines):
        if _ERROR.match(line):
            return line.strip()
    for line in reversed(lines):
        if line.strip():
            return line.strip()
    return 'no output'


def _worker_env():
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH']
                                if env.get('PYTHONPATH') else '')
    env['PYTHONUNBUFFERED'] = '1'
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
                    cfg_options=dict(preset.default_options, **(cfg_options or {})),
                    data_root=data_root, input_shape=list(preset.input_shape), amp=amp)
        tag = f'{i + 1}/{len(variants)} {variant.name}'
        locked_log(f'[{tag}] start: {variant.config}')
        return run_one(spec, tag, log=locked_log, verbose=verbose)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, range(len(variants)), variants))


# ----------------------------------------------------------------------------- collecting
def _metrics_from_mmengine_logs(vdir, metrics):
    """The newest test metrics json mmengine wrote under ``vdir/<timestamp>/``."""
    wanted = metrics['mAP']
    found = []
    for path in glob.glob(osp.join(vdir, '*', '*.json')):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and wanted in data:
            found.append((osp.getmtime(path), path, data))
    if not found:
        return None
    _, path, data = max(found)
    return path, data


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
                from .offline_model import build_model_offline
                config = osp.join(ROOT, variant.config)
                model = build_model_offline(config)
                result['params'] = sum(p.numel() for p in model.parameters())
                result['gflops'] = _gflops(config, preset.input_shape)
            except Exception as e:
                log(f'[{variant.name}] params/GFLOPs not counted: {type(e).__name__}: {e}')
        results.append(result)
    return results


# ----------------------------------------------------------------------------- table
def table_rows(preset, results):
    """One dict per variant: the columns of comparison.csv (mAP values in percent)."""
    paper = {v.name: v.paper or {} for v in preset.variants}
    rows = []
    base = None
    for r in results:
        row = dict(variant=r['name'], config=r['config'], status=r['status'],
                   params_M=None, GFLOPs=None, mAP=None, mAP50=None, mAP75=None,
                   delta_mAP=None, paper_mAP=None, paper_mAP50=None, paper_mAP75=None,
                   paper_delta=None, train_s=r.get('train_s'), test_s=r.get('test_s'),
                   error=r.get('error', ''))
        if r['status'] == 'ok':
            if r.get('params') is not None:
                row['params_M'] = r['params'] / 1e6
            row['GFLOPs'] = r.get('gflops')
            for col, key in preset.metrics.items():
                if key in r['metrics']:
                    row[col] = 100.0 * r['metrics'][key]
        p = paper.get(r['name'], {})
        for col in COLUMNS:
            row[f'paper_{col}'] = p.get(col)
        rows.append(row)
    if rows:
        base = rows[0]
        base_paper = paper.get(base['variant'], {}).get('mAP')
        for row in rows[1:]:
            if row['mAP'] is not None and base['mAP'] is not None:
                row['delta_mAP'] = row['mAP'] - base['mAP']
            p = paper.get(row['variant'], {})
            if 'delta' in p:
                row['paper_delta'] = p['delta']
            elif p.get('mAP') is not None and base_paper is not None:
                row['paper_delta'] = p['mAP'] - base_paper
    return rows


def _fmt(v, spec='.1f', signed=False):
    if v is None:
        return '-'
    return format(v, ('+' if signed else '') + spec)


def format_markdown(preset, rows, wall_s=None, device=None):
    """comparison.md: the preset, how mAP is measured, the table, the paper's note."""
    has_paper = any(r[f'paper_{c}'] is not None for r in rows for c in COLUMNS)
    cols = [c for c in COLUMNS if c in preset.metrics]
    header = ['variant', 'params (M)', 'GFLOPs'] + cols + ['Δ mAP']
    if has_paper:
        header += [f'paper {c}' for c in cols] + ['paper Δ']
    header += ['status']
    lines = [f'# {preset.name}: {preset.description}', '',
             f'mAP: {preset.metric_note} Values in percent; Δ against the first row. '
             f'GFLOPs: the whole detector on one {"x".join(map(str, preset.input_shape))} '
             f'input (mmengine\'s counter, multiply-adds).']
    if device:
        lines += ['', f'Device: {device}.']
    lines += ['', '| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---'] + ['---:'] * (len(header) - 2) + ['---']) + '|']
    for r in rows:
        cells = [r['variant'], _fmt(r['params_M'], '.2f'), _fmt(r['GFLOPs'], '.3f')]
        cells += [_fmt(r[c]) for c in cols] + [_fmt(r['delta_mAP'], signed=True)]
        if has_paper:
            cells += [_fmt(r[f'paper_{c}']) for c in cols]
            cells += [_fmt(r['paper_delta'], signed=True)]
        if r['status'] == 'ok':
            times = [f'{k} {r[k + "_s"]:.0f} s' for k in ('train', 'test')
                     if r.get(k + '_s') is not None]
            status = 'ok' + (f' ({", ".join(times)})' if times else '')
        else:
            status = f'{r["status"]}: {r["error"]}'.replace('|', '\\|')
        cells.append(status)
        lines.append('| ' + ' | '.join(cells) + ' |')
    if any(r['GFLOPs'] is None and r['status'] == 'ok' for r in rows):
        lines += ['', 'GFLOPs "-": not counted (cbam_mmdet.complexity unavailable or failed).']
    if preset.paper_note:
        lines += ['', preset.paper_note]
    if wall_s is not None:
        lines += ['', f'Wall time: {wall_s / 60:.1f} min.']
    return '\n'.join(lines) + '\n'


def write_csv(path, rows):
    fields = list(rows[0].keys()) if rows else ['variant', 'mAP']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ('' if v is None else (round(v, 4) if isinstance(v, float)
                                                      else v)) for k, v in r.items()})


def write_chart(path, preset, rows):
    """Grouped bars of mAP/mAP50/mAP75 per variant; failed variants marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = [c for c in COLUMNS if c in preset.metrics]
    n = len(rows)
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * n + 1), 3.8))
    for j, col in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(n)]
        vals = [r[col] or 0.0 for r in rows]
        bars = ax.bar(xs, vals, width, label=col)
        for x, r, b in zip(xs, rows, bars):
            if r[col] is not None:
                ax.annotate(f'{r[col]:.1f}', (x, b.get_height()), ha='center',
                            va='bottom', fontsize=7)
    for i, r in enumerate(rows):
        if r['status'] != 'ok':
            ax.annotate(r['status'], (i, 0), ha='center', va='bottom', color='red')
    ax.set_xticks(range(n))
    ax.set_xticklabels([r['variant'] for r in rows], rotation=15, ha='right', fontsize=8)
    top = max([r[c] for r in rows for c in cols if r[c] is not None] or [1.0])
    ax.set_ylim(0, top * 1.25)  # room for the legend above the bars
    ax.set_ylabel('AP (%)')
    ax.set_title(f'{preset.name}', fontsize=10)
    ax.legend(fontsize=8, ncol=len(cols), loc='upper center')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(preset, work_dir, results, wall_s=None, device=None):
    """Write comparison.md/.csv/.png into ``work_dir``; returns (markdown, paths)."""
    os.makedirs(work_dir, exist_ok=True)
    rows = table_rows(preset, results)
    md = format_markdown(preset, rows, wall_s=wall_s, device=device)
    paths = [osp.join(work_dir, name) for name in OUTPUTS]
    with open(paths[0], 'w') as f:
        f.write(md)
    write_csv(paths[1], rows)
    write_chart(paths[2], preset, rows)
    return md, paths


# ----------------------------------------------------------------------------- commands
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


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train and test every variant of a preset and write the paper-style '
                    'comparison (comparison.md, comparison.csv, comparison.png).')
    parser.add_argument('--preset', required=True, choices=list(PRESETS),
                        help='which comparison')
    parser.add_argument('--work-dir', help='default: work_dirs/<preset>; one sub-folder '
                                           'per variant')
    parser.add_argument('--variants', help='comma-separated subset of the preset\'s '
                                           'variants (default: all)')
    parser.add_argument('--collect', action='store_true',
                        help='run nothing: build the table from finished work dirs')
    parser.add_argument('--run', action='store_true',
                        help='run presets of long trainings (coco-*, voc-*) here instead '
                             'of printing their distributed commands')
    parser.add_argument('--max-iters', type=int,
                        help='training budget in iterations (demo, placement only)')
    parser.add_argument('--parallel', type=int,
                        help='variants run at the same time (default: the preset\'s; '
                             'mini: 3 on one GPU)')
    parser.add_argument('--gpus', type=int, help='GPUs per run in the printed commands')
    parser.add_argument('--data-root', help='dataset root for every dataloader, e.g. a '
                                            'copy of BCCD')
    parser.add_argument('--amp', action='store_true', help='mixed precision training')
    parser.add_argument('--device-name', help='named in comparison.md, e.g. "1x H100"')
    parser.add_argument('--cfg-options', nargs='+', default=None,
                        help='config overrides for every variant, key=value')
    parser.add_argument('--verbose', action='store_true', help='stream whole logs')
    args = parser.parse_args(argv)
    if args.max_iters is not None and not PRESETS[args.preset].iteration_based:
        parser.error(f'--max-iters applies to the iteration-based presets '
                     f'{[p.name for p in PRESETS.values() if p.iteration_based]}, not '
                     f'{args.preset!r} (use --cfg-options train_cfg.max_epochs=N)')
    if args.max_iters is not None and args.max_iters < 1:
        parser.error(f'--max-iters must be a positive integer, got {args.max_iters}')
    if args.parallel is not None and args.parallel < 1:
        parser.error(f'--parallel must be a positive integer, got {args.parallel}')
    return args


def _parse_cfg_options(items):
    if not items:
        return {}
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=['--cfg-options'], dest='cfg_options')(None, ns, items)
    return ns.cfg_options


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
        cfg_options = _parse_cfg_options(args.cfg_options)
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


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--worker':
        run_variant(json.loads(sys.argv[2]))
    else:
        main()
