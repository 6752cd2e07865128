"""What tools/test.py does, as functions: mmdet's test tool plus the project's checks
(plugin types, datasets, num_classes, a checkpoint that fits the model exactly)."""
import os.path as osp

from .errors import MissingCheckpointError
from .training import base_config, build_runner, run_runner_step

CHECKPOINT_MATCH = dict(type='CheckpointMatchHook', allow_partial=False)


def build_test_config(config, checkpoint, work_dir=None, out=None, show=False,
                      show_dir=None, wait_time=2, cfg_options=None, launcher='none'):
    """Build the test Config the way mmdet's tools/test.py does."""
    cfg = base_config(config, work_dir, cfg_options, launcher)
    if not osp.isfile(checkpoint):
        raise MissingCheckpointError(f'checkpoint {checkpoint} does not exist')
    cfg.load_from = checkpoint
    hooks = [h for h in (cfg.get('custom_hooks', None) or [])
             if h.get('type') != CHECKPOINT_MATCH['type']]
    cfg.custom_hooks = hooks + [dict(CHECKPOINT_MATCH)]
    if show or show_dir:
        hook = cfg.default_hooks.get('visualization')
        if hook is None:
            raise ValueError('--show/--show-dir need default_hooks.visualization '
                             '(DetVisualizationHook) in the config')
        hook['draw'] = True
        if show:
            hook['show'] = True
            hook['wait_time'] = wait_time
        if show_dir:
            hook['test_out_dir'] = show_dir
    if out is not None:
        if not out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl or .pickle file, got {out}')
        evaluator = cfg.test_evaluator
        evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
        evaluators.append(dict(type='DumpDetResults', out_file_path=out))
        cfg.test_evaluator = evaluators
    return cfg


def run_test(cfg):
    """Evaluate with mmengine's Runner; returns the metrics dict."""
    return run_runner_step(cfg, build_runner(cfg, splits=('test',)).test)
