"""tools/dist_train.sh runs 2 processes: a few iterations of training, then validation
with a COCO metric, on the tiny generated dataset; ReplicaCheckHook measures that the two
replicas stay one model; --resume continues the run; tools/dist_test.sh gives
tools/test.py's mAP. On CPU (gloo), and where CUDA is present on the GPUs (NCCL with
two GPUs, gloo with two processes sharing one)."""
import json
import os.path as osp
import pickle
import re
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


def run_tool(env, *args):
    proc = subprocess.run([*args], env=dict(env, PYTHON=sys.executable, PORT=str(free_port())),
                          capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def last_map(log):
    return re.findall(r'coco/bbox_mAP: (-?[\d.]+)', log)[-1]


def run_two_processes(tmp_path, env, backend, *extra, config_lines=(), resume_and_test=True):
    write_tiny_coco(tmp_path / 'data')
    config = write_tiny_config(tmp_path / 'tiny.py', tmp_path / 'data', max_iters=2,
                               val_interval=2)
    with open(config, 'a') as f:
        f.write('\n'.join(["custom_hooks = [dict(type='ReplicaCheckHook')]", *config_lines,
                           '']))
    work_dir = tmp_path / 'work'
    dist = ['--cfg-options', f'env_cfg.dist_cfg.backend={backend}']
    log = run_tool(env, 'bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2',
                   '--work-dir', str(work_dir), *dist, *extra)
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
    if not resume_and_test:
        return check

    # --resume continues from iter_2.pth to iteration 3, replicas still identical
    log = run_tool(env, 'bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2',
                   '--work-dir', str(work_dir), '--resume', *dist, 'train_cfg.max_iters=3',
                   *extra)
    assert 'resumed' in log.lower() and 'Iter(train) [3/3]' in log
    assert 'Iter(train) [1/3]' not in log, 'the resumed run started over'
    with open(work_dir / 'replica_check.json') as f:
        assert json.load(f)['param_max_diff_to_rank0'] == 0.0

    # tools/dist_test.sh on 2 processes gives tools/test.py's mAP
    ckpt = str(work_dir / 'iter_3.pth')
    one = run_tool(env, sys.executable, osp.join(ROOT, 'tools', 'test.py'), config, ckpt,
                   '--work-dir', str(tmp_path / 'test1'), '--out', str(tmp_path / 'one.pkl'))
    two = run_tool(env, 'bash', osp.join(ROOT, 'tools', 'dist_test.sh'), config, ckpt, '2',
                   '--work-dir', str(tmp_path / 'test2'), '--out', str(tmp_path / 'two.pkl'),
                   *dist)
    assert last_map(one) == last_map(two)
    with open(tmp_path / 'one.pkl', 'rb') as f1, open(tmp_path / 'two.pkl', 'rb') as f2:
        one, two = pickle.load(f1), pickle.load(f2)
    assert [r['img_id'] for r in one] == [r['img_id'] for r in two]
    assert sum(len(r['pred_instances']['bboxes']) for r in one) > 0
    for a, b in zip(one, two):
        torch.testing.assert_close(a['pred_instances']['bboxes'], b['pred_instances']['bboxes'],
                                   rtol=1e-4, atol=1e-3)
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
    assert all('replayed from C++ in training: 0' not in p
               for p in check['paths']), check['paths']


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_two_gpu_processes_syncbn_with_plugins(tmp_path):
    """sync_bn='torch' turns every BatchNorm into SyncBatchNorm, CBAM's spatial one too."""
    env = dict(tool_env())
    env.pop('CUDA_VISIBLE_DEVICES')
    backend = 'nccl' if torch.cuda.device_count() >= 2 else 'gloo'
    run_two_processes(tmp_path, env, backend, config_lines=["sync_bn = 'torch'"],
                      resume_and_test=False)
