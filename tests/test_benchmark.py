"""The speed benchmark (benchmarks/benchmark.py) and the pooling of its runs
(benchmarks/pool.py): tiny backbones on CPU, few rounds."""
import gc
import json
import math
import os.path as osp
import random
import sys
import weakref

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import benchmark  # noqa: E402
from benchmarks.pool import format_pooled, pool_runs  # noqa: E402
from benchmarks.pool import main as pool_main  # noqa: E402
from cbam_mmdet.models import CBAM, SE  # noqa: E402

TINY = dict(device='cpu', shape=(64, 64), backbone_only=True, warmup=0, iters=1)


def quiet(_):
    pass


def test_backbones_interleaved_with_ratios_to_the_baseline():
    logs = []
    results = benchmark.run_benchmark(variants=('cbam-ref', 'cbam'), modes=('train', 'infer'),
                                      rounds=2, log=logs.append, **TINY)
    assert [(r['mode'], r['variant']) for r in results] == [
        (m, v) for m in ('train', 'infer') for v in ('baseline', 'cbam-ref', 'cbam')]
    for r in results:
        assert r['ms'] > 0 and r['ratio_min'] <= r['ratio'] <= r['ratio_max']
        assert r['ratio_min'] <= r['ratio_lo'] <= r['ratio'] <= r['ratio_hi'] <= r['ratio_max']
        if r['variant'] == 'baseline':
            assert r['ratio'] == 1.0
    assert len(logs) == 2 and 'cbam-ref' in logs[0]
    # calls are replayed from C++ on CUDA only: nothing counted, nothing logged on CPU
    assert not any('replayed_calls' in r for r in results)


def test_variants_are_the_shipped_configs_and_differ_only_by_implementation():
    cfg = benchmark.variant_config('cbam')
    assert cfg.model.backbone.type == 'ResNet'
    ref = benchmark.build_model(benchmark.variant_config('cbam-ref'), backbone_only=True)
    fast = benchmark.build_model(cfg, backbone_only=True)
    base = benchmark.build_model(benchmark.variant_config('baseline'), backbone_only=True)
    assert list(ref.state_dict()) == list(fast.state_dict())
    assert {m.implementation for m in benchmark.plugin_modules(ref)} == {'reference'}
    assert {m.implementation for m in benchmark.plugin_modules(fast)} == {'auto'}
    assert len(benchmark.plugin_modules(fast)) == 16 and not benchmark.plugin_modules(base)
    se = benchmark.build_model(benchmark.variant_config('se-ref'), backbone_only=True)
    assert all(isinstance(m, SE) for m in benchmark.plugin_modules(se))
    assert all(isinstance(m, CBAM) for m in benchmark.plugin_modules(fast))
    with pytest.raises(ValueError, match='variant must be one of'):
        benchmark.variant_config('cbam-graph')


def test_each_variant_is_built_from_consecutive_seeds(monkeypatch):
    built = []
    real = benchmark.build_model
    monkeypatch.setattr(benchmark, 'build_model', lambda cfg, backbone_only: (
        built.append(torch.initial_seed()) or real(cfg, backbone_only)))
    results = benchmark.run_benchmark(variants=('baseline', 'se'), modes=('infer',),
                                      rounds=2, seed=5, seeds=2, log=quiet, **TINY)
    assert built == [5, 6, 5, 6]
    assert [r['variant'] for r in results] == ['baseline', 'se']
    assert benchmark.default_seeds(backbone_only=False) == 3
    assert benchmark.default_seeds(backbone_only=True) == 1
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r'seeds \(models per variant\) must be'):
            benchmark.run_benchmark(variants=('baseline',), modes=('infer',), seeds=bad,
                                    rounds=1, log=quiet, **TINY)


def test_round_order_draws_every_place_and_never_repeats_a_model():
    rng, last = random.Random(0), None
    places = [[0] * 4 for _ in range(4)]
    for _ in range(400):
        order = benchmark.round_order(4, rng, last)
        assert sorted(order) == [0, 1, 2, 3] and order[0] != last
        for place, model in enumerate(order):
            places[model][place] += 1
        last = order[-1]
    assert all(70 <= count <= 130 for row in places for count in row), places
    assert benchmark.round_order(1, rng, 0) == [0]


