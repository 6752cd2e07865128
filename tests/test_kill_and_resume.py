"""A run killed with SIGKILL and restarted with --resume ends with the same weights as an
uninterrupted run (CPU, deterministic, num_workers 0); checkpoints are never
half-written. Also holds the tiny generated COCO dataset and detector config that the
other reliability tests use."""
import json
import os
import os.path as osp
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
CLASSES = ('square', 'disc')


def write_tiny_coco(root, n_images=6, size=64, seed=0, name='train.json'):
    """``root/images/*.png`` with squares and discs on noise, ``root/<name>`` (COCO)."""
    import cv2
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    images, annotations = [], []
    for i in range(n_images):
        img = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        file_name = f'{i:03d}.png'
        for k in range(2):
            w = int(rng.integers(14, 24))
            x, y = (int(v) for v in rng.integers(2, size - w - 2, 2))
            cat = int(rng.integers(1, 3))
            color = tuple(int(c) for c in rng.integers(150, 255, 3))
            if cat == 1:
                cv2.rectangle(img, (x, y), (x + w, y + w), color, -1)
            else:
                cv2.circle(img, (x + w // 2, y + w // 2), w // 2, color, -1)
            annotations.append(dict(id=len(annotations) + 1, image_id=i, category_id=cat,
                                    bbox=[x, y, w, w], area=w * w, iscrowd=0))
        cv2.imwrite(osp.join(root, 'images', file_name), img)
        images.append(dict(id=i, file_name=file_name, width=size, height=size))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=1, name='square'), dict(id=2, name='disc')])
    with open(osp.join(root, name), 'w') as f:
        json.dump(coco, f)
    return coco


TINY_CONFIG = '''
_base_ = {base!r}
data_root = {data_root!r}
metainfo = dict(classes={classes!r})
model = dict(
    backbone=dict(base_channels=8, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=16),
    rpn_head=dict(in_channels=16, feat_channels=16),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=16),
                  bbox_head=dict(in_channels=16, fc_out_channels=32, num_classes=2)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=50),
                   rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50)))
train_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]
test_pipeline = [
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                          'scale_factor'))]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='train.json', data_prefix=dict(img='images/'),
                 metainfo=metainfo, filter_cfg=dict(filter_empty_gt=True, min_size=0),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='train.json', data_prefix=dict(img='images/'),
                 metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'train.json')
test_evaluator = val_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={max_iters},
                 val_interval={val_interval})
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3)]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(checkpoint=dict(interval=1, by_epoch=False),
                     logger=dict(interval=1), visualization=dict(draw=False))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(cudnn_benchmark=False)
'''


def write_tiny_config(path, data_root, max_iters=6, val_interval=100):
    """A Faster R-CNN R-50 (base_channels 8) + CBAM config over the tiny dataset."""
    with open(path, 'w') as f:
        f.write(TINY_CONFIG.format(base=osp.join(ROOT, 'configs', 'faster_rcnn_r50_cbam_coco.py'),
                                   data_root=osp.join(str(data_root), ''), classes=CLASSES,
                                   max_iters=max_iters, val_interval=val_interval))
    return str(path)


def tool_env():
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1',
               PYTHONWARNINGS='ignore', CUDA_VISIBLE_DEVICES='')
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    return env


def train_cmd(config, work_dir, *extra):
    return [sys.executable, TRAIN, config, '--work-dir', str(work_dir), *extra]


def final_weights(work_dir, iteration):
    from cbam_mmdet.checkpoint import load_checkpoint_file
    return load_checkpoint_file(osp.join(str(work_dir), f'iter_{iteration}.pth'))['state_dict']


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp('tiny')
    write_tiny_coco(root / 'data')
    # val at iteration 3: validation must not shift the training's random numbers
    config = write_tiny_config(root / 'tiny.py', root / 'data', max_iters=6, val_interval=3)
    return root, config


