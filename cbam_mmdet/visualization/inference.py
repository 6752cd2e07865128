"""One image through a detector: loading, the test pipeline's input, the predict path with
autograd on or off, and feature maps brought back onto the original image."""
import copy
import os.path as osp

import mmcv
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose

LOADERS = ('LoadImageFromFile', 'LoadImageFromNDArray', 'mmdet.LoadImageFromFile',
           'mmdet.LoadImageFromNDArray')


def load_detector(config, checkpoint=None, device='cpu', cfg_options=None):
    """A detector in eval mode from a config and a checkpoint (None: the initialisation)."""
    from mmdet.apis import init_detector
    from mmdet.registry import DATASETS

    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if checkpoint is not None and not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint: no such file {checkpoint!r}')
    model = init_detector(cfg, checkpoint, palette='random', device=device)
    meta = getattr(model, 'dataset_meta', None) or {}
    if checkpoint is None or 'classes' not in meta:
        dataset_type = cfg.get('test_dataloader', {}).get('dataset', {}).get('type')
        dataset_cls = DATASETS.get(dataset_type) if dataset_type else None
        if dataset_cls is not None and getattr(dataset_cls, 'METAINFO', None):
            model.dataset_meta = dict(dataset_cls.METAINFO)
    model.eval()
    return model


def test_pipeline(model):
    """The config's test pipeline for one in-memory BGR image, without annotations."""
    from mmdet.utils import get_test_pipeline_cfg

    steps = copy.deepcopy(get_test_pipeline_cfg(model.cfg))
    steps = [s for s in steps if 'LoadAnnotations' not in str(s.get('type', ''))]
    if not steps or steps[0].get('type') not in LOADERS:
        raise ValueError(f'the test pipeline must start with one of {list(LOADERS)}, '
                         f'got {steps[0].get("type") if steps else None!r}')
    steps[0] = dict(type='mmdet.LoadImageFromNDArray')
    for s in steps:
        if str(s.get('type', '')).endswith('PackDetInputs'):
            s.pop('meta_keys', None)  # the defaults: no ground-truth keys needed
    return Compose(steps)


def read_image(image):
    """A BGR uint8 array from a path or an array (arrays are taken as BGR)."""
    if isinstance(image, np.ndarray):
        return image
    if not osp.isfile(str(image)):
        raise FileNotFoundError(f'image: no such file {image!r}')
    return mmcv.imread(str(image), channel_order='bgr')


def prepare_image(model, image):
    """``(inputs, data_samples)`` for ``model.predict``, and the BGR image itself."""
    img = read_image(image)
    data = test_pipeline(model)(dict(img=img, img_id=0))
    batch = model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), False)
    return batch['inputs'], batch['data_samples'], img


def predict(model, inputs, data_samples, grad=False):
    """The model's predict path (boxes in original image pixels); autograd on if grad."""
    with torch.set_grad_enabled(grad):
        return model.predict(inputs, data_samples, rescale=True)


def to_image_size(feature_map, data_sample):
    """A ``(h, w)`` map over the model's input as an ``(H, W)`` float32 map over the image."""
    m = torch.as_tensor(feature_map, dtype=torch.float32).detach().cpu()
    if m.dim() != 2:
        raise ValueError(f'feature_map must be 2-D (h, w), got shape {tuple(m.shape)}')
    pad_h, pad_w = data_sample.metainfo.get('batch_input_shape',
                                            data_sample.metainfo['img_shape'])
    img_h, img_w = data_sample.metainfo['img_shape'][:2]
    ori_h, ori_w = data_sample.metainfo['ori_shape'][:2]
    m = F.interpolate(m[None, None], size=(pad_h, pad_w), mode='bilinear',
                      align_corners=False)[..., :img_h, :img_w]
    m = F.interpolate(m, size=(ori_h, ori_w), mode='bilinear', align_corners=False)
    return m[0, 0].numpy()
