"""Refuse a checkpoint that does not fit the model (mmengine loads what matches and warns:
a plain detector's checkpoint in a CBAM config would run with random attention)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from ..checkpoint import CheckpointMismatchError

SHOWN = 8


def state_dict_differences(model_state: dict, checkpoint_state: dict):
    """``(missing, unexpected, [(key, checkpoint shape, model shape)])`` of a checkpoint."""
    ckpt = {k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in checkpoint_state.items()}
    missing = sorted(k for k in model_state if k not in ckpt)
    unexpected = sorted(k for k in ckpt if k not in model_state)
    mismatched = sorted(
        (k, tuple(ckpt[k].shape), tuple(v.shape)) for k, v in model_state.items()
        if k in ckpt and hasattr(ckpt[k], 'shape') and tuple(ckpt[k].shape) != tuple(v.shape))
    return missing, unexpected, mismatched


def _listing(title, items):
    if not items:
        return ''
    more = f' (and {len(items) - SHOWN} more)' if len(items) > SHOWN else ''
    return f'\n  {len(items)} {title}: {", ".join(map(str, items[:SHOWN]))}{more}'


def check_checkpoint_matches(model, checkpoint, source='the checkpoint'):
    """Raise :class:`CheckpointMismatchError` unless ``checkpoint`` (a dict with
    ``state_dict``, or a state dict) has exactly the model's keys and shapes."""
    if is_model_wrapper(model):
        model = model.module
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointMismatchError(f'{source} holds no state dict')
    missing, unexpected, mismatched = state_dict_differences(model.state_dict(), state)
    if missing or unexpected or mismatched:
        shapes = [f'{k} (checkpoint {list(c)}, model {list(m)})' for k, c, m in mismatched]
        raise CheckpointMismatchError(
            f'{source} does not fit the model {type(model).__name__} of this config '
            f'(another architecture or number of classes?):'
            + _listing('keys of the model missing from the checkpoint', missing)
            + _listing('unexpected keys in the checkpoint', unexpected)
            + _listing('keys with another shape', shapes)
            + '\nUse the config the checkpoint was trained with. To fine-tune from it on '
              'purpose (load what matches), pass --load-from-partial to tools/train.py.')


@HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Check ``load_from``/resume checkpoints against the model before they load;
    ``allow_partial``: let ``load_from`` (not resume) load what matches, with a warning."""

    priority = 'VERY_HIGH'

    def __init__(self, allow_partial: bool = False):
        self.allow_partial = allow_partial

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resuming = bool(getattr(runner, '_resume', False))
        if self.allow_partial and not resuming:
            return
        source = getattr(runner, '_load_from', None) or 'the checkpoint'
        check_checkpoint_matches(runner.model, checkpoint, source=f'checkpoint {source}')
