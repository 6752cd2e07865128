"""What tools/train.py does, as functions tests can call: mmdet's train tool, plus the
project's checks (dataset paths, frozen attention plugins)."""
import os.path as osp

from mmengine.config import Config, DictAction  # noqa: F401  (DictAction for the tools)
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from .dataset_check import check_dataset_paths

FROZEN_CHECK = dict(type='FrozenAttentionCheckHook')


def build_train_config(config, work_dir=None, resume=None, amp=False, auto_scale_lr=False,
                 cfg_options=None, launcher='none'):
    """Build the training Config the way mmdet's tools/train.py does.

    ``resume``: None (no resume), ``'auto'`` (the latest checkpoint of the work dir) or a
    checkpoint path.
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
        cfg.work_dir = osp.join('./work_dirs', name)
    if amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            pass
        else:
            if optim_wrapper != 'OptimWrapper':
                raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper or '
                                 f'AmpOptimWrapper, got {optim_wrapper}')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) '
                             'in the config')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(h.get('type') == FROZEN_CHECK['type'] for h in hooks):
        hooks.append(dict(FROZEN_CHECK))
    cfg.custom_hooks = hooks
    return cfg


def build_runner(cfg):
    check_dataset_paths(cfg, splits=('train', 'val') if cfg.get('val_cfg') else ('train',))
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)


def run_train(cfg):
    """Train with mmengine's Runner; returns the runner."""
    runner = build_runner(cfg)
    runner.train()
    return runner
