"""The comparison table of a preset's runs: ``comparison.md``, ``comparison.csv`` (a row
per variant, AP in percent: each metric's mean, standard deviation and per-seed values,
and the seed-paired difference to the first variant with its 95% t-interval) and
``comparison.png`` (means with standard-deviation error bars, the seeds as dots)."""
import csv
import os
import os.path as osp

from .presets import COLUMNS
from .statistics import ONE_SEED, mean_std, paired_difference

OUTPUTS = ('comparison.md', 'comparison.csv', 'comparison.png')


def ci_keys(col):
    """The csv columns of the interval of ``delta_<col>`` (mAP's: delta_ci_low/high)."""
    prefix = 'delta' if col == 'mAP' else f'delta_{col}'
    return f'{prefix}_ci_low', f'{prefix}_ci_high'


def table_rows(preset, results):
    """One dict per variant, in the order of ``results``: the columns of comparison.csv."""
    cols = [c for c in COLUMNS if c in preset.metrics]
    paper = {v.name: v.paper or {} for v in preset.variants}
    runs, rows, per_seed = {}, [], []
    for r in results:
        runs.setdefault(r['name'], []).append(r)
    for name, rs in runs.items():
        ok = [r for r in rs if r['status'] == 'ok']
        bad = [r for r in rs if r['status'] != 'ok']
        values = {c: {r.get('seed', 0): 100.0 * r['metrics'][preset.metrics[c]]
                      for r in ok if preset.metrics[c] in r['metrics']} for c in cols}
        first, seeds = (ok or [{}])[0], ' '.join(str(r.get('seed', 0)) for r in ok)
        row = dict(variant=name, config=rs[0]['config'], status=bad[0]['status'] if bad else 'ok',
                   n_runs=len(rs), n_seeds=len(ok), seeds=seeds, GFLOPs=first.get('gflops'),
                   params_M=first['params'] / 1e6 if first.get('params') else None)
        for c in cols:
            row[f'{c}_mean'], row[f'{c}_std'] = mean_std(list(values[c].values()))
            row[f'{c}_seeds'] = ' '.join(f'{v:.2f}' for _, v in sorted(values[c].items()))
            row.update({f'delta_{c}': None, ci_keys(c)[0]: None, ci_keys(c)[1]: None})
        row.update({f'paper_{c}': paper.get(name, {}).get(c) for c in COLUMNS},
                   verdict='', paper_delta=None, error='; '.join(
                       f'seed {r.get("seed", 0)}: {r.get("error", "")}' for r in bad))
        for k in ('train_s', 'test_s'):
            row[k] = mean_std([r[k] for r in ok if r.get(k) is not None])[0]
        rows.append(row)
        per_seed.append(values)
    for row, values in zip(rows[1:], per_seed[1:]):
        for c in cols:
            d = paired_difference(per_seed[0][c], values[c])
            row.update({f'delta_{c}': d['mean'], ci_keys(c)[0]: d['ci_low'],
                        ci_keys(c)[1]: d['ci_high']})
            row['verdict'] = (d['verdict'] or '') if c == 'mAP' else row['verdict']
        p, base_paper = paper.get(row['variant'], {}), rows[0]['paper_mAP']
        row['paper_delta'] = p['delta'] if 'delta' in p else (
            p['mAP'] - base_paper if p.get('mAP') is not None and base_paper is not None
            else None)
    return rows


def _fmt(v, spec='.1f', signed=False):
    return '-' if v is None else format(v, ('+' if signed else '') + spec)


