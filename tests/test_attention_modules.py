"""CBAM, SE and their parts against an independent float64 restatement of the equations."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from cbam_mmdet import CBAM, SE

CBAM_OPTIONS = [
    {},  # the paper's CBAM
    dict(spatial_attention=False, channel_pool='avg'),  # Table 1 AvgPool
    dict(spatial_attention=False, channel_pool='max'),  # Table 1 MaxPool
    dict(spatial_attention=False, channel_pool='avg+max'),  # Table 1 / Table 2 Channel
    dict(spatial_descriptor='conv1x1', spatial_kernel=3),  # Table 2
    dict(spatial_descriptor='conv1x1', spatial_kernel=7),  # Table 2
    dict(spatial_kernel=3),  # Table 2 avg&max k=3
    dict(spatial_kernel=5),  # any odd kernel
    dict(arrangement='spatial_first'),  # Table 3
    dict(arrangement='parallel'),  # Table 3
    dict(channel_attention=False),  # spatial only
    dict(ratio=4, channel_pool='max', arrangement='spatial_first'),
]


def _ids(options):
    return [','.join(f'{k}={v}' for k, v in o.items()) or 'default' for o in options]


def randomize_(module, seed=0):
    """Random weights and BatchNorm statistics, so no term of the equations is trivial
    (the official initialisation has the spatial BN weight at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(torch.randn(b.shape, generator=g))
            elif name.endswith('running_var'):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


# ---- the equations, restated independently of the package ----------------------------

def eq_channel_map(x, fc1_w, fc1_b, fc2_w, fc2_b, pool):
    """Mc = sigmoid(sum over descriptors of W2 relu(W1 d + b1) + b2)."""
    descriptors = {'avg': [x.mean(dim=(2, 3))], 'max': [x.amax(dim=(2, 3))],
                   'avg+max': [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]}[pool]
    z = sum(torch.relu(d @ fc1_w.t() + fc1_b) @ fc2_w.t() + fc2_b for d in descriptors)
    return torch.sigmoid(z)[:, :, None, None]


def eq_batchnorm(y, bn, training):
    if training:
        mean = y.mean(dim=(0, 2, 3), keepdim=True)
        var = y.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean = bn.running_mean.view(1, -1, 1, 1)
        var = bn.running_var.view(1, -1, 1, 1)
    return (y - mean) / torch.sqrt(var + 1e-5) * bn.weight.view(1, -1, 1, 1) + \
        bn.bias.view(1, -1, 1, 1)


def eq_spatial_map(x, sa, training):
    """Ms = sigmoid(BN(conv_k([max_c x; mean_c x]))), or a 1x1 conv descriptor."""
    if sa.descriptor == 'conv1x1':
        d = (x * sa.reduce.weight.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
    else:
        d = torch.stack((x.max(dim=1).values, x.mean(dim=1)), dim=1)
    k = sa.conv.weight.shape[-1]
    y = F.conv2d(d, sa.conv.weight, padding=k // 2)
    return torch.sigmoid(eq_batchnorm(y, sa.bn, training))


def eq_cbam(x, m, training):
    def mc(t):
        ca = m.channel_attention
        return eq_channel_map(t, ca.fc1.weight, ca.fc1.bias, ca.fc2.weight, ca.fc2.bias,
                              ca.pool)

    def ms(t):
        return eq_spatial_map(t, m.spatial_attention, training)

    has_c, has_s = m.channel_attention is not None, m.spatial_attention is not None
    if has_c and not has_s:
        return mc(x) * x
    if has_s and not has_c:
        return ms(x) * x
    if m.arrangement == 'channel_first':
        f1 = mc(x) * x
        return ms(f1) * f1
    if m.arrangement == 'spatial_first':
        f1 = ms(x) * x
        return mc(f1) * f1
    return mc(x) * ms(x) * x  # parallel


# ---- tests -----------------------------------------------------------------------------

@pytest.mark.parametrize('options', CBAM_OPTIONS, ids=_ids(CBAM_OPTIONS))
@pytest.mark.parametrize('training', [False, True], ids=['eval', 'train'])
def test_cbam_matches_equations_float64(options, training):
    m = randomize_(CBAM(32, **options)).double().train(training)
    x = torch.randn(3, 32, 9, 11, dtype=torch.float64)
    expected = eq_cbam(x, m, training)
    got = m(x)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_se_matches_equations_float64():
    m = randomize_(SE(48, ratio=8)).double()
    x = torch.randn(2, 48, 7, 5, dtype=torch.float64)
    z = x.mean(dim=(2, 3))
    s = torch.sigmoid(torch.relu(z @ m.fc1.weight.t() + m.fc1.bias) @ m.fc2.weight.t() +
                      m.fc2.bias)
    torch.testing.assert_close(m(x), x * s[:, :, None, None], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('options', CBAM_OPTIONS, ids=_ids(CBAM_OPTIONS))
def test_cbam_shape_dtype_and_gradients_reach_every_parameter(options):
    m = randomize_(CBAM(64, **options)).train()
    x = torch.randn(2, 64, 13, 10, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_se_shape_dtype_and_gradients_reach_every_parameter():
    m = SE(64)
    x = torch.randn(2, 64, 5, 6, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    out.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize('module', [lambda: CBAM(32), lambda: SE(32)], ids=['CBAM', 'SE'])
def test_double_and_half_dtypes_are_kept(module):
    m = module().double()
    assert m(torch.randn(1, 32, 4, 4, dtype=torch.float64)).dtype == torch.float64
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = module()(torch.randn(1, 32, 4, 4).bfloat16())
    assert out.dtype == torch.bfloat16


def test_cbam_official_initialisation():
    m = CBAM(64)
    sa, ca = m.spatial_attention, m.channel_attention
    assert torch.all(sa.bn.weight == 0) and torch.all(sa.bn.bias == 0)
    assert torch.all(ca.fc1.bias == 0) and torch.all(ca.fc2.bias == 0)
    # kaiming_normal fan_out: std = sqrt(2 / (out_channels * k * k)) = sqrt(2/49)
    assert abs(sa.conv.weight.std().item() - (2 / 49) ** 0.5) < 0.08
    # The spatial gate starts at sigmoid(0) = 0.5 everywhere.
    x = torch.randn(2, 64, 6, 6)
    torch.testing.assert_close(sa(x), torch.full((2, 1, 6, 6), 0.5))


def test_parameter_names_follow_the_modules():
    keys = set(CBAM(32).state_dict())
    assert {'channel_attention.fc1.weight', 'channel_attention.fc1.bias',
            'channel_attention.fc2.weight', 'channel_attention.fc2.bias',
            'spatial_attention.conv.weight', 'spatial_attention.bn.weight',
            'spatial_attention.bn.running_var'} <= keys
    assert set(SE(32).state_dict()) == {'fc1.weight', 'fc1.bias', 'fc2.weight', 'fc2.bias'}


@pytest.mark.parametrize('pool,kernel', list(itertools.product(['avg', 'max'], [1, 3])))
def test_small_channel_counts_work(pool, kernel):
    m = CBAM(2, ratio=2, channel_pool=pool, spatial_kernel=kernel)
    assert m(torch.randn(1, 2, 3, 3)).shape == (1, 2, 3, 3)