def test_median_interval_is_the_order_statistics_interval():
    """For 30 values the 10th and 21st smallest (coverage 95.7%); too few values for 95%
    give the whole range."""
    values = list(range(1, 31))
    random.Random(0).shuffle(values)
    assert benchmark.median_interval(values) == (10, 21)
    assert benchmark.median_interval([3, 1, 2, 5, 4]) == (1, 5)
    assert benchmark.median_interval(list(range(1, 7))) == (1, 6)
    rng, covered = random.Random(1), 0
    for _ in range(2000):  # coverage of the true median of a skewed distribution
        lo, hi = benchmark.median_interval([rng.expovariate(1.0) for _ in range(30)])
        covered += lo <= math.log(2) <= hi
    assert 0.94 <= covered / 2000 <= 0.975


def test_the_collector_runs_between_timed_blocks_not_inside():
    class Node:
        pass

    seen, refs = [], []

    def step():
        seen.append(gc.isenabled())
        node = Node()
        node.self = node  # a cycle: only the collector frees it
        refs.append(weakref.ref(node))

    frozen_before = gc.get_freeze_count()
    with benchmark.collector_frozen():
        assert gc.get_freeze_count() > frozen_before
        benchmark.time_steps(step, 3, torch.device('cpu'))
        assert seen == [False] * 3 and gc.isenabled()
        assert all(r() is None for r in refs)
    assert gc.get_freeze_count() == 0


def test_each_mode_is_set_once_outside_the_timed_steps(monkeypatch):
    from mmdet.models.backbones import ResNet
    calls = []
    real = torch.nn.Module.train

    def counting_train(module, mode=True):
        if isinstance(module, ResNet):
            calls.append(mode)
        return real(module, mode)

    monkeypatch.setattr(torch.nn.Module, 'train', counting_train)
    benchmark.run_benchmark(variants=('baseline', 'se'), modes=('train', 'infer'),
                            rounds=2, log=quiet, **TINY)
    # ResNet.train calls super().train once per switch: one switch per mode and variant
    assert calls == [True, True, False, False]


def test_time_plugins_uses_forward_hooks_outside_the_timed_steps(monkeypatch):
    hooked = {}  # variant -> per step, whether its plugins had forward hooks
    real_step = benchmark.Runner.infer_step

    def infer_step(self, images, samples):
        hooked.setdefault(self.name, []).append(
            any(m._forward_hooks for m in benchmark.plugin_modules(self.model)))
        return real_step(self, images, samples)

    monkeypatch.setattr(benchmark.Runner, 'infer_step', infer_step)
    logs = []
    results = benchmark.run_benchmark(variants=('se', 'cbam'), modes=('infer',), rounds=2,
                                      time_plugins=True, log=logs.append,
                                      **{**TINY, 'warmup': 1, 'iters': 2})
    by_name = {r['variant']: r for r in results}
    assert by_name['baseline']['plugin_ms'] == 0 and by_name['baseline']['plugin_share'] == 0
    for name in ('se', 'cbam'):
        assert 0 < by_name[name]['plugin_ms'] < by_name[name]['ms']
        # warm-up 1, then per round 2 timed steps without hooks and 1 with them
        assert hooked[name] == [False] + [False, False, True] * 2
    assert 'in plugins ms' in logs[0]