def format_markdown(preset, rows, wall_s=None, device=None):
    """comparison.md: the preset, how mAP is measured, the seeds, the table, the paper."""
    cols = [c for c in COLUMNS if c in preset.metrics]
    n = max([r['n_runs'] for r in rows] or [0])
    has_paper = any(r[f'paper_{c}'] is not None for r in rows for c in COLUMNS)
    header = ['variant', 'params (M)', 'GFLOPs', *cols] + ['mAP per seed'] * (n > 1) + [
        'Δ mAP' + ' [95% CI]' * (n > 1), 'verdict'] + (
        [f'paper {c}' for c in cols] + ['paper Δ'] if has_paper else []) + ['status']
    lines = [f'# {preset.name}: {preset.description}', '',
             f'mAP: {preset.metric_note} Values in percent. GFLOPs: the whole detector on '
             f'one {"x".join(map(str, preset.input_shape))} input (mmengine\'s counter, '
             f'multiply-adds).', '',
             f'{n} seeds (0..{n - 1}) per variant: mean ± standard deviation; Δ is the mean '
             f'of the seed-paired differences to the first row with its 95% t-interval, '
             f'"within noise" when it contains 0.' if n > 1 else
             f'One seed per variant ({ONE_SEED}): run --seeds 3 or more to compare variants.']
    if device:
        lines += ['', f'Device: {device}.']
    lines += ['', '| ' + ' | '.join(header) + ' |',
        '|' + '|'.join(['---'] + ['---:'] * (len(header) - 3) + ['---'] * 2) + '|']
    for r in rows:
        low, high = r['delta_ci_low'], r['delta_ci_high']
        cells = [r['variant'], _fmt(r['params_M'], '.2f'), _fmt(r['GFLOPs'], '.3f')] + [
            _fmt(r[f'{c}_mean']) + (f' ± {r[f"{c}_std"]:.1f}' if r[f'{c}_std'] is not None
                                    else '') for c in cols]
        cells += [' / '.join(f'{float(v):.1f}' for v in r['mAP_seeds'].split())] * (n > 1)
        cells += [_fmt(r['delta_mAP'], signed=True) + (
            f' [{low:+.1f}, {high:+.1f}]' if low is not None else ''), r['verdict']]
        if has_paper:
            cells += [_fmt(r[f'paper_{c}']) for c in cols] + [_fmt(r['paper_delta'], signed=True)]
        times = ', '.join(f'{k} {r[k + "_s"]:.0f} s' for k in ('train', 'test')
                          if r.get(k + '_s') is not None)
        cells.append(('ok' + f' ({times})' * bool(times)) if r['status'] == 'ok' else
                     f'{r["status"]}: {r["error"]}'.replace('|', '\\|'))
        lines.append('| ' + ' | '.join(cells) + ' |')
    if preset.paper_note:
        lines += ['', preset.paper_note]
    if wall_s is not None:
        lines += ['', f'Wall time: {wall_s / 60:.1f} min.']
    return '\n'.join(lines) + '\n'


def write_csv(path, rows):
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ['variant'])
        writer.writeheader()
        writer.writerows({k: '' if v is None else round(v, 4) if isinstance(v, float) else v
                          for k, v in r.items()} for r in rows)


def write_chart(path, preset, rows):
    """Grouped bars of each metric's mean per variant, std error bars, a dot per seed."""
    from ..visualization.drawing import plt
    cols = [c for c in COLUMNS if c in preset.metrics]
    width, seeds = 0.8 / len(cols), [[float(v) for v in r[f'{c}_seeds'].split()]
                                      for c in cols for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 1), 3.8))
    for j, col in enumerate(cols):
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r[f'{col}_mean'] or 0.0 for r in rows], width, label=col, capsize=3,
               yerr=[r[f'{col}_std'] or 0.0 for r in rows])
        for x, values in zip(xs, seeds[j * len(rows):]):
            ax.plot([x] * len(values), values, 'k.', markersize=3)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r['variant'] + ('' if r['status'] == 'ok' else f' ({r["status"]})')
                        for r in rows], rotation=15, ha='right', fontsize=8)
    ax.set_ylim(0, max([1.0] + [v for s in seeds for v in s]) * 1.25)  # legend room
    ax.set_ylabel('AP (%)')
    ax.set_title(f'{preset.name}: mean ± std over seeds', fontsize=10)
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
