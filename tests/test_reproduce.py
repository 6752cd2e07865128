"""tools/reproduce.py: presets, runs in subprocesses, failed rows, --collect, outputs."""
import csv
import json
import os
import os.path as osp

import pytest

from cbam_mmdet import reproduce
from cbam_mmdet.reproduce import PRESETS, Preset, Variant

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# a tiny budget: 2 iterations on 16 scenes, tested on 8
TINY = ['--max-iters', '2', '--cfg-options', 'train_dataloader.dataset.num_images=16',
        'train_dataloader.batch_size=2', 'test_dataloader.dataset.num_images=8']


def _rows(work_dir):
    with open(osp.join(work_dir, 'comparison.csv')) as f:
        return list(csv.DictReader(f))


def _table(work_dir):
    with open(osp.join(work_dir, 'comparison.md')) as f:
        return [line for line in f.read().splitlines() if line.startswith('|')]


@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    work_dir = str(tmp_path_factory.mktemp('demo'))
    lines = []
    results = reproduce.main(['--preset', 'demo', '--work-dir', work_dir] + TINY,
                             log=lines.append)
    return work_dir, results, lines


def test_demo_preset_with_tiny_budget_runs_every_variant(demo_run):
    work_dir, results, lines = demo_run
    for name in reproduce.OUTPUTS:
        assert osp.getsize(osp.join(work_dir, name)) > 0
    rows = _rows(work_dir)
    assert [r['variant'] for r in rows] == ['baseline', 'SE', 'CBAM']
    assert all(r['status'] == 'ok' for r in rows), [r['error'] for r in rows]
    for r in rows:
        assert 0.0 <= float(r['mAP_mean']) <= 100.0  # measured, whatever its value
        assert r['mAP50_mean'] != '' and r['mAP75_mean'] != '' and r['n_seeds'] == '1'
    params = [float(r['params_M']) for r in rows]
    assert params[0] < params[1] < params[2]  # SE adds MLPs; CBAM adds spatial convs too
    for r in results:
        vdir = osp.join(work_dir, r['name'])
        assert osp.isfile(r['checkpoint']) and r['checkpoint'].startswith(vdir)
        with open(osp.join(vdir, 'seed0', 'result.json')) as f:
            assert json.load(f)['metrics']['coco/bbox_mAP'] == r['metrics']['coco/bbox_mAP']
    # progress per variant and per iteration, and the table printed at the end
    assert any(line.startswith('[1/3 baseline] Iter(train) [2/2]') for line in lines)
    assert any(line.startswith('[3/3 CBAM] Iter(test)') for line in lines)
    assert any('| CBAM |' in line for line in lines)
    assert any('cannot tell a difference from noise' in line for line in lines)


def test_collect_rebuilds_the_same_table(demo_run):
    work_dir, _, _ = demo_run
    table, rows = _table(work_dir), _rows(work_dir)
    os.remove(osp.join(work_dir, 'comparison.csv'))
    reproduce.main(['--preset', 'demo', '--work-dir', work_dir, '--collect'],
                   log=lambda *_: None)
    assert _table(work_dir) == table
    assert _rows(work_dir) == rows


def test_collect_reads_work_dirs_of_tools_test(demo_run, tmp_path):
    """A work dir filled by tools/train.py + tools/test.py (no result.json): the table
    takes the metrics json mmengine wrote for the test."""
    work_dir, _, _ = demo_run
    vdir = tmp_path / 'baseline' / 'seed0'
    (vdir / '20260101_000000').mkdir(parents=True)
    metrics = {'coco/bbox_mAP': 0.25, 'coco/bbox_mAP_50': 0.5, 'coco/bbox_mAP_75': 0.2}
    (vdir / '20260101_000000' / '20260101_000000.json').write_text(json.dumps(metrics))
    got = reproduce.collect(PRESETS['demo'], str(tmp_path), ['baseline', 'SE'])
    assert got[0]['status'] == 'ok' and got[0]['metrics'] == metrics
    assert got[1]['status'] == 'missing'


