"""tools/train.py and tools/test.py end to end on real COCO images (../shared/data/coco128):
train a few iterations of the CBAM Faster R-CNN config, save a checkpoint, evaluate it with
COCO bbox mAP, and resume an interrupted run from its saved iteration."""
import importlib.util
import os
import os.path as osp

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COCO128 = osp.join(ROOT, '..', 'shared', 'data', 'coco128')
CONFIG = osp.join(ROOT, 'configs', 'faster_rcnn_r50_cbam_coco.py')

pytestmark = pytest.mark.skipif(
    not osp.isdir(COCO128), reason='needs ../shared/data/coco128 (128 real COCO images)')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}', osp.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def coco128_options(n_images=4, epochs=1):
    """--cfg-options that point the COCO config at coco128 with tiny images and budgets."""
    ann = 'annotations/instances_train2017.json'
    opts = [
        'model.backbone.init_cfg=None',
        f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=100',
        'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'default_hooks.logger.interval=1',
        'optim_wrapper.optimizer.lr=0.005', 'model.test_cfg.rcnn.score_thr=0.0',
        'env_cfg.cudnn_benchmark=False', 'randomness.seed=0',
        'train_dataloader.dataset.pipeline.2.scale=(160,128)',
        'test_dataloader.dataset.pipeline.1.scale=(160,128)',
        'val_dataloader.dataset.pipeline.1.scale=(160,128)',
    ]
    for split in ('train', 'val', 'test'):
        opts += [f'{split}_dataloader.dataset.data_root={COCO128}/',
                 f'{split}_dataloader.dataset.ann_file={ann}',
                 f'{split}_dataloader.dataset.data_prefix.img=train2017/',
                 f'{split}_dataloader.dataset.indices={n_images}']
    for split in ('val', 'test'):
        opts.append(f'{split}_evaluator.ann_file={COCO128}/{ann}')
    return opts


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    work_dir = str(tmp_path_factory.mktemp('coco_cbam'))
    runner = load_tool('train').main(
        [CONFIG, '--work-dir', work_dir, '--cfg-options'] + coco128_options())
    return work_dir, runner


def test_training_saves_a_checkpoint_with_cbam_weights(trained):
    work_dir, runner = trained
    assert runner.iter == 2  # 4 images, batch 2, one epoch
    ckpt_path = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt_path)
    from cbam_mmdet.checkpoint import load_checkpoint_file
    ckpt = load_checkpoint_file(ckpt_path)  # weights-only, allowlisted
    assert 'backbone.layer1.0.cbam.channel_attention.fc1.weight' in ckpt['state_dict']
    assert ckpt['meta']['iter'] == 2
    assert 'message_hub' in ckpt and 'optimizer' in ckpt
    # The run's scalars are logged in its own work dir, even after other runners in this
    # process (mmengine reuses Visualizer instances by name).
    import glob
    assert glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))


def test_test_tool_reports_coco_bbox_map(trained, tmp_path):
    work_dir, _ = trained
    out = str(tmp_path / 'results.pkl')
    metrics = load_tool('test').main(
        [CONFIG, osp.join(work_dir, 'epoch_1.pth'), '--work-dir', str(tmp_path), '--out',
         out, '--cfg-options'] + coco128_options())
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0
    assert osp.getsize(out) > 0


def test_resume_continues_from_the_saved_iteration(trained, tmp_path):
    work_dir, _ = trained
    resumed = load_tool('train').main(
        [CONFIG, '--work-dir', work_dir, '--resume', '--cfg-options'] +
        coco128_options(epochs=2))
    assert resumed.iter == 4 and resumed.epoch == 2
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_2.pth')


def test_missing_dataset_gives_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'instances_train2017\.json.*ann_file.*cocodataset'):
        load_tool('train').main([CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
                                 'model.backbone.init_cfg=None',
                                 f'train_dataloader.dataset.data_root={tmp_path}/nowhere/'])


def test_mmdet_own_test_tool_loads_the_config_and_checkpoint(trained, tmp_path):
    """mmdet's tools/test.py, in a fresh process that never imports cbam_mmdet itself:
    custom_imports registers the plugins and the safe checkpoint loader."""
    import subprocess
    import sys

    import mmdet
    work_dir, _ = trained
    tool = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    out = str(tmp_path / 'mmdet_results.pkl')
    proc = subprocess.run(
        [sys.executable, tool, CONFIG, osp.join(work_dir, 'epoch_1.pth'), '--work-dir',
         str(tmp_path), '--out', out, '--cfg-options'] + coco128_options(),
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='2'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'coco/bbox_mAP' in log and osp.getsize(out) > 0
