"""Distributed training and testing on CPU (gloo), which mmengine 0.10.7 does not do.

Without CUDA, :func:`prepare_cpu_distributed` (run by the tools) initialises the gloo
process group from the launcher's environment itself (mmengine would call
``torch.cuda.set_device``) and sets ``model_wrapper_cfg`` with ``device_ids=None``::

    bash tools/dist_train.sh CONFIG 2 --cfg-options env_cfg.dist_cfg.backend=gloo
"""
import datetime
import os

import torch
import torch.distributed as torch_dist

from .errors import InputError


def prepare_cpu_distributed(cfg) -> bool:
    """Make a ``launcher='pytorch'`` config run on CPU processes. Returns True if it
    did something (no CUDA and a pytorch launcher), False otherwise."""
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'nccl')
    if backend != 'gloo':
        raise InputError(f"env_cfg.dist_cfg.backend is {backend!r}, which needs CUDA GPUs; "
                         f"this machine has none: pass --cfg-options "
                         f"env_cfg.dist_cfg.backend=gloo to train on CPU processes")
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise InputError(f'--launcher pytorch needs the environment variable {key} '
                             f'(start the tool with tools/dist_train.sh or '
                             f'python -m torch.distributed.run)')
    if not torch_dist.is_initialized():
        timeout = dist_cfg.pop('timeout', None)
        if timeout is not None:
            dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend='gloo', **dist_cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True


def finish_distributed():
    """Wait for every process, then destroy the process group (a gloo group left running
    aborts the process at exit; ``exit_on_known_errors`` frees the runner's DDP model)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()