def test_replay_counts_and_warnings(monkeypatch):
    """Per fast plugin variant and mode, the calls of one step counted by the process-wide
    counter; a warning where not all were replayed. Nothing is counted on CPU."""
    calls = iter(range(0, 100, 8))  # each read: 8 more calls replayed
    monkeypatch.setattr(benchmark, '_replay_counter', lambda: lambda: next(calls))
    runner = benchmark.Runner('se', benchmark.build_model(
        benchmark.variant_config('se'), True), True, False, torch.device('cpu'))
    assert benchmark.replay_counts([runner], ('infer',), None, None) == {}
    monkeypatch.setattr(benchmark, '_sync', lambda device: None)
    monkeypatch.setattr(runner, 'step', lambda *args: None)
    runner.device = torch.device('cuda')
    assert benchmark.replay_counts([runner], ('train', 'infer'), None, None) == {
        ('se', m): dict(plugin_calls=16, replayed_calls=8) for m in ('train', 'infer')}
    monkeypatch.setattr(benchmark, '_replay_counter', lambda: None)
    assert benchmark.replay_counts([runner], ('infer',), None, None) == {}
    results = [dict(variant='baseline', mode='train'),
               dict(variant='se', mode='train', plugin_calls=16, replayed_calls=16),
               dict(variant='cbam', mode='infer', plugin_calls=16, replayed_calls=0)]
    lines = benchmark.format_replayed(results, 'fast paths: X').splitlines()
    assert lines[0] == 'calls replayed from C++ per step: se train 16/16, cbam infer 0/16'
    assert len(lines) == 2 and lines[1].startswith(
        'WARNING: cbam infer: 0 of 16 plugin calls replayed from C++')
    assert lines[1].endswith('(fast paths: X)')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_replay_counts_on_cuda():
    results = benchmark.run_benchmark(variants=('se', 'cbam'), modes=('train', 'infer'),
                                      device='cuda', amp=True, shape=(128, 128),
                                      backbone_only=True, rounds=1, warmup=1, iters=1,
                                      log=quiet)
    counted = [r for r in results if 'replayed_calls' in r]
    assert {(r['variant'], r['mode']) for r in counted} == {
        (v, m) for v in ('se', 'cbam') for m in ('train', 'infer')}
    if 'replayed from C++' in benchmark.describe_fast_paths('cuda'):
        assert all(r['replayed_calls'] == r['plugin_calls'] == 16 for r in counted)


def test_detector_steps_run_with_fixed_proposals():
    """Detectors of other seeds and variants propose the same boxes and keep no
    detection; the backbone gets gradients, and the learning rate of 0 keeps the weights
    (and so the proposals) through training steps."""
    device = torch.device('cpu')
    images, samples = benchmark.synthetic_batch(1, (64, 64), device)
    proposals = []
    for name, seed in (('baseline', 0), ('se', 1)):
        torch.manual_seed(seed)
        model = benchmark.build_model(benchmark.variant_config(name), backbone_only=False)
        benchmark.fix_proposals(model)
        runner = benchmark.Runner(name, model, False, False, device)
        loss = model.roi_head.loss
        model.roi_head.loss = lambda x, rpn, data, loss=loss: (
            proposals.append([r.bboxes.clone() for r in rpn]) or loss(x, rpn, data))
        weight = model.backbone.layer2[0].conv1.weight
        before = weight.detach().clone()
        runner.set_mode('train')
        runner.step('train', images, samples)
        runner.step('train', images, samples)
        assert weight.grad is not None and weight.grad.abs().sum() > 0
        assert torch.equal(weight, before)
        runner.set_mode('infer')
        with torch.no_grad():
            predictions = model(images, samples, mode='predict')
        assert [len(p.pred_instances) for p in predictions] == [0]
    assert len(proposals) == 4
    for boxes in proposals[1:]:
        assert all(torch.equal(a, b) for a, b in zip(proposals[0], boxes))
    with pytest.raises(ValueError, match="lacks \\['rpn_head.rpn_cls'"):
        benchmark.fix_proposals(torch.nn.Sequential())


def test_command_line(tmp_path, capsys):
    args = benchmark.parse_args(['--device', 'cuda', '--amp', '--batch-size', '2', '--shape',
                                 '800x1216', '--channels-last', '--time-plugins'])
    assert args.shape == (800, 1216) and args.amp and args.channels_last and args.time_plugins
    assert list(benchmark.parse_args([]).variants) == list(benchmark.VARIANTS)
    assert benchmark.parse_args(['--shape', '512']).shape == (512, 512)
    for bad in (['--shape', '10x10'], ['--variants', 'se-graph'], ['--rounds', '0'],
                ['--seeds', '0'], ['--warmup', '-1']):
        with pytest.raises(SystemExit):
            benchmark.parse_args(bad)
    out = tmp_path / 'speed.json'
    benchmark.main(['--backbone-only', '--shape', '64', '--modes', 'infer', '--rounds', '1',
                    '--warmup', '0', '--iters', '1', '--variants', 'baseline', 'se',
                    '--json', str(out)])
    data = json.loads(out.read_text())
    assert data['args']['seeds'] == 1 and data['fast_paths'].startswith('fast paths:')
    assert [r['variant'] for r in data['results']] == ['baseline', 'se']
    assert '1 model(s) per variant' in capsys.readouterr().out


