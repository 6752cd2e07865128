"""Grad-CAM (Selvaraju et al., ICCV 2017) of one detection: ReLU(sum_k alpha_k A^k), alpha_k
the spatial mean of dy/dA^k, A a layer's output (a leaf made by a forward hook), y the
detection's score or class logit. A weak model can give an all-zero map."""
import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .drawing import (class_names_of, draw_detections, new_figure, normalize01,
                      save_figure, show_image, show_overlay)
from .inference import predict, prepare_image, to_image_size

MATCHES = ('iou', 'rank')
TARGETS = ('score', 'logit')


@dataclass
class GradCamResult:
    """The map at the layer and over the image, the detection, the result and the image."""
    cam: np.ndarray
    heatmap: np.ndarray
    index: int
    bbox: np.ndarray
    label: int
    score: float
    result: object
    image: np.ndarray
    level: Optional[int] = None
    gradient_norm: float = 0.0


def find_module(model, layer):
    """The submodule named ``layer`` (a ``named_modules`` name); ValueError otherwise."""
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        candidates = [n for n in modules if n.count('.') <= 1 and n][:12]
        raise ValueError(f'layer: {layer!r} is not a module of the model; e.g. one of '
                         f'{candidates}')
    return modules[layer]


class _ForwardHook:
    """Context manager holding ``self._hook`` as a forward hook on ``self.module``."""

    def __enter__(self):
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self._handle.remove()
        return False


class FeatureCapture(_ForwardHook):
    """Forward hook making the layer's output (one level, or every level for 'auto') a leaf."""

    def __init__(self, module, layer, level=None):
        self.module, self.layer, self.level = module, layer, level
        self.activation = None
        self.activations = []
        self.index = None  # of the chosen leaf in activations

    def _hook(self, module, args, output):
        if isinstance(output, torch.Tensor):
            if self.level is not None:
                raise ValueError(f'level: layer {self.layer!r} outputs one tensor; leave '
                                 f'level unset (got {self.level!r})')
            self.activation = output.detach().requires_grad_(True)
            self.activations, self.index = [self.activation], 0
            return self.activation
        if isinstance(output, (tuple, list)):
            n = len(output)
            if self.level != 'auto' and (not isinstance(self.level, int)
                                         or not 0 <= self.level < n):
                raise ValueError(f"level: layer {self.layer!r} outputs {n} levels; give "
                                 f"level in 0..{n - 1} or 'auto', got {self.level!r}")
            out = [o.detach().requires_grad_(True) for o in output]
            self.activations = out
            if self.level != 'auto':
                self.activation, self.index = out[self.level], self.level
            return type(output)(out)
        raise TypeError(f'layer {self.layer!r} outputs {type(output).__name__}, not a '
                        f'tensor or a tuple of tensors')


class ClassLogitCapture(_ForwardHook):
    """Forward hook on a two-stage ``roi_head.bbox_head``: keeps its class logits."""

    def __init__(self, model):
        self.module = getattr(getattr(model, 'roi_head', None), 'bbox_head', None)
        if self.module is None:
            raise ValueError("target: 'logit' needs a two-stage detector (roi_head."
                             "bbox_head); use target='score' for this model")
        self.logits = None

    def _hook(self, module, args, output):
        self.logits = output[0]

    def logit_of(self, score, label):
        """The class logit of the RoI behind a detection score, column ``label``."""
        (g,) = torch.autograd.grad(score, self.logits, retain_graph=True, allow_unused=True)
        if g is None or not g.abs().sum() > 0:
            raise RuntimeError('the detection score does not depend on the RoI head '
                               'logits')
        row = int(g.abs().sum(dim=1).argmax())
        return self.logits[row, label]


@contextlib.contextmanager
def no_parameter_grad(model):
    """Parameters do not require grad inside; their flags are restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@contextlib.contextmanager
def score_threshold(model, score_thr):
    """The box head's test ``score_thr`` set to ``score_thr`` inside (None: unchanged)."""
    if score_thr is None:
        yield
        return
    head = getattr(model, 'roi_head', None) or getattr(model, 'bbox_head', None)
    cfg = getattr(head, 'test_cfg', None)
    if cfg is None or 'score_thr' not in cfg:
        raise ValueError('score_thr: the model has no roi_head/bbox_head test_cfg with '
                         'a score_thr to override')
    old = cfg.score_thr
    cfg.score_thr = score_thr
    try:
        yield
    finally:
        cfg.score_thr = old


def box_iou(box, boxes):
    """IoU of one x1 y1 x2 y2 box with each row of ``boxes`` (mmdet's bbox_overlaps)."""
    from mmdet.structures.bbox import bbox_overlaps
    as_tensor = lambda b: torch.as_tensor(np.asarray(b, np.float64)).reshape(-1, 4)  # noqa
    return bbox_overlaps(as_tensor(box), as_tensor(boxes))[0].numpy()


