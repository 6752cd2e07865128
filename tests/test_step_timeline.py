"""tools/profile_step.py and cbam_mmdet.step_timeline: a training step's host time per
ResNet block, and the GPU's lag behind the host."""
import json
import os.path as osp
import sys

import pytest
import torch

from cbam_mmdet.step_timeline import Marks, attach, backbone_blocks, profile_step

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
import profile_step as profile_tool  # noqa: E402


def test_marks_keep_host_times_in_order_and_no_lag_on_cpu():
    marks = Marks(torch.device('cpu'))
    marks.start()
    marks('a')
    marks('b')
    marks('a')  # a second mark of a label keeps the first
    points = marks.collect()
    assert list(points) == ['a', 'b']
    assert 0 <= points['a'][0] <= points['b'][0] and points['a'][1] is None


def test_hooks_mark_every_block_forward_and_backward():
    """A ResNet-50 backbone in a stand-in detector: 16 blocks, each marked as it starts
    and returns, and as the gradient of its output is ready (in reverse order)."""
    from mmdet.models.backbones import ResNet
    model = torch.nn.Module()
    model.backbone = ResNet(depth=50, out_indices=(0, 1, 2, 3))
    labels = []
    attach(model, labels.append)
    assert len(backbone_blocks(model)) == 16
    outs = model.backbone(torch.randn(2, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    forward = [x for x in labels if x[0] in 'fF']
    assert forward == [f'{k}{i}' for i in range(16) for k in 'fF']
    grads = [x for x in labels if x[0] == 'g']
    assert grads == [f'g{i}' for i in reversed(range(16))]
    model.backbone = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match='Conv2d has no ResNet blocks to time'):
        backbone_blocks(model)


def test_profile_step_times_every_block_of_every_variant_on_cpu(tmp_path, capsys):
    """The command line on a small CPU detector: per variant, 16 blocks with forward
    and backward host times (none for the first block's backward: its input needs no
    gradient), the phases in order, no lags on CPU; a table and the JSON."""
    out = tmp_path / 'timeline.json'
    profile_tool.main(['--device', 'cpu', '--shape', '64x96', '--batch-size', '1',
                       '--variants', 'baseline', 'cbam', '--rounds', '1', '--warmup', '0',
                       '--json', str(out)])
    table = capsys.readouterr().out
    assert 'baseline: fwd us, bwd us, lag ms' in table and 'cbam: step' in table
    results = json.loads(out.read_text())['results']
    assert [r['variant'] for r in results] == ['baseline', 'cbam']
    for r in results:
        assert len(r['forward_us']) == 16 and all(v > 0 for v in r['forward_us'])
        assert r['backward_us'][0] is None and all(v > 0 for v in r['backward_us'][1:])
        assert all(v is None for v in r['lag_ms'] + r['forward_lag_ms'])
        loss, backward, optimiser = (r['phases'][p][0] for p in
                                     ('loss', 'backward', 'optimiser'))
        assert 0 < loss < backward < optimiser <= r['step_ms']


def test_profile_step_times_every_plugin_call_with_plugins(tmp_path, capsys):
    """``--plugins``: every CBAM module of the backbone (16) has a forward and a backward
    host time, the baseline none, and the table sums them per variant."""
    out = tmp_path / 'timeline.json'
    profile_tool.main(['--device', 'cpu', '--shape', '64x96', '--batch-size', '1',
                       '--variants', 'baseline', 'cbam', '--rounds', '1', '--warmup', '0',
                       '--plugins', '--json', str(out)])
    table = capsys.readouterr().out
    assert "cbam: 16 plugins' host time per call (marks included): forward" in table
    assert "baseline: 16 plugins" not in table
    baseline, cbam = json.loads(out.read_text())['results']
    assert baseline['plugin_forward_us'] == [] and baseline['plugin_backward_us'] == []
    assert len(cbam['plugin_forward_us']) == len(cbam['plugin_backward_us']) == 16
    assert all(v > 0 for v in cbam['plugin_forward_us'] + cbam['plugin_backward_us'])
    # a plugin's forward lies inside its block's
    assert all(p < f for p, f in zip(cbam['plugin_forward_us'], cbam['forward_us']))


def test_bad_settings_are_refused_with_the_field_and_its_values():
    with pytest.raises(ValueError, match=r"variant must be one of \['baseline', 'se'"):
        profile_step(variants=('eca',), device='cpu', amp=False)
    with pytest.raises(ValueError, match='rounds must be an integer >= 1, got 0'):
        profile_step(device='cpu', amp=False, rounds=0)
    with pytest.raises(ValueError, match="amp .* needs device 'cuda'"):
        profile_step(device='cpu', amp=True)
    with pytest.raises(ValueError, match="plugins must be True or False, got 'yes'"):
        profile_step(device='cpu', amp=False, plugins='yes')
    for argv in (['--device', 'cpu', '--amp'], ['--rounds', '0'], ['--variants', 'eca']):
        with pytest.raises(SystemExit):
            profile_tool.parse_args(argv)
