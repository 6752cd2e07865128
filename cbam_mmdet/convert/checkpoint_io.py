"""Read source checkpoints (safely) and write converted backbone checkpoints."""
import io
import os.path as osp

import torch

from ..checkpoint import load_checkpoint_file, write_atomically
from .errors import CheckpointConversionError

# Where training scripts keep the weights inside a checkpoint dict, in the order tried.
STATE_DICT_ENTRIES = ('state_dict', 'model')


def read_state_dict(path):
    """The ``{key: tensor}`` of a checkpoint file (a plain state dict, or one under
    ``'state_dict'`` or ``'model'``), without DataParallel's ``module.`` prefix; read
    safely (:func:`cbam_mmdet.checkpoint.load_checkpoint_file`)."""
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
    """Write ``{'state_dict', 'meta'}`` atomically to ``dst`` (meta: the source format and
    file, the backbone config, the dropped and filled keys), for a Pretrained init_cfg."""
    meta = dict(source_format=converted.source_format,
                source=osp.basename(str(source)) if source else None,
                backbone=converted.backbone,
                dropped_keys=list(converted.dropped_keys),
                filled_keys=list(converted.filled_keys))
    buffer = io.BytesIO()
    torch.save(dict(state_dict=converted.state_dict, meta=meta), buffer)
    write_atomically(buffer.getvalue(), dst)