def test_crashed_variant_is_a_failed_row_and_the_others_still_run(tmp_path):
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    preset = Preset(name='crash', description='one broken variant',
                    variants=(Variant('broken', 'configs/demo/no_such_config.py'),
                              Variant('baseline', 'configs/demo/faster_rcnn_r50_shapes.py')),
                    metrics=reproduce.COCO_METRICS, input_shape=(3, 128, 128),
                    metric_note='test')
    options = dict(reproduce.iteration_budget(1), **{
        'train_dataloader.dataset.num_images': 8, 'train_dataloader.batch_size': 2,
        'test_dataloader.dataset.num_images': 4})
    results = reproduce.run_preset(preset, str(tmp_path), cfg_options=options,
                                   log=lambda *_: None)
    assert [r['status'] for r in results] == ['failed', 'ok']
    assert results[0]['exit_code'] != 0 and 'no_such_config.py' in results[0]['error']
    md, _ = reproduce.write_outputs(preset, str(tmp_path), results)
    failed_row = [line for line in md.splitlines() if line.startswith('| broken |')][0]
    assert 'failed' in failed_row and 'no_such_config.py' in failed_row
    assert _rows(str(tmp_path))[0]['status'] == 'failed'


def test_every_preset_config_exists_and_loads():
    from mmengine.config import Config
    for preset in PRESETS.values():
        for variant in preset.variants:
            cfg = Config.fromfile(osp.join(ROOT, variant.config))
            assert 'model' in cfg, variant.config


def test_long_presets_print_distributed_commands_and_collect():
    lines = []
    assert reproduce.main(['--preset', 'coco-r50', '--work-dir', 'w'],
                          log=lines.append) is None
    text = '\n'.join(lines)
    for config in ('faster_rcnn_r50_coco.py', 'faster_rcnn_r50_se_coco.py',
                   'faster_rcnn_r50_cbam_coco.py'):
        assert f'bash tools/dist_train.sh configs/{config} 8' in text
        assert f'bash tools/dist_test.sh configs/{config}' in text
    assert '--cfg-options randomness.seed=0' in text
    assert 'python tools/reproduce.py --preset coco-r50 --work-dir w --collect' in text


def test_table_rows_delta_and_paper_numbers():
    preset = PRESETS['coco-r101']
    results = [dict(name=n, config='c', status='ok', params=p, gflops=1.0,
                    metrics={'coco/bbox_mAP': m, 'coco/bbox_mAP_50': 0.5,
                             'coco/bbox_mAP_75': 0.3})
               for n, p, m in (('baseline', 1e6, 0.30), ('SE', 2e6, 0.31),
                               ('CBAM', 2e6, 0.29))]
    rows = reproduce.table_rows(preset, results)
    assert rows[0]['delta_mAP'] is None
    assert rows[1]['delta_mAP'] == pytest.approx(1.0)
    assert rows[2]['delta_mAP'] == pytest.approx(-1.0)
    assert rows[2]['paper_mAP'] == 30.8 and rows[2]['paper_delta'] == pytest.approx(1.7)
    assert rows[1]['paper_mAP'] is None
    md = reproduce.format_markdown(preset, rows)
    assert ('| CBAM | 2.00 | 1.000 | 29.0 | 50.0 | 30.0 | -1.0 | one seed: cannot tell a '
            'difference from noise | 30.8 | 50.5 | 32.6 | +1.7 |') in md


def test_progress_line_shortens_mmengine_logs():
    line = ('11/22 10:00:00 - mmengine - INFO - Iter(train) [ 10/300]  base_lr: 2.0e-02 '
            'lr: 2.0e-02  eta: 0:01:20  time: 0.3012  data_time: 0.0101  memory: 0  '
            'loss: 1.2345  loss_rpn_cls: 0.6')
    assert reproduce.progress_line(line) == \
        'Iter(train) [ 10/300] eta 0:01:20  time 0.3012  loss 1.2345'
    assert reproduce.progress_line('some other line') is None
    assert reproduce.progress_line('ValueError: bad') == 'ValueError: bad'


def test_bad_arguments_name_the_option_and_allowed_values(capsys):
    with pytest.raises(SystemExit):
        reproduce.parse_args(['--preset', 'mini', '--max-iters', '5'])
    assert '--max-iters' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        reproduce.parse_args(['--preset', 'nope'])
    assert 'demo' in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown variant.*allowed: \\['baseline', 'SE'"):
        reproduce.main(['--preset', 'demo', '--variants', 'baseline,XX', '--collect'])
