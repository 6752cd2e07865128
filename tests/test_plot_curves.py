"""Training curves from mmengine work dirs (cbam_mmdet.visualization.curves,
tools/plot_curves.py)."""
import json
import os.path as osp
import runpy

import matplotlib.image as mpimg
import pytest

from cbam_mmdet.visualization.curves import load_run, plot_curves, scalar_files, work_dir_of

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def write_run(work_dir, timestamp, records):
    """A scalars.json written by mmengine's own LocalVisBackend, as the LoggerHook does."""
    from mmengine.visualization import LocalVisBackend
    backend = LocalVisBackend(osp.join(str(work_dir), timestamp, 'vis_data'))
    for step, scalars in records:
        backend.add_scalars(scalars, step=step)
    return str(work_dir)


@pytest.fixture(scope='module')
def trained_work_dir(tmp_path_factory):
    """A real 4-iteration run of the demo baseline, validated at iterations 2 and 4."""
    from cbam_mmdet.apis import build_train_config, run_train
    work_dir = str(tmp_path_factory.mktemp('runs') / 'demo_baseline')
    cfg = build_train_config(
        osp.join(ROOT, 'configs/demo/faster_rcnn_r50_shapes.py'), work_dir=work_dir,
        cfg_options={'train_cfg.max_iters': 4, 'train_cfg.val_interval': 2,
                     'train_dataloader.batch_size': 2,
                     'train_dataloader.dataset.num_images': 8,
                     'val_dataloader.batch_size': 4,
                     'val_dataloader.dataset.num_images': 4,
                     'default_hooks.logger.interval': 1,
                     'default_hooks.checkpoint.interval': 100,
                     'default_hooks.logger.log_metric_by_epoch': False})
    run_train(cfg)
    return work_dir


def test_real_run_loss_and_map_on_the_iteration_axis(trained_work_dir, tmp_path):
    series = load_run(trained_work_dir)
    assert series['loss'][0] == [1, 2, 3, 4]
    assert all(v > 0 for v in series['loss'][1])
    assert series['coco/bbox_mAP'][0] == [2, 4]
    out = str(tmp_path / 'curves.png')
    path, plotted = plot_curves([trained_work_dir], out)
    assert path == out and osp.getsize(out) > 1000
    assert mpimg.imread(out).shape[0] > 100
    assert set(plotted['demo_baseline']) == {'loss', 'coco/bbox_mAP'}


def test_epoch_based_validation_goes_after_its_last_iteration(tmp_path):
    # by-epoch run: 3 logged iterations per epoch, validation steps are epochs
    records = []
    for epoch in (1, 2):
        for i in (1, 2, 3):
            records.append(((epoch - 1) * 3 + i, dict(loss=1.0 / (epoch * i), epoch=epoch,
                                                      iter=i)))
        records.append((epoch, {'pascal_voc/mAP': 0.1 * epoch}))
    run = write_run(tmp_path / 'voc_run', '20260101_000000', records)
    series = load_run(run)
    assert series['loss'][0] == [1, 2, 3, 4, 5, 6]
    assert series['pascal_voc/mAP'] == ([3, 6], [0.1, 0.2])
    _, plotted = plot_curves([run], str(tmp_path / 'c.png'))
    assert 'pascal_voc/mAP' in plotted['voc_run']  # 'mAP' resolved to the VOC metric


def test_resumed_run_continues_and_runs_get_their_work_dir_names(tmp_path):
    a = write_run(tmp_path / 'x' / 'cbam', '20260101_000000',
                  [(10, dict(loss=2.0)), (20, dict(loss=1.5))])
    write_run(tmp_path / 'x' / 'cbam', '20260102_000000',  # resumed later
              [(30, dict(loss=1.0)), (30, {'coco/bbox_mAP': 0.3})])
    b = write_run(tmp_path / 'y' / 'cbam', '20260101_000000', [(10, dict(loss=3.0))])
    assert len(scalar_files(a)) == 2
    assert load_run(a)['loss'] == ([10, 20, 30], [2.0, 1.5, 1.0])
    for run in (a, osp.join(a, '20260101_000000'),
                osp.join(a, '20260101_000000', 'vis_data', 'scalars.json')):
        assert osp.basename(work_dir_of(run)) == 'cbam'
    out = str(tmp_path / 'two.png')
    _, plotted = plot_curves([a, b], out, smooth=2)
    assert list(plotted) == ['x/cbam', 'y/cbam']  # same name: the parent tells them apart
    assert plotted['x/cbam']['loss'][1] == [2.0, 1.75, 1.25]  # moving average of 2
    assert 'coco/bbox_mAP' not in plotted['y/cbam']
    assert osp.getsize(out) > 1000


def test_bad_input_is_refused_with_the_field_named(tmp_path):
    run = write_run(tmp_path / 'r', '20260101_000000', [(1, dict(loss=1.0))])
    with pytest.raises(ValueError, match="keys: no run has 'loss_foo'"):
        plot_curves([run], str(tmp_path / 'a.png'), keys=['loss_foo'])
    with pytest.raises(ValueError, match='labels: 2 labels for 1 runs'):
        plot_curves([run], str(tmp_path / 'a.png'), labels=['a', 'b'])
    with pytest.raises(ValueError, match='smooth must be a positive int'):
        plot_curves([run], str(tmp_path / 'a.png'), smooth=0)
    with pytest.raises(FileNotFoundError, match='run: no such file or folder'):
        plot_curves([str(tmp_path / 'missing')], str(tmp_path / 'a.png'))
    with pytest.raises(FileNotFoundError, match='scalars.json'):
        plot_curves([str(tmp_path)], str(tmp_path / 'a.png'))
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(dict(loss=1.0, step=1)) + '\n{not json\n')
    with pytest.raises(ValueError, match='bad.json:2: not a JSON line'):
        load_run(str(bad))
    # no validation anywhere: the 'mAP' panel is left out, the loss is still drawn
    _, plotted = plot_curves([run], str(tmp_path / 'b.png'))
    assert list(plotted['r']) == ['loss']


def test_tool_writes_the_png(tmp_path):
    a = write_run(tmp_path / 'base', '20260101_000000',
                  [(5, dict(loss=2.0)), (10, dict(loss=1.0)), (10, {'coco/bbox_mAP': 0.1})])
    b = write_run(tmp_path / 'cbam', '20260101_000000',
                  [(5, dict(loss=1.8)), (10, dict(loss=0.9)), (10, {'coco/bbox_mAP': 0.2})])
    out = str(tmp_path / 'curves.png')
    main = runpy.run_path(osp.join(ROOT, 'tools/plot_curves.py'))['main']
    assert main([a, b, '--out', out, '--keys', 'loss', 'coco/bbox_mAP',
                 '--labels', 'R-50', 'R-50 + CBAM']) == out
    assert osp.getsize(out) > 1000
