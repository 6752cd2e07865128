"""tools/dist_train.sh runs 2 processes: a few iterations of training, then validation
with a COCO metric, on the tiny generated dataset; ReplicaCheckHook measures that the two
replicas stay one model. On CPU (gloo), and where CUDA is present on the GPUs (NCCL with
two GPUs, gloo with two processes sharing one)."""
import json
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from test_kill_and_resume import ROOT, tool_env, write_tiny_coco, write_tiny_config


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_two_processes(tmp_path, env, backend, *extra):
    write_tiny_coco(tmp_path / 'data')
    config = write_tiny_config(tmp_path / 'tiny.py', tmp_path / 'data', max_iters=2,
                               val_interval=2)
    with open(config, 'a') as f:
        f.write("custom_hooks = [dict(type='ReplicaCheckHook')]\n")
    work_dir = tmp_path / 'work'
    env = dict(env, PYTHON=sys.executable, PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
         str(work_dir), '--cfg-options', f'env_cfg.dist_cfg.backend={backend}', *extra],
        env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert "type='MMDistributedDataParallel'" in log
    assert 'Iter(train) [2/2]' in log
    assert 'coco/bbox_mAP:' in log, 'validation did not report a metric'
    assert osp.isfile(work_dir / 'iter_2.pth')
    with open(work_dir / 'replica_check.json') as f:
        check = json.load(f)
    assert check['world_size'] == 2 and len(check['paths']) == 2
    assert check['param_max_diff_to_rank0'] == 0.0
    grads = check['grad_checks'][-1]
    assert grads['iter'] == 2 and grads['plugin_params_with_grad'] > 0
    assert grads['max_abs_grad'] > 0 and grads['max_diff_to_rank0'] == 0.0
    return check


def test_two_cpu_processes_gloo_replicas_identical(tmp_path):
    check = run_two_processes(tmp_path, tool_env(), 'gloo')
    assert all('(cpu)' in p for p in check['paths'])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_two_gpu_processes_replicas_identical_on_the_fast_path(tmp_path):
    env = dict(tool_env())
    env.pop('CUDA_VISIBLE_DEVICES')
    backend = 'nccl' if torch.cuda.device_count() >= 2 else 'gloo'
    check = run_two_processes(tmp_path, env, backend, '--amp')
    assert all('(cuda:' in p for p in check['paths']), check['paths']
    assert all('replayed from C++ in the first iteration: 0' not in p
               for p in check['paths']), check['paths']
