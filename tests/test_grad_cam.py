"""Grad-CAM of detections (cbam_mmdet.visualization.grad_cam, tools/grad_cam.py)."""
import os.path as osp
import runpy

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from cbam_mmdet.visualization.grad_cam import (FeatureCapture, box_iou, choose_detection,
                                               compare_grad_cam, grad_cam)
from cbam_mmdet.visualization.inference import load_detector, predict, prepare_image

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CBAM_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes_cbam.py')
BASE_CONFIG = osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes.py')
TRAIN_ITERS = 4


def train_briefly(config, iters=TRAIN_ITERS, batch_size=2):
    """The config's model after a few SGD steps on the embedded dataset; the losses."""
    from mmengine.dataset import pseudo_collate
    from mmengine.optim import OptimWrapper
    from mmdet.registry import DATASETS

    torch.manual_seed(0)
    model = load_detector(config)
    dataset = DATASETS.build(dict(model.cfg.train_dataloader.dataset,
                                  num_images=iters * batch_size))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                         clip_grad=dict(max_norm=10))
    model.train()
    losses = []
    for i in range(iters):
        batch = pseudo_collate([dataset[(i * batch_size + j) % len(dataset)]
                               for j in range(batch_size)])
        losses.append(float(model.train_step(batch, optim)['loss'].detach()))
    model.eval()
    return model, losses


@pytest.fixture(scope='module')
def trained():
    return train_briefly(CBAM_CONFIG)


@pytest.fixture(scope='module')
def scene(tmp_path_factory):
    from cbam_mmdet.datasets import generate_scene
    img, boxes, _ = generate_scene(3, 0, height=160, width=160, min_size=16, max_size=56)
    path = str(tmp_path_factory.mktemp('images') / 'scene.png')
    mpimg.imsave(path, img)
    return path