def choose_detection(scores, bboxes, labels, rank=0, target_box=None, target_label=None):
    """The ``rank``-th detection, or the one overlapping ``target_box`` most."""
    scores = np.asarray(scores)
    if len(scores) == 0:
        raise ValueError('the model made no detection on this image; lower score_thr '
                         '(e.g. score_thr=0) to use a weaker one')
    if target_box is None:
        if not isinstance(rank, int) or not 0 <= rank < len(scores):
            raise ValueError(f'detection: rank {rank!r} out of range, the model made '
                             f'{len(scores)} detections (0..{len(scores) - 1})')
        return int(np.argsort(-scores, kind='stable')[rank])
    iou = box_iou(target_box, bboxes)
    if target_label is not None and (np.asarray(labels) == target_label).any():
        iou = np.where(np.asarray(labels) == target_label, iou, -1.0)
    return int(np.argmax(iou))


def grad_cam(model, image, layer='backbone.layer4', level=None, rank=0, target_box=None,
             target_label=None, score_thr=None, target='score'):
    """Grad-CAM of one detection on ``image`` at ``layer``: a :class:`GradCamResult`."""
    if target not in TARGETS:
        raise ValueError(f'target must be one of {list(TARGETS)}, got {target!r}')
    inputs, data_samples, img = prepare_image(model, image)
    module = find_module(model, layer)
    logits = ClassLogitCapture(model) if target == 'logit' else contextlib.nullcontext()
    with no_parameter_grad(model), score_threshold(model, score_thr), \
            FeatureCapture(module, layer, level) as capture, logits:
        result = predict(model, inputs, data_samples, grad=True)[0]
    pred = result.pred_instances
    if not capture.activations:
        raise RuntimeError(f'layer {layer!r} did not run in the forward pass')
    idx = choose_detection(pred.scores.detach().cpu().numpy(),
                           pred.bboxes.detach().cpu().numpy(),
                           pred.labels.cpu().numpy(), rank, target_box, target_label)
    score = pred.scores[idx]
    if score.grad_fn is None:
        raise RuntimeError('the detection score is not differentiable: the predict path '
                           'of this model does not keep the autograd graph')
    y = score if target == 'score' else logits.logit_of(score, int(pred.labels[idx]))
    grads = torch.autograd.grad(y, capture.activations, allow_unused=True)
    if level == 'auto':
        norms = [0.0 if g is None else float(g.norm()) for g in grads]
        level = int(np.argmax(norms))
        act, grad = capture.activations[level], grads[level]
    else:
        act, grad = capture.activation, grads[capture.index]
    if grad is None:
        raise RuntimeError(f'the detection score does not depend on layer {layer!r}'
                           + ('' if level is None else f' level {level}'))
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * act.detach()).sum(dim=1))[0]
    heatmap = normalize01(to_image_size(cam, data_samples[0]))
    return GradCamResult(cam=cam.numpy(), heatmap=heatmap, index=idx,
                         bbox=pred.bboxes[idx].detach().cpu().numpy(),
                         label=int(pred.labels[idx]), score=float(score.detach()),
                         result=result, image=img, level=level,
                         gradient_norm=float(grad.norm()))


def compare_grad_cam(models, images, out_path, layer='backbone.layer4', level=None,
                     rank=0, match='iou', score_thr=None, alpha=0.5, target='score',
                     dpi=100):
    """Per image, the image and each model's Grad-CAM of the same detection (the paper's Fig. 4)."""
    if match not in MATCHES:
        raise ValueError(f'match must be one of {list(MATCHES)}, got {match!r}')
    if not models:
        raise ValueError('models: give at least one (label, model)')
    fig, axes = new_figure(len(images), 1 + len(models))
    all_results = []
    for row, image in enumerate(images):
        results = []
        for col, (name, model) in enumerate(models):
            first = results[0] if results and match == 'iou' else None
            kwargs = dict(target_box=first.bbox, target_label=first.label) if first else {}
            res = grad_cam(model, image, layer=layer, level=level, rank=rank,
                           score_thr=score_thr, target=target, **kwargs)
            results.append(res)
            names = class_names_of(model)
            cls = names[res.label] if names and res.label < len(names) else str(res.label)
            title = f'{name}\n{cls} {res.score:.3f}'
            if first:
                title += f', IoU {float(box_iou(first.bbox, res.bbox[None])[0]):.2f}'
            if res.level is not None and level == 'auto':
                title += f', level {res.level}'
            if not res.cam.max() > 0:
                title += '\n(map all zero: no positive evidence)'
            ax = axes[row, col + 1]
            show_overlay(ax, res.image, res.heatmap, title=title, alpha=alpha)
            draw_detections(ax, [res.bbox], [res.label], [res.score], names, highlight=0)
        show_image(axes[row, 0], results[0].image, f'input ({layer}'
                   + ('' if level is None else f' level {level}') + ')')
        all_results.append(results)
    return save_figure(fig, out_path, dpi=dpi), all_results