def run_to_end(config, work_dir, *extra, timeout=300):
    proc = subprocess.run(train_cmd(config, work_dir, *extra), env=tool_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_sigkill_then_resume_gives_the_uninterrupted_weights(tiny):
    root, config = tiny
    full = root / 'uninterrupted'
    run_to_end(config, full)
    reference = final_weights(full, 6)

    killed = root / 'killed'
    kill_after = 4  # after the checkpoint of iteration 4 is complete (past the val at 3)
    proc = subprocess.Popen(train_cmd(config, killed), env=tool_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = killed / f'iter_{kill_after}.pth'
    deadline = time.time() + 240
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert target.exists(), 'the run ended or timed out before the checkpoint appeared'
    assert not (killed / 'iter_6.pth').exists(), 'the run finished before it was killed'
    done = sorted(int(p.stem.split('_')[1]) for p in killed.glob('iter_*.pth'))

    run_to_end(config, killed, '--resume')
    resumed = final_weights(killed, 6)
    assert resumed.keys() == reference.keys()
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, (f'killed after iteration {done[-1]}: {len(different)} tensors '
                           f'differ, e.g. {different[:5]}')


def test_resume_without_saved_generators_differs(tiny):
    """The control: mmengine's own loop (re-seeded on resume) does not reach the
    uninterrupted weights, so the test above measures the generators' restore."""
    root, config = tiny
    reference = final_weights(root / 'uninterrupted', 4)  # written by the test above
    plain = root / 'plain'
    plain.mkdir()
    shutil.copy(root / 'uninterrupted' / 'iter_2.pth', plain / 'iter_2.pth')
    run_to_end(config, plain, '--no-exact-resume', '--resume', '--cfg-options',
               'train_cfg.max_iters=4', 'train_cfg.val_interval=100')
    resumed = final_weights(plain, 4)
    assert any(not torch.equal(reference[k], resumed[k]) for k in reference)


def test_interrupted_checkpoint_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from mmengine.fileio import get_file_backend
    from mmengine.runner.checkpoint import save_checkpoint

    import cbam_mmdet.checkpoint as ckpt
    target = tmp_path / 'iter_7.pth'
    target.write_bytes(b'previous complete checkpoint')

    class Interrupted(Exception):
        pass

    class HalfWriter:
        """A file object that writes half the bytes, then fails (a crash mid-write)."""

        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise Interrupted('killed mid-write')

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    real_fdopen = os.fdopen
    monkeypatch.setattr(ckpt.os, 'fdopen', lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    assert isinstance(get_file_backend(str(target)), ckpt.AtomicLocalBackend)
    checkpoint = dict(state_dict=dict(w=torch.arange(250_000.0)), meta=dict(iter=8))
    with pytest.raises(Interrupted):
        save_checkpoint(checkpoint, str(target))  # what mmengine's runner calls
    assert target.read_bytes() == b'previous complete checkpoint'
    assert os.listdir(tmp_path) == ['iter_7.pth'], 'a temporary file was left behind'

    monkeypatch.undo()
    save_checkpoint(checkpoint, str(target))
    assert torch.equal(ckpt.load_checkpoint_file(target)['state_dict']['w'],
                       checkpoint['state_dict']['w'])


def test_latest_checkpoint_survives_an_empty_last_checkpoint_file(tmp_path):
    from cbam_mmdet.checkpoint import latest_checkpoint
    assert latest_checkpoint(tmp_path) is None
    for i in (1, 2):
        (tmp_path / f'iter_{i}.pth').write_bytes(b'')
        os.utime(tmp_path / f'iter_{i}.pth', (i, i))
    (tmp_path / 'last_checkpoint').write_text('')  # killed while mmengine rewrote it
    assert latest_checkpoint(tmp_path) == str(tmp_path / 'iter_2.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_1.pth'))
    assert latest_checkpoint(tmp_path) == str(tmp_path / 'iter_1.pth')


@pytest.fixture
def in_process_runs():
    """Runs in this process: one thread (as the subprocesses), and mmengine's
    deterministic switch undone afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_epoch_based_resume_at_an_epoch_boundary_is_exact(tiny, in_process_runs):
    from cbam_mmdet.apis import build_train_config, run_train
    root, config = tiny
    with open(root / 'tiny_epochs.py', 'w') as f:
        f.write(f"_base_ = {config!r}\n"
                "train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=2, "
                "val_interval=1)\n"
                "default_hooks = dict(checkpoint=dict(interval=1, by_epoch=True))\n"
                "log_processor = dict(by_epoch=True)\n")

    def train(work_dir, max_epochs, resume=None):
        cfg = build_train_config(str(root / 'tiny_epochs.py'), work_dir=str(work_dir),
                                 resume=resume,
                                 cfg_options={'train_cfg.max_epochs': max_epochs})
        assert cfg.train_cfg.type == 'ExactResumeEpochBasedTrainLoop'
        return run_train(cfg)

    train(root / 'epochs_full', 2)
    train(root / 'epochs_part', 1)
    train(root / 'epochs_part', 2, resume='auto')
    from cbam_mmdet.checkpoint import load_checkpoint_file
    reference = load_checkpoint_file(root / 'epochs_full' / 'epoch_2.pth')['state_dict']
    resumed = load_checkpoint_file(root / 'epochs_part' / 'epoch_2.pth')['state_dict']
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
