"""SyntheticShapesDataset: the embedded detection dataset, generated in memory.

Scenes of :func:`generate_scene` are held with their BGR image under ``img`` (pipelines
start with ``LoadImageFromNDArray``); ``CocoMetric(ann_file=None)`` evaluates it when
``PackDetInputs`` keeps ``'instances'``. :func:`export_coco` writes it as a COCO folder.
"""
import json
import os
import os.path as osp

import cv2
import numpy as np
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS

from .shape_scenes import CLASSES, PALETTE, generate_scene


@DATASETS.register_module()
class SyntheticShapesDataset(BaseDetDataset):
    """``num_images`` scenes, scene ``i`` drawn from ``(seed, i)`` (use other seeds for
    train and test) with :func:`generate_scene`'s keyword arguments ``scene_cfg``;
    ``**kwargs`` go to :class:`mmdet.datasets.BaseDetDataset` (``ann_file`` unused)."""

    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, num_images=512, seed=0, scene_cfg=None, **kwargs):
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f'num_images must be a positive int, got {num_images!r}')
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be a non-negative int, got {seed!r}')
        self.num_images = num_images
        self.seed = seed
        self.scene_cfg = dict(scene_cfg or {})
        try:  # a bad key or value fails here, naming it, not in the middle of loading
            generate_scene(seed, 0, **self.scene_cfg)
        except TypeError as e:
            raise ValueError(f'scene_cfg: {e}; allowed keys: height, width, min_size, '
                             f'max_size, objects, distractors, clutter_lines, '
                             f'clutter_dots, noise, gap, max_tries') from None
        super().__init__(**kwargs)

    def load_data_list(self):
        data_list = []
        for i in range(self.num_images):
            img, boxes, labels = generate_scene(self.seed, i, **self.scene_cfg)
            instances = [dict(bbox=[float(v) for v in box], bbox_label=int(label),
                              ignore_flag=0) for box, label in zip(boxes, labels)]
            img = np.ascontiguousarray(img[..., ::-1])  # BGR, as mmcv reads images
            data_list.append(dict(img=img, img_id=i, img_path=None,
                                  height=img.shape[0], width=img.shape[1],
                                  instances=instances))
        return data_list

    def filter_data(self):
        """Drop images without objects when ``filter_cfg.filter_empty_gt`` (training)."""
        if self.test_mode or not (self.filter_cfg or {}).get('filter_empty_gt', False):
            return self.data_list
        return [d for d in self.data_list if d['instances']]

    def to_coco(self, file_name_fmt='{:06d}.png'):
        """The dataset's annotations as a COCO dict (category ids 1..3, boxes x y w h)."""
        images, annotations = [], []
        for idx in range(len(self)):
            info = self.get_data_info(idx)
            images.append(dict(id=info['img_id'], file_name=file_name_fmt.format(
                info['img_id']), height=info['height'], width=info['width']))
            for inst in info['instances']:
                x1, y1, x2, y2 = inst['bbox']
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=info['img_id'],
                    category_id=inst['bbox_label'] + 1, bbox=[x1, y1, x2 - x1, y2 - y1],
                    area=(x2 - x1) * (y2 - y1), iscrowd=0))
        categories = [dict(id=i + 1, name=name)
                      for i, name in enumerate(self.metainfo['classes'])]
        return dict(images=images, annotations=annotations, categories=categories)


def export_coco(out_dir, num_images=512, seed=0, scene_cfg=None):
    """Write ``out_dir/images/*.png`` + ``out_dir/annotations.json`` (COCO, for
    ``CocoDataset`` with ``metainfo=dict(classes=CLASSES)``); returns the json's path."""
    dataset = SyntheticShapesDataset(num_images=num_images, seed=seed, scene_cfg=scene_cfg,
                                     pipeline=[], test_mode=True)
    coco = dataset.to_coco()
    os.makedirs(osp.join(out_dir, 'images'), exist_ok=True)
    for idx, image in enumerate(coco['images']):
        img = dataset.get_data_info(idx)['img']
        cv2.imwrite(osp.join(out_dir, 'images', image['file_name']), img)
    ann_file = osp.join(out_dir, 'annotations.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    return ann_file
