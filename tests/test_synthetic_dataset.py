"""The embedded dataset: deterministic scenes, valid boxes, mmdet pipeline, CocoMetric,
COCO export."""
import numpy as np
import pytest

from cbam_mmdet.datasets import SHAPE_CLASSES, SyntheticShapesDataset, export_coco
from cbam_mmdet.datasets.shape_scenes import generate_scene

TEST_PIPELINE = [
    dict(type='LoadImageFromNDArray'),
    dict(type='Resize', scale=(96, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor', 'instances')),
]
SMALL = dict(height=96, width=96, min_size=8, max_size=40)


def test_scene_is_deterministic_from_seed_and_index():
    a = generate_scene(3, 7, **SMALL)
    b = generate_scene(3, 7, **SMALL)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    c = generate_scene(4, 7, **SMALL)
    d = generate_scene(3, 8, **SMALL)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_scene_boxes_are_inside_the_image_and_sized_as_asked():
    sides, n_boxes = [], 0
    for i in range(60):
        img, boxes, labels = generate_scene(0, i, **SMALL)
        assert img.shape == (96, 96, 3) and img.dtype == np.uint8
        assert boxes.shape == (len(labels), 4) and labels.dtype == np.int64
        assert set(labels.tolist()) <= set(range(len(SHAPE_CLASSES)))
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 96).all() \
            and (boxes[:, 3] <= 96).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        sides += np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).tolist()
        n_boxes += len(boxes)
    assert n_boxes >= 60  # about 2.5 objects per image
    # several scales: rotated squares/triangles have boxes up to sqrt(2) larger
    assert min(sides) < 12 and max(sides) > 30 and max(sides) <= 40 * 1.5


def test_objects_are_drawn_inside_their_boxes_only():
    """Against the same scene's background alone (the background is drawn first): pixels
    change at each box's centre, along each of its four sides, and nowhere outside the
    boxes but for the faint anti-aliased fringe (covered less than half, 1 px)."""
    plain = dict(SMALL, clutter_lines=0, clutter_dots=0, distractors=(0, 0))
    for i in range(10):
        img, boxes, _ = generate_scene(1, i, **plain)
        background, no_boxes, _ = generate_scene(1, i, **dict(plain, objects=(0, 0)))
        assert len(no_boxes) == 0
        changed = (img != background).any(axis=2)
        outside = np.ones_like(changed)
        for x1, y1, x2, y2 in boxes:
            x1, y1, x2, y2 = int(x1), int(y1), int(x2), int(y2)
            assert changed[(y1 + y2) // 2, (x1 + x2) // 2]
            inside = changed[y1:y2, x1:x2]
            assert inside[0].any() and inside[-1].any()  # tight: top and bottom rows
            assert inside[:, 0].any() and inside[:, -1].any()  # left and right columns
            outside[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1] = False
        assert not changed[outside].any()


def test_scene_arguments_are_checked():
    with pytest.raises(ValueError, match='min_size'):
        generate_scene(0, 0, min_size=30, max_size=20)
    with pytest.raises(ValueError, match='max_size'):
        generate_scene(0, 0, height=50, width=50, max_size=64)
    with pytest.raises(ValueError, match='objects'):
        generate_scene(0, 0, objects=(3, 1))
    with pytest.raises(ValueError, match='scene_cfg.*allowed keys'):
        SyntheticShapesDataset(num_images=2, scene_cfg=dict(colour='red'), pipeline=[])
    with pytest.raises(ValueError, match='num_images'):
        SyntheticShapesDataset(num_images=0, pipeline=[])


def test_dataset_feeds_mmdet_pipeline_with_ground_truth():
    ds = SyntheticShapesDataset(num_images=4, seed=5, scene_cfg=SMALL,
                                pipeline=TEST_PIPELINE, test_mode=True)
    assert len(ds) == 4 and ds.metainfo['classes'] == SHAPE_CLASSES
    item = ds[0]
    sample = item['data_samples']
    assert tuple(item['inputs'].shape) == (3, 96, 96)
    _, boxes, labels = generate_scene(5, 0, **SMALL)
    np.testing.assert_allclose(sample.gt_instances.bboxes.numpy(), boxes, atol=1e-4)
    np.testing.assert_array_equal(sample.gt_instances.labels.numpy(), labels)
    assert len(sample.metainfo['instances']) == len(labels)
    # stored BGR, as mmcv reads image files: the generator's RGB reversed
    img, _, _ = generate_scene(5, 0, **SMALL)
    np.testing.assert_array_equal(item['inputs'].permute(1, 2, 0).numpy(), img[..., ::-1])


def _evaluate(ds, predict):
    from mmdet.evaluation import CocoMetric
    metric = CocoMetric(ann_file=None, metric='bbox')
    metric.dataset_meta = ds.metainfo
    import torch
    for idx in range(len(ds)):
        sample = ds[idx]['data_samples']
        boxes, labels, scores = predict(sample)
        out = sample.to_dict()
        out['pred_instances'] = dict(bboxes=torch.as_tensor(boxes, dtype=torch.float32),
                                     labels=torch.as_tensor(labels, dtype=torch.int64),
                                     scores=torch.as_tensor(scores, dtype=torch.float32))
        metric.process({}, [out])
    return metric.evaluate(len(ds))


def test_coco_metric_evaluates_it_without_annotation_file():
    ds = SyntheticShapesDataset(num_images=6, seed=2, scene_cfg=SMALL,
                                pipeline=TEST_PIPELINE, test_mode=True)

    def perfect(sample):
        gt = sample.gt_instances
        return gt.bboxes.numpy(), gt.labels.numpy(), np.ones(len(gt))

    def wrong_class(sample):
        gt = sample.gt_instances
        return gt.bboxes.numpy(), (gt.labels.numpy() + 1) % 3, np.ones(len(gt))

    assert _evaluate(ds, perfect)['coco/bbox_mAP'] == pytest.approx(1.0)
    assert _evaluate(ds, wrong_class)['coco/bbox_mAP'] == pytest.approx(0.0)


def test_export_coco_is_read_back_by_mmdet_coco_dataset(tmp_path):
    from mmdet.datasets import CocoDataset
    ann_file = export_coco(str(tmp_path), num_images=3, seed=9, scene_cfg=SMALL)
    coco = CocoDataset(ann_file=ann_file, data_prefix=dict(img=str(tmp_path / 'images')),
                       metainfo=dict(classes=SHAPE_CLASSES), test_mode=True,
                       pipeline=[dict(type='LoadImageFromFile'),
                                 dict(type='LoadAnnotations', with_bbox=True)])
    assert len(coco) == 3
    for i in range(3):
        img, boxes, labels = generate_scene(9, i, **SMALL)
        item = coco[i]
        np.testing.assert_array_equal(item['img'], img[..., ::-1])  # PNG is lossless
        np.testing.assert_allclose(item['gt_bboxes'].numpy(), boxes, atol=1e-3)
        np.testing.assert_array_equal(item['gt_bboxes_labels'], labels)
