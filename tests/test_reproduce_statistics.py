"""Seed statistics of tools/reproduce.py: t-intervals on hand-made numbers, pairing by
seed, one seed, and the table's columns."""
import csv
import math
import os.path as osp

import pytest

from cbam_mmdet.reproduce import PRESETS, table_rows, write_outputs
from cbam_mmdet.reproduce.statistics import ONE_SEED, T_975, mean_std, paired_difference


def test_t_interval_of_known_differences():
    d = paired_difference({0: 10.0, 1: 10.0, 2: 10.0}, {0: 11.0, 1: 12.0, 2: 13.0})
    half = 4.303 * 1.0 / math.sqrt(3)  # mean 2, sd 1, t(0.975, df=2) = 4.303
    assert d['n'] == 3 and d['mean'] == pytest.approx(2.0)
    assert (d['ci_low'], d['ci_high']) == pytest.approx((2.0 - half, 2.0 + half))
    assert d['verdict'] == 'within noise'
    assert paired_difference({0: 0, 1: 0, 2: 0, 3: 0},
                             {0: 1.0, 1: 1.2, 2: 0.8, 3: 1.1})['verdict'] == 'better'
    assert paired_difference({0: 1, 1: 2}, {0: 0, 1: 3})['verdict'] == 'within noise'
    assert paired_difference({0: 5, 1: 6, 2: 7}, {0: 4, 1: 5.1, 2: 5.9})['verdict'] == 'worse'
    assert T_975[0] == 12.706 and T_975[29] == 2.042  # df 1 and 30; 1.96 beyond
    many = paired_difference({s: 0.0 for s in range(40)}, {s: s % 2 for s in range(40)})
    assert many['ci_high'] - many['mean'] == pytest.approx(1.96 * mean_std(
        [s % 2 for s in range(40)])[1] / math.sqrt(40))
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))


def test_differences_are_paired_by_seed():
    # every seed is 1 better than the baseline's run of that seed, whatever the spread
    d = paired_difference({0: 10.0, 1: 20.0, 2: 30.0}, {2: 31.0, 0: 11.0, 1: 21.0, 3: 99.0})
    assert d['n'] == 3 and d['mean'] == pytest.approx(1.0)
    assert d['ci_low'] == pytest.approx(1.0) and d['verdict'] == 'better'


def test_one_seed_has_no_interval():
    d = paired_difference({0: 20.0}, {0: 25.0})
    assert d['mean'] == 5.0 and d['ci_low'] is None and d['verdict'] == ONE_SEED


def _results(values):
    return [dict(name=name, seed=seed, config='c', status='ok', params=1e6, gflops=1.0,
                 train_s=1.0, test_s=1.0, metrics={'coco/bbox_mAP': v / 100,
                                                   'coco/bbox_mAP_50': 0.5,
                                                   'coco/bbox_mAP_75': 0.3})
            for name, per_seed in values.items() for seed, v in per_seed.items()]


def test_table_gives_mean_std_seeds_and_paired_interval(tmp_path):
    preset = PRESETS['demo']
    results = _results({'baseline': {0: 20.0, 1: 22.0, 2: 24.0},
                        'SE': {0: 21.0, 1: 23.0, 2: 25.0},
                        'CBAM': {0: 19.0, 1: 24.0, 2: 23.0}})
    md, _ = write_outputs(preset, str(tmp_path), results)
    with open(osp.join(tmp_path, 'comparison.csv')) as f:
        rows = {r['variant']: r for r in csv.DictReader(f)}
    for col in ('variant', 'n_seeds', 'mAP_mean', 'mAP_std', 'delta_mAP', 'delta_ci_low',
                'delta_ci_high', 'mAP50_mean', 'delta_mAP50', 'delta_mAP50_ci_low'):
        assert col in rows['SE']
    assert rows['baseline']['n_seeds'] == '3' and float(rows['baseline']['mAP_std']) == 2.0
    assert rows['SE']['verdict'] == 'better' and float(rows['SE']['delta_ci_low']) == 1.0
    assert rows['CBAM']['verdict'] == 'within noise'
    assert rows['CBAM']['mAP_seeds'] == '19.00 24.00 23.00'
    assert '3 seeds' in md and '| SE |' in md and '+1.0 [+1.0, +1.0] | better' in md
    assert osp.getsize(osp.join(tmp_path, 'comparison.png')) > 0


def test_one_seed_table_says_it_cannot_tell_noise():
    preset = PRESETS['demo']
    rows = table_rows(preset, _results({'baseline': {0: 20.0}, 'CBAM': {0: 25.0}}))
    assert rows[1]['delta_mAP'] == pytest.approx(5.0) and rows[1]['delta_ci_low'] is None
    assert rows[1]['verdict'] == ONE_SEED
    from cbam_mmdet.reproduce import format_markdown
    assert 'cannot tell a difference from noise' in format_markdown(preset, rows)
