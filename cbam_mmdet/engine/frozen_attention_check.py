"""Refuse attention plugins frozen at their random initialisation.

``frozen_stages`` freezes the plugins of those stages too: one is allowed only when its
weights come from a checkpoint (Pretrained ``init_cfg``, ``load_from``, ``resume``).
"""
import re

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmdet.registry import HOOKS

from ..models import CBAM, SE


def frozen_attention_modules(model):
    """Names of the CBAM/SE modules none of whose parameters require a gradient."""
    return [name for name, m in model.named_modules() if isinstance(m, (CBAM, SE))
            and not any(p.requires_grad for p in m.parameters())]


def _normalise(key):
    return re.sub(r'^(module\.)?(backbone\.)?', '', key)


def checkpoint_keys(path):
    """Keys of a local checkpoint ('module.' and 'backbone.' stripped); none if unreadable."""
    from ..checkpoint import load_checkpoint_file
    try:
        ckpt = load_checkpoint_file(path)
    except Exception:
        return set()
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
    return {_normalise(k) for k in state}


def check_no_frozen_random_attention(model, weight_files=()):
    """Raise ValueError when a frozen attention module of ``model`` gets no weights from
    ``weight_files`` (the backbone's Pretrained file, ``load_from``, the resumed one)."""
    if is_model_wrapper(model):
        model = model.module
    frozen = frozen_attention_modules(model)
    if not frozen:
        return
    loaded = set().union(*(checkpoint_keys(path) for path in weight_files if path))
    missing = [name for name in frozen
               if not any(k.startswith(_normalise(name) + '.') for k in loaded)]
    if not missing:
        return
    shown = ', '.join(missing[:4]) + (f' and {len(missing) - 4} more' if len(missing) > 4 else '')
    raise ValueError(
        f'{len(missing)} attention plugin(s) sit in a frozen backbone stage '
        f'(model.backbone.frozen_stages) with no pretrained weights, so they would stay '
        f'at their random initialisation for the whole run: {shown}. Set '
        f'model.backbone.frozen_stages=0, or restrict the plugins to unfrozen stages '
        f'(plugins=[dict(cfg=..., stages=(False, True, True, True), position=...)]), '
        f'or start the backbone from a checkpoint that holds their weights '
        f'(init_cfg=dict(type="Pretrained", checkpoint=...), see '
        f'tools/convert_official_cbam.py).')


def _backbone_checkpoint(model):
    backbone = getattr(model, 'backbone', None)
    cfgs = getattr(backbone, 'init_cfg', None) or []
    for cfg in cfgs if isinstance(cfgs, list) else [cfgs]:
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            return cfg.get('checkpoint')
    return None


@HOOKS.register_module()
class FrozenAttentionCheckHook(Hook):
    """Before training, :func:`check_no_frozen_random_attention`."""

    priority = 'VERY_HIGH'

    def before_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        files = [_backbone_checkpoint(model), runner._load_from]
        if runner._resume and not runner._load_from:
            from mmengine.runner import find_latest_checkpoint
            files.append(find_latest_checkpoint(runner.work_dir))
        check_no_frozen_random_attention(model, files)
