"""Training curves of several runs (work dirs, timestamp folders or ``scalars.json``) on one
PNG; validation records sit at the iteration of the training record before them."""
import glob
import json
import os.path as osp
from collections import OrderedDict

from .drawing import new_figure, save_figure

TRAIN_KEY = 'loss'
METRIC_KEYS = ('coco/bbox_mAP', 'pascal_voc/mAP', 'coco/bbox_mAP_50')
AUTO_METRIC = 'mAP'


def scalar_files(run):
    """The ``scalars.json`` files of a run (work dir, timestamp dir or file), oldest first."""
    run = str(run)
    if osp.isfile(run):
        return [run]
    if not osp.isdir(run):
        raise FileNotFoundError(f'run: no such file or folder {run!r}')
    direct = osp.join(run, 'vis_data', 'scalars.json')
    if osp.isfile(direct):
        return [direct]
    files = sorted(glob.glob(osp.join(run, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise FileNotFoundError(f'run: no <timestamp>/vis_data/scalars.json under {run!r}'
                                f' (is it an mmengine work dir?)')
    return files


def work_dir_of(run):
    """The work dir of a run given as a work dir, a timestamp dir or a scalars.json."""
    path = osp.abspath(str(run)).rstrip('/')
    if osp.isfile(path):  # <work_dir>/<timestamp>/vis_data/scalars.json
        return osp.dirname(osp.dirname(osp.dirname(path)))
    if osp.isfile(osp.join(path, 'vis_data', 'scalars.json')):
        return osp.dirname(path)
    return path


def read_scalars(path):
    """The records of one scalars.json (a list of dicts)."""
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{n}: not a JSON line ({e})') from None
            if not isinstance(rec, dict) or 'step' not in rec:
                raise ValueError(f'{path}:{n}: expected a JSON object with a "step" key')
            records.append(rec)
    return records


def load_run(run):
    """``{key: ([x, ...], [value, ...])}`` of a run's numeric keys, x on the iteration axis."""
    series = OrderedDict()
    for path in scalar_files(run):
        last_train_step = None
        for rec in read_scalars(path):
            if TRAIN_KEY in rec:
                last_train_step = rec['step']
            x = rec['step'] if last_train_step is None else last_train_step
            for key, value in rec.items():
                if key == 'step' or isinstance(value, bool) or \
                        not isinstance(value, (int, float)):
                    continue
                xs, ys = series.setdefault(key, ([], []))
                xs.append(x)
                ys.append(float(value))
    return series


def resolve_metric(all_series):
    """The first of :data:`METRIC_KEYS` any run has, else the first key with 'mAP'."""
    keys = [k for s in all_series for k in s]
    return next((k for k in METRIC_KEYS if k in keys),
                next((k for k in keys if AUTO_METRIC in k), None))


def unique_labels(runs, labels=None):
    if labels is not None:
        if len(labels) != len(runs):
            raise ValueError(f'labels: {len(labels)} labels for {len(runs)} runs')
        return list(labels)
    names = [osp.basename(work_dir_of(r)) for r in runs]
    # runs with the same work dir name: the parent folder tells them apart
    return [f'{osp.basename(osp.dirname(work_dir_of(r)))}/{n}' if names.count(n) > 1
            else n for r, n in zip(runs, names)]


def plot_curves(runs, out_path, keys=('loss', 'mAP'), labels=None, smooth=1):
    """One panel per key, one line per run; writes ``out_path``, returns it and the curves."""
    if not runs:
        raise ValueError('runs: give at least one work dir or scalars.json')
    if not isinstance(smooth, int) or smooth < 1:
        raise ValueError(f'smooth must be a positive int, got {smooth!r}')
    names = unique_labels(runs, labels)
    all_series = [load_run(r) for r in runs]
    available = sorted({k for s in all_series for k in s})
    resolved = []
    for key in keys:
        if key == AUTO_METRIC and key not in available:
            key = resolve_metric(all_series)
            if key is None:
                continue  # no validation in any run: the panel is left out
        if key not in available:
            raise ValueError(f'keys: no run has {key!r}; available: {available}')
        resolved.append(key)
    if not resolved:
        raise ValueError(f'keys: none of {list(keys)} found; available: {available}')
    fig, axes = new_figure(1, len(resolved), panel_size=4.0)
    plotted = {name: {} for name in names}
    for ax, key in zip(axes[0], resolved):
        for name, series in zip(names, all_series):
            if key not in series:
                continue
            xs, ys = series[key]
            is_train = key.startswith('loss') or key in ('lr', 'grad_norm')
            if is_train and smooth > 1:
                ys = moving_average(ys, smooth)
            ax.plot(xs, ys, label=name, marker=None if is_train else 'o', markersize=3)
            plotted[name][key] = (list(xs), list(ys))
        ax.set_xlabel('iteration')
        ax.set_title(key + (f' (moving average of {smooth})' if smooth > 1 and
                            key.startswith('loss') else ''), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_path), plotted


def moving_average(values, window):
    return [sum(values[max(0, i + 1 - window):i + 1]) / min(i + 1, window)
            for i in range(len(values))]