def benchmark_run(ratios, shape=(800, 1216), device='GPU, torch 2',
                  fast_paths='fast paths: X'):
    """A run as benchmarks/benchmark.py --json writes it, with the given ratio per variant."""
    return dict(args=dict(batch_size=2, shape=list(shape), amp=True, channels_last=False,
                          backbone_only=False, rounds=30, seeds=3, iters=2),
                device=device, fast_paths=fast_paths,
                results=[dict(mode='train', variant=v, ms=70.0 * r, ratio=r)
                         for v, r in ratios.items()])


def test_pool_gives_mean_spread_and_range_of_the_runs_ratios():
    runs = [benchmark_run({'baseline': 1.0, 'se': 1.05, 'cbam-ref': 1.5}),
            benchmark_run({'baseline': 1.0, 'se': 1.02}),
            benchmark_run({'baseline': 1.0, 'se': 1.03, 'cbam-ref': 1.4})]
    runs[2]['args'].update(rounds=60, seeds=8, iters=1)  # measurement settings may differ
    pooled = {p['variant']: p for p in pool_runs(runs)}
    se = pooled['se']
    assert se['runs'] == 3 and se['ratios'] == [1.05, 1.02, 1.03]
    assert se['mean'] == pytest.approx((1.05 + 1.02 + 1.03) / 3)
    assert se['sd'] == pytest.approx(0.015275, abs=1e-6)
    assert (se['min'], se['max']) == (1.02, 1.05)
    ref = pooled['cbam-ref']  # absent from the second run
    assert ref['runs'] == 2 and ref['ratios'] == [1.5, None, 1.4]
    assert ref['mean'] == pytest.approx(1.45)
    table = format_pooled(pool_runs(runs))
    assert '1.050 1.020 1.030' in table and '1.500 - 1.400' in table


def test_pool_refuses_runs_of_different_workloads_devices_or_builds():
    run = benchmark_run({'baseline': 1.0, 'se': 1.05})
    with pytest.raises(ValueError, match="differ in 'shape'"):
        pool_runs([run, benchmark_run({'baseline': 1.0}, shape=(512, 512))])
    with pytest.raises(ValueError, match="differ in 'device'"):
        pool_runs([run, benchmark_run({'baseline': 1.0}, device='CPU, 2 threads')])
    with pytest.raises(ValueError, match="differ in 'fast_paths'"):
        pool_runs([run, benchmark_run({'baseline': 1.0}, fast_paths='fast paths: Y')])
    with pytest.raises(ValueError, match='at least 2 runs'):
        pool_runs([run])


def test_pool_tool_reads_the_runs_files(tmp_path, capsys):
    paths = []
    for i, ratio in enumerate((1.04, 1.06)):
        paths.append(tmp_path / f'run{i}.json')
        paths[-1].write_text(json.dumps(benchmark_run({'baseline': 1.0, 'cbam': ratio})))
    pooled = pool_main([str(p) for p in paths])
    assert [p['mean'] for p in pooled] == pytest.approx([1.0, 1.05])
    assert '2 runs on GPU, torch 2' in capsys.readouterr().out
    missing = tmp_path / 'missing.json'
    with pytest.raises(SystemExit):
        pool_main([str(paths[0]), str(missing)])
    assert f'{missing}: cannot read it' in capsys.readouterr().err
    (tmp_path / 'other.json').write_text(json.dumps({'results': []}))
    with pytest.raises(SystemExit):
        pool_main([str(paths[0]), str(tmp_path / 'other.json')])
    assert 'not a benchmarks/benchmark.py --json file' in capsys.readouterr().err
