"""tools/profile_stages.py and cbam_mmdet.stage_profile: one module per ResNet-50 stage."""
import os.path as osp
import sys

import pytest
import torch

from cbam_mmdet.stage_profile import (STAGE_BLOCKS, build_module, format_profile,
                                      module_call, profile_stages, stage_shapes)

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
import profile_stages as profile_tool  # noqa: E402


def test_stage_shapes_are_resnet50_block_outputs():
    assert stage_shapes(2, (800, 1216)) == [
        ((2, 256, 200, 304), 3), ((2, 512, 100, 152), 4), ((2, 1024, 50, 76), 6),
        ((2, 2048, 25, 38), 3)]
    from mmdet.models.backbones import ResNet
    net = ResNet(depth=50, out_indices=(0, 1, 2, 3))
    net.eval()  # (mmdet's ResNet.train returns None)
    with torch.no_grad():  # odd sizes: every stride-2 layer rounds up
        outs = net(torch.zeros(1, 3, 33, 65))
    assert [tuple(o.shape) for o in outs] == [s for s, _ in stage_shapes(1, (33, 65))]
    assert tuple(blocks for _, blocks in stage_shapes(1, (33, 65))) == STAGE_BLOCKS


@pytest.mark.parametrize('mode', ['train', 'infer'])
def test_profile_times_every_stage_of_every_variant_on_cpu(mode):
    results = profile_stages(variants=('se', 'cbam', 'cbam-ref'), mode=mode, device='cpu',
                             batch_size=1, shape=(64, 96), amp=False, iters=1)
    assert [r['variant'] for r in results] == ['se', 'cbam', 'cbam-ref']
    for r in results:
        assert r['mode'] == mode and r['kernels'] is None and r['step_kernel_us'] is None
        assert r['host_bound'] == [False] * 4
        assert r['shapes'][0] == [1, 256, 16, 24] and len(r['wall_us']) == 4
        assert all(us > 0 for us in r['wall_us'])
        assert r['step_wall_us'] == pytest.approx(
            sum(b * us for b, us in zip(STAGE_BLOCKS, r['wall_us'])))
    table = format_profile(results)
    assert table.count('wall (device-bound)') == 3 and f'cbam-ref ({mode})' in table


@pytest.mark.parametrize('batch_stats', [False, True])
def test_training_calls_keep_batchnorm_as_asked_and_reach_the_parameters(batch_stats):
    module = build_module('cbam', 32, torch.device('cpu'), batch_stats=batch_stats)
    bn = module.spatial_attention.bn
    before = bn.running_mean.clone()
    seen = []
    module.channel_attention.fc1.weight.register_hook(lambda g: seen.append(g))
    module_call(module, torch.randn(2, 32, 8, 8), 'train', amp=False)()
    assert module.training and bn.training == batch_stats
    assert torch.equal(bn.running_mean, before) != batch_stats
    assert len(seen) == 1 and seen[0].abs().sum() > 0


def test_bad_settings_are_refused_with_the_field_and_its_values():
    with pytest.raises(ValueError,
                       match=r"variant must be one of \('se', 'se-ref', 'cbam'"):
        build_module('eca', 32, torch.device('cpu'))
    with pytest.raises(ValueError, match=r"mode must be one of \('train', 'infer'\)"):
        module_call(build_module('se', 32, torch.device('cpu')), torch.randn(1, 32, 4, 4),
                    'eval', amp=False)
    with pytest.raises(ValueError, match="amp .* needs device 'cuda'"):
        profile_stages(device='cpu', amp=True)


def test_command_line_defaults_and_refusals(capsys):
    args = profile_tool.parse_args([])
    assert (args.device, args.batch_size, args.shape, args.variants, args.modes) == \
        ('cuda', 2, (800, 1216), ['se', 'cbam'], ['train'])
    for argv in (['--device', 'cpu', '--amp'], ['--iters', '0'], ['--variants', 'eca']):
        with pytest.raises(SystemExit):
            profile_tool.parse_args(argv)
    profile_tool.main(['--device', 'cpu', '--shape', '64', '--batch-size', '1',
                       '--variants', 'se', '--modes', 'infer', '--iters', '1'])
    out = capsys.readouterr().out
    assert 'se (infer)' in out and 'wall (device-bound)' in out
