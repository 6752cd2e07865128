"""tools/dist_train.sh runs 2 CPU processes (gloo): a few iterations of training, then
validation with a COCO metric, on the tiny generated dataset."""
import os
import os.path as osp
import socket
import subprocess
import sys

from test_kill_and_resume import ROOT, tool_env, write_tiny_coco, write_tiny_config


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_training_then_validation(tmp_path):
    write_tiny_coco(tmp_path / 'data')
    config = write_tiny_config(tmp_path / 'tiny.py', tmp_path / 'data', max_iters=2,
                               val_interval=2)
    work_dir = tmp_path / 'work'
    env = dict(tool_env(), PYTHON=sys.executable,
               PORT=str(free_port()))
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), config, '2', '--work-dir',
         str(work_dir), '--cfg-options', 'env_cfg.dist_cfg.backend=gloo'],
        env=env, capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert "type='MMDistributedDataParallel'" in log
    assert 'Iter(train) [2/2]' in log
    assert 'coco/bbox_mAP:' in log, 'validation did not report a metric'
    assert osp.isfile(work_dir / 'iter_2.pth')
