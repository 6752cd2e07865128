"""The figures of ``tools/vis_attention.py``: per image the detections and each stage's
spatial map, and, with channel attention, the channel maps as heat maps, box plots and json."""
import json
import os.path as osp

import numpy as np

from .attention_maps import AttentionRecorder, channel_statistics, stage_spatial_maps
from .drawing import (class_names_of, detections_above, draw_detections, new_figure,
                      save_figure, show_image, show_overlay)
from .inference import predict, prepare_image, to_image_size

SCALES = ('relative', 'absolute')


def record_attention(model, image):
    """Run the model on one image; ``(result, maps, img_bgr, data_sample)``."""
    inputs, data_samples, img = prepare_image(model, image)
    with AttentionRecorder(model) as rec:
        result = predict(model, inputs, data_samples)[0]
    if not rec.maps:
        raise ValueError('the model has no CBAM or SE module: nothing to visualise')
    return result, dict(rec.maps), img, data_samples[0]


def plot_spatial_attention(img, result, stage_maps, data_sample, class_names, path,
                           score_thr=0.3, scale='relative', alpha=0.5, dpi=100):
    """The detections panel and one overlay panel per stage; writes ``path``."""
    if scale not in SCALES:
        raise ValueError(f'scale must be one of {list(SCALES)}, got {scale!r}')
    fig, axes = new_figure(1, 1 + len(stage_maps))
    bboxes, labels, scores = detections_above(result.pred_instances, score_thr)
    show_image(axes[0, 0], img, f'detections (score >= {score_thr:g}): {len(scores)}')
    draw_detections(axes[0, 0], bboxes, labels, scores, class_names)
    for ax, (stage, m) in zip(axes[0, 1:], stage_maps.items()):
        lo, hi = float(m.min()), float(m.max())
        heat = to_image_size(m, data_sample)
        if scale == 'relative':
            heat = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
        show_overlay(ax, img, heat, alpha=alpha,
                     title=f'{stage} M_s {m.shape[0]}x{m.shape[1]}\n'
                           f'range [{lo:.4f}, {hi:.4f}]'
                           + (' (stretched)' if scale == 'relative' else ''))
    return save_figure(fig, path, dpi=dpi)


def plot_channel_statistics(stats, path, scale='relative', dpi=100):
    """Per stage: blocks x channels heat map of M_c and box plots per block."""
    if scale not in SCALES:
        raise ValueError(f'scale must be one of {list(SCALES)}, got {scale!r}')
    stages = list(dict.fromkeys(s['stage'] for s in stats))
    fig, axes = new_figure(2, len(stages), panel_size=3.2)
    for col, stage in enumerate(stages):
        rows = [s for s in stats if s['stage'] == stage]
        width = max(s['channels'] for s in rows)
        grid = np.full((len(rows), width), np.nan, dtype=np.float32)
        for i, s in enumerate(rows):
            grid[i, :s['channels']] = s['values']
        ax = axes[0, col]
        lo, hi = (0.0, 1.0) if scale == 'absolute' else \
            (float(np.nanmin(grid)), float(np.nanmax(grid)))
        im = ax.imshow(grid, aspect='auto', cmap='viridis', vmin=lo, vmax=max(hi, lo + 1e-6),
                       interpolation='nearest')
        ax.set_title(f'{stage} ({rows[0]["kind"]})\nM_c per block', fontsize=8)
        ax.set_xlabel('channel', fontsize=7)
        ax.set_ylabel('block', fontsize=7)
        ax.set_yticks(range(len(rows)))
        ax.tick_params(labelsize=6)
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax = axes[1, col]
        ax.boxplot([s['values'] for s in rows], positions=range(len(rows)), showfliers=False)
        if scale == 'absolute':
            ax.set_ylim(0, 1)
        ax.set_xlabel('block', fontsize=7)
        ax.set_ylabel('M_c', fontsize=7)
        ax.set_title('mean ' + ', '.join(f'{s["mean"]:.3f}' for s in rows)
                     + f'\nrange [{lo:.4f}, {hi:.4f}]', fontsize=7)
        ax.tick_params(labelsize=6)
    return save_figure(fig, path, dpi=dpi)


def visualize_attention(model, image, out_dir, name=None, score_thr=0.3,
                        reduce='last', scale='relative', alpha=0.5, dpi=100):
    """Write one image's attention figures; returns their paths, the maps and the result."""
    if name is None:
        name = osp.splitext(osp.basename(str(image)))[0] if isinstance(image, str) \
            else 'image'
    result, maps, img, data_sample = record_attention(model, image)
    stage_maps = stage_spatial_maps(maps, reduce=reduce)
    out = dict(maps=maps, result=result, channel=None, stats=None)
    out['attention'] = plot_spatial_attention(
        img, result, stage_maps, data_sample, class_names_of(model),
        osp.join(out_dir, f'{name}_attention.png'), score_thr=score_thr, scale=scale,
        alpha=alpha, dpi=dpi)
    stats = channel_statistics(maps)
    if stats:
        out['channel'] = plot_channel_statistics(
            stats, osp.join(out_dir, f'{name}_channel_attention.png'), scale=scale,
            dpi=dpi)
        out['stats'] = osp.join(out_dir, f'{name}_channel_attention.json')
        with open(out['stats'], 'w') as f:
            json.dump([{k: v for k, v in s.items() if k != 'values'} for s in stats], f,
                      indent=1)
    return out

