"""Distributed runs that mmengine 0.10.7 cannot start by itself: CPU processes (gloo), and
more processes than GPUs on a node (several ranks sharing a GPU, gloo).

mmengine's launcher calls ``torch.cuda.set_device(LOCAL_RANK)``, which fails without CUDA
or where ``LOCAL_RANK`` is not a GPU of the node, and NCCL refuses two ranks on one GPU.
In those two cases :func:`prepare_distributed` (run by the tools) initialises the gloo
process group from the launcher's environment itself and sets ``model_wrapper_cfg``:
``device_ids=None`` on CPU, ``[LOCAL_RANK % GPUs]`` on a shared GPU::

    bash tools/dist_train.sh CONFIG 2 --cfg-options env_cfg.dist_cfg.backend=gloo

With as many GPUs as processes it does nothing: mmengine's NCCL path runs.
"""
import datetime
import os

import torch
import torch.distributed as torch_dist

from .errors import InputError


def prepare_distributed(cfg) -> bool:
    """Make a ``launcher='pytorch'`` config run on CPU processes or on fewer GPUs than
    processes. Returns True if it did something, False otherwise."""
    if cfg.get('launcher', 'none') != 'pytorch':
        return False
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    local_size = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('WORLD_SIZE', 1)))
    if gpus >= local_size:
        return False
    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'nccl')
    where = ('this machine has no CUDA GPU' if gpus == 0 else
             f'{local_size} processes share {gpus} GPU(s), and NCCL needs one GPU each')
    if backend != 'gloo':
        raise InputError(f"env_cfg.dist_cfg.backend is {backend!r}, but {where}: pass "
                         f"--cfg-options env_cfg.dist_cfg.backend=gloo")
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            raise InputError(f'--launcher pytorch needs the environment variable {key} '
                             f'(start the tool with tools/dist_train.sh or '
                             f'python -m torch.distributed.run)')
    device_ids = None
    if gpus:
        device = int(os.environ.get('LOCAL_RANK', 0)) % gpus
        torch.cuda.set_device(device)
        device_ids = [device]
        # mmengine's logger reads CUDA_VISIBLE_DEVICES[LOCAL_RANK]: one entry per process
        visible = os.environ.get('CUDA_VISIBLE_DEVICES', ','.join(map(str, range(gpus))))
        visible = visible.split(',')
        os.environ['CUDA_VISIBLE_DEVICES'] = ','.join(
            visible[i % len(visible)] for i in range(local_size))
    if not torch_dist.is_initialized():
        timeout = dist_cfg.pop('timeout', None)
        if timeout is not None:
            dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
        torch_dist.init_process_group(backend='gloo', **dist_cfg)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = device_ids
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
