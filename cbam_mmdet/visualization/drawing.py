"""Matplotlib drawing (Agg: files only) shared by the figures: images, overlays, boxes."""
import os
import os.path as osp

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HEATMAP_CMAP = 'jet'


def new_figure(nrows, ncols, panel_size=3.0):
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows),
                             squeeze=False)
    return fig, axes


def show_image(ax, img_bgr, title=None):
    ax.imshow(img_bgr[..., ::-1])
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)


def show_overlay(ax, img_bgr, heatmap, title=None, alpha=0.5, vmin=0.0, vmax=1.0):
    """The image with ``heatmap`` (same H x W) over it in jet; returns the artist."""
    show_image(ax, img_bgr, title)
    return ax.imshow(heatmap, cmap=HEATMAP_CMAP, alpha=alpha, vmin=vmin, vmax=vmax)


def draw_detections(ax, bboxes, labels, scores, class_names=None, color='lime',
                    highlight=None):
    """Boxes (x1, y1, x2, y2) with "class score" captions; ``highlight``: one box in red."""
    for i, (box, label, score) in enumerate(zip(bboxes, labels, scores)):
        x1, y1, x2, y2 = [float(v) for v in box]
        c, lw = ('red', 2.5) if i == highlight else (color, 1.2)
        ax.add_patch(matplotlib.patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False,
                                                  edgecolor=c, linewidth=lw))
        name = class_names[int(label)] if class_names and int(label) < len(class_names) \
            else str(int(label))
        ax.text(x1, y1, f'{name} {float(score):.2f}', fontsize=6, color='black',
                va='bottom', bbox=dict(facecolor=c, alpha=0.7, pad=0.5, linewidth=0))


def save_figure(fig, path, dpi=100):
    """Write ``fig`` to ``path`` (PNG), creating the folder; closes the figure."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def class_names_of(model):
    meta = getattr(model, 'dataset_meta', None) or {}
    names = meta.get('classes')
    return list(names) if names is not None else None


def detections_above(pred_instances, score_thr):
    """``(bboxes, labels, scores)`` numpy arrays of the detections with score >= thr."""
    scores = pred_instances.scores.detach().cpu().numpy()
    keep = scores >= score_thr
    return (pred_instances.bboxes.detach().cpu().numpy()[keep],
            pred_instances.labels.detach().cpu().numpy()[keep], scores[keep])


def normalize01(a):
    """``a`` scaled to [0, 1] by its maximum (all zero stays zero); negative -> 0."""
    a = np.clip(np.asarray(a, dtype=np.float32), 0, None)
    top = float(a.max()) if a.size else 0.0
    return a / top if top > 0 else a
