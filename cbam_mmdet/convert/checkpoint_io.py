"""Read source checkpoints (safely) and write converted backbone checkpoints."""
import io
import os.path as osp

import torch

from ..checkpoint import load_checkpoint_file, write_atomically
from .errors import CheckpointConversionError

# Where training scripts keep the weights inside a checkpoint dict, in the order tried.
STATE_DICT_ENTRIES = ('state_dict', 'model')


def read_state_dict(path):
    """The ``{key: tensor}`` of a checkpoint file, with DataParallel's ``module.`` prefix
    removed.

    Accepts a plain state dict (``torch.save(model.state_dict())``, timm's hub
    ``pytorch_model.bin``) or a dict holding it under ``'state_dict'`` (the official CBAM
    code, timm's train script) or ``'model'``. The file is read with
    :func:`cbam_mmdet.checkpoint.load_checkpoint_file`: a pickle that could run code is
    refused.
    """
    ckpt = load_checkpoint_file(path)
    if not isinstance(ckpt, dict):
        raise CheckpointConversionError(
            f"{path}: expected a dict of tensors or a dict with a 'state_dict' entry, got "
            f'{type(ckpt).__name__}')
    state = ckpt
    for entry in STATE_DICT_ENTRIES:
        if isinstance(ckpt.get(entry), dict):
            state = ckpt[entry]
            break
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not state:
        raise CheckpointConversionError(
            f'{path}: no state dict found: expected a dict of tensors or one under '
            f"{list(STATE_DICT_ENTRIES)}; top-level entries are {sorted(map(str, ckpt))[:20]}")
    return {(k[len('module.'):] if k.startswith('module.') else k): v
            for k, v in state.items()}


def save_converted(converted, dst, source=None):
    """Write ``{'state_dict': ..., 'meta': ...}`` atomically to ``dst``.

    ``meta`` holds the source format and file name, the backbone config the weights
    are for, and the dropped and filled keys. mmdet's ``init_cfg=dict(type='Pretrained',
    checkpoint=dst)`` on that backbone loads it.
    """
    meta = dict(source_format=converted.source_format,
                source=osp.basename(str(source)) if source else None,
                backbone=converted.backbone,
                dropped_keys=list(converted.dropped_keys),
                filled_keys=list(converted.filled_keys))
    buffer = io.BytesIO()
    torch.save(dict(state_dict=converted.state_dict, meta=meta), buffer)
    write_atomically(buffer.getvalue(), dst)