def test_grad_cam_of_a_briefly_trained_model_is_non_zero(trained, scene):
    model, losses = trained
    assert len(losses) == TRAIN_ITERS and all(np.isfinite(losses))
    flags = [p.requires_grad for p in model.parameters()]
    # the FPN level the RoI head pooled the top detection from
    res = grad_cam(model, scene, layer='neck', level='auto', score_thr=0.0)
    assert res.level in range(4)
    h, w = res.result.metainfo['batch_input_shape']
    assert res.cam.shape == (h // 4 // 2 ** res.level, w // 4 // 2 ** res.level)
    assert res.heatmap.shape == (160, 160)  # the original image
    assert res.gradient_norm > 0
    assert res.cam.max() > 0 and np.isfinite(res.cam).all()
    assert res.heatmap.min() >= 0 and res.heatmap.max() == pytest.approx(1.0)
    assert (res.heatmap > 0.01).mean() > 0.01  # not a single hot pixel
    assert [p.requires_grad for p in model.parameters()] == flags  # restored
    # the hook changes nothing: the same top detection as the plain no-grad predict
    inputs, samples, _ = prepare_image(model, scene)
    from cbam_mmdet.visualization.grad_cam import score_threshold
    with score_threshold(model, 0.0):
        plain = predict(model, inputs, samples)[0].pred_instances
    top = int(plain.scores.argmax())
    assert res.score == pytest.approx(float(plain.scores[top]), rel=1e-5)
    np.testing.assert_allclose(res.bbox, plain.bboxes[top].numpy(), rtol=1e-5, atol=1e-3)
    # the other levels get no gradient: the box is pooled from one level only
    other = (res.level + 1) % 4
    assert grad_cam(model, scene, layer='neck', level=other, score_thr=0.0).gradient_norm == 0
    # Grad-CAM's pre-softmax target: same detection, a non-zero map too
    res_logit = grad_cam(model, scene, layer='neck', level='auto', score_thr=0.0,
                         target='logit')
    assert res_logit.index == res.index and res_logit.level == res.level
    assert res_logit.cam.max() > 0 and res_logit.gradient_norm > 0
    assert not np.allclose(res_logit.heatmap, res.heatmap)


def test_detection_score_is_differentiable_through_the_predict_path(trained, scene):
    """Moving the layer's output along the computed gradient changes the detection's
    score by the first-order amount eps * |grad|^2: the gradient is the real one."""
    model, _ = trained
    module = dict(model.named_modules())['backbone.layer3']
    inputs, samples, _ = prepare_image(model, scene)

    def score_and_grad(shift=None):
        def add_shift(mod, args, out):
            return out if shift is None else out + shift
        handle = module.register_forward_hook(add_shift)
        try:
            with FeatureCapture(module, 'backbone.layer3') as cap:
                pred = predict(model, inputs, samples, grad=True)[0].pred_instances
        finally:
            handle.remove()
        i = choose_detection(pred.scores.detach().numpy(), pred.bboxes.detach().numpy(),
                             pred.labels.numpy(), target_box=box, target_label=label)
        assert pred.scores[i].grad_fn is not None
        (g,) = torch.autograd.grad(pred.scores[i], cap.activation)
        return float(pred.scores[i]), g

    res = grad_cam(model, scene, layer='backbone.layer3')
    box, label = res.bbox, res.label
    s0, g = score_and_grad()
    assert g.abs().sum() > 0
    eps = 1e-3 / float(g.norm())
    s1, _ = score_and_grad(eps * g)
    expected = eps * float((g * g).sum())
    assert s1 - s0 == pytest.approx(expected, rel=0.25)


def test_grad_cam_layers_and_levels(trained, scene):
    model, _ = trained
    res = grad_cam(model, scene, layer='backbone.layer4', score_thr=0.0)
    h, w = res.result.metainfo['batch_input_shape']
    assert res.cam.shape == (h // 32, w // 32)
    assert res.gradient_norm > 0 and res.level is None
    res = grad_cam(model, scene, layer='neck', level=0, score_thr=0.0)
    assert res.cam.shape == (h // 4, w // 4) and res.level == 0
    with pytest.raises(ValueError, match='level: layer .neck. outputs 5 levels'):
        grad_cam(model, scene, layer='neck')
    with pytest.raises(ValueError, match='level: layer .backbone.layer4. outputs one'):
        grad_cam(model, scene, layer='backbone.layer4', level=1)
    with pytest.raises(ValueError, match="layer: 'backbone.layer9' is not a module"):
        grad_cam(model, scene, layer='backbone.layer9')
    with pytest.raises(ValueError, match='rank 1000 out of range'):
        grad_cam(model, scene, rank=1000, score_thr=0.0)
    with pytest.raises(ValueError, match='no detection'):
        grad_cam(model, scene, score_thr=1.01)
    with pytest.raises(ValueError, match='target must be one of'):
        grad_cam(model, scene, target='prob')


def test_choose_detection_by_rank_and_by_overlap():
    scores = np.array([0.2, 0.9, 0.5])
    boxes = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 9, 9]], dtype=float)
    labels = np.array([0, 1, 2])
    assert choose_detection(scores, boxes, labels) == 1
    assert choose_detection(scores, boxes, labels, rank=1) == 2
    assert choose_detection(scores, boxes, labels, target_box=[0, 0, 10, 10]) == 0
    # same label first, even with less overlap
    assert choose_detection(scores, boxes, labels, target_box=[0, 0, 10, 10],
                            target_label=2) == 2
    assert box_iou([0, 0, 10, 10], boxes[2:])[0] == pytest.approx(0.81)


def test_side_by_side_figure_and_tool(trained, scene, tmp_path):
    model, _ = trained
    ckpt = str(tmp_path / 'cbam.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=('circle', 'square', 'triangle')))),
               ckpt)
    base = load_detector(BASE_CONFIG)
    base_ckpt = str(tmp_path / 'base.pth')
    torch.save(dict(state_dict=base.state_dict()), base_ckpt)
    path, results = compare_grad_cam([('base', base), ('cbam', model)], [scene],
                                      str(tmp_path / 'pair.png'), layer='neck',
                                      level='auto', score_thr=0.0)
    first, second = results[0]
    # match='iou': the CBAM column explains its detection overlapping the first box most
    pred = second.result.pred_instances
    ious = box_iou(first.bbox, pred.bboxes.detach().numpy())
    same = pred.labels.numpy() == first.label
    if same.any():
        assert second.label == first.label
        ious = np.where(same, ious, -1)
    assert box_iou(first.bbox, second.bbox[None])[0] == pytest.approx(ious.max())
    assert osp.getsize(path) > 1000
    out = str(tmp_path / 'tool.png')
    tool = runpy.run_path(osp.join(ROOT, 'tools/grad_cam.py'))['main']
    p, res = tool([scene, '--model', BASE_CONFIG, base_ckpt, 'R-50', '--model', CBAM_CONFIG,
                   ckpt, 'R-50 + CBAM', '--out', out, '--layer', 'neck',
                   '--level', 'auto', '--score-thr', '0'])
    assert p == out and osp.getsize(out) > 1000
    assert len(res) == 1 and len(res[0]) == 2 and res[0][1].gradient_norm > 0
    with pytest.raises(ValueError, match='match must be one of'):
        compare_grad_cam([('cbam', model)], [scene], out, match='label')
