"""What tools/train.py does, as functions: mmdet's train tool plus the project's checks
(plugin types, datasets, num_classes, checkpoints that fit, frozen plugins) and exact
resume (every random generator saved in checkpoints)."""
import itertools
import os
import os.path as osp

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..checkpoint import latest_checkpoint
from .distributed import finish_distributed, prepare_distributed
from .input_validation import image_read_error, validate_config

FROZEN_CHECK = dict(type='FrozenAttentionCheckHook')
RNG_STATE = dict(type='RNGStateHook')
EXACT_RESUME_LOOPS = {'IterBasedTrainLoop': 'ExactResumeIterBasedTrainLoop',
                      'EpochBasedTrainLoop': 'ExactResumeEpochBasedTrainLoop'}


def _add_hook(cfg, hook):
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(h.get('type') == hook['type'] for h in hooks):
        hooks.append(dict(hook))
    cfg.custom_hooks = hooks


def use_exact_resume(cfg):
    """Swap mmengine's train loop for its exact-resume subclass and add ``RNGStateHook``
    (:mod:`cbam_mmdet.engine.exact_resume`); another loop type is kept as it is."""
    train_cfg = cfg.get('train_cfg')
    if not train_cfg:
        return
    loop = train_cfg.get('type')
    if loop is None and 'by_epoch' in train_cfg:
        loop = 'EpochBasedTrainLoop' if train_cfg.pop('by_epoch') else 'IterBasedTrainLoop'
    if loop in EXACT_RESUME_LOOPS:
        train_cfg['type'] = EXACT_RESUME_LOOPS[loop]
    elif loop is not None:
        train_cfg['type'] = loop
    _add_hook(cfg, RNG_STATE)


_visualizer_ids = itertools.count()


def base_config(config, work_dir, cfg_options, launcher):
    """The Config (path or Config) with the options, launcher and work dir of mmdet's
    tools, and a Visualizer of its own: mmengine reuses one by name, and a second runner
    in one process would write into the first one's work dir."""
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        name = osp.splitext(osp.basename(cfg.filename or 'config'))[0]
        cfg.work_dir = osp.join('./work_dirs', name)
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer['name'] = f'visualizer_{os.getpid()}_{next(_visualizer_ids)}'
    return cfg


def build_train_config(config, work_dir=None, resume=None, amp=False, auto_scale_lr=False,
                       cfg_options=None, launcher='none', exact_resume=True,
                       load_from_partial=False):
    """The training Config as mmdet's tools/train.py builds it. ``resume``: None,
    ``'auto'`` (the work dir's latest checkpoint) or a path; ``exact_resume``:
    :func:`use_exact_resume`; ``load_from_partial``: let ``load_from`` load only what fits
    (else a checkpoint that does not fit is an error)."""
    cfg = base_config(config, work_dir, cfg_options, launcher)
    if amp and cfg.optim_wrapper.type != 'AmpOptimWrapper':
        if cfg.optim_wrapper.type != 'OptimWrapper':
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper or '
                             f'AmpOptimWrapper, got {cfg.optim_wrapper.type}')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError('--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) '
                             'in the config')
        cfg.auto_scale_lr.enable = True
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = latest_checkpoint(cfg.work_dir)
    elif resume is not None:
        cfg.resume = True
        cfg.load_from = resume
    _add_hook(cfg, FROZEN_CHECK)
    _add_hook(cfg, dict(type='CheckpointMatchHook', allow_partial=bool(load_from_partial)))
    if exact_resume:
        use_exact_resume(cfg)
    return cfg


def validate_train_config(cfg):
    """The pre-flight checks of the training (and validation) splits."""
    validate_config(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train',))


def build_runner(cfg, splits=None):
    """The Runner of ``cfg`` after the pre-flight checks of ``splits`` (default: training)."""
    if splits:
        validate_config(cfg, splits)
    else:
        validate_train_config(cfg)
    prepare_distributed(cfg)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)


def run_runner_step(cfg, step):
    """Run ``step()`` (a runner's train or test): an image that cannot be read becomes the
    project's error naming the file, and a distributed run tears its process group down."""
    try:
        result = step()
    except AssertionError as e:
        if image_read_error(e) is None:
            raise
        raise image_read_error(e) from None
    if cfg.get('launcher', 'none') != 'none':
        finish_distributed()
    return result


def run_train(cfg):
    """Train with mmengine's Runner; returns the runner."""
    runner = build_runner(cfg)
    run_runner_step(cfg, runner.train)
    return runner
