"""The paper-style table of a preset's results: ``comparison.md``, ``comparison.csv`` (one
row per variant, mAP columns in percent) and ``comparison.png``."""
import csv
import os
import os.path as osp

from .presets import COLUMNS

OUTPUTS = ('comparison.md', 'comparison.csv', 'comparison.png')


def table_rows(preset, results):
    """One dict per variant: the columns of comparison.csv (mAP values in percent)."""
    paper = {v.name: v.paper or {} for v in preset.variants}
    rows = []
    for r in results:
        row = dict(variant=r['name'], config=r['config'], status=r['status'],
                   params_M=None, GFLOPs=None, mAP=None, mAP50=None, mAP75=None,
                   delta_mAP=None, paper_mAP=None, paper_mAP50=None, paper_mAP75=None,
                   paper_delta=None, train_s=r.get('train_s'), test_s=r.get('test_s'),
                   error=r.get('error', ''))
        if r['status'] == 'ok':
            row['params_M'] = r['params'] / 1e6 if r.get('params') is not None else None
            row['GFLOPs'] = r.get('gflops')
            row.update({col: 100.0 * r['metrics'][key] for col, key in preset.metrics.items()
                        if key in r['metrics']})
        row.update({f'paper_{col}': paper.get(r['name'], {}).get(col) for col in COLUMNS})
        rows.append(row)
    if rows:
        base, base_paper = rows[0], paper.get(rows[0]['variant'], {}).get('mAP')
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
    return '-' if v is None else format(v, ('+' if signed else '') + spec)


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
            cells += [_fmt(r[f'paper_{c}']) for c in cols] + [_fmt(r['paper_delta'], signed=True)]
        times = [f'{k} {r[k + "_s"]:.0f} s' for k in ('train', 'test')
                 if r.get(k + '_s') is not None]
        status = 'ok' + (f' ({", ".join(times)})' if times else '') if r['status'] == 'ok' \
            else f'{r["status"]}: {r["error"]}'.replace('|', '\\|')
        lines.append('| ' + ' | '.join(cells + [status]) + ' |')
    if any(r['GFLOPs'] is None and r['status'] == 'ok' for r in rows):
        lines += ['', 'GFLOPs "-": not counted (the count failed).']
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
    from ..visualization.drawing import plt

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
