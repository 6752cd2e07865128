"""The fused C++ kernels of CBAM inference on CPU (cbam_mmdet/ops/csrc)."""
import contextlib

import pytest
import torch

from cbam_mmdet import CBAM, SE
from cbam_mmdet.ops import cpu_kernels
from test_fast_attention import pair

SHAPES = [(2, 32, 9, 11), (1, 64, 16, 16), (3, 48, 1, 7), (2, 128, 5, 3),
          (1, 16, 70, 90), (2, 2048, 3, 4), (2, 13, 6, 10)]  # 13: 8 channels + 5 alone
LAYOUTS = pytest.mark.parametrize('layout', ['nchw', 'channels_last'])


def laid_out(x, layout):
    """x in the memory layout named ``layout``."""
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
        assert x.dim() != 4 or x.shape[1] == 1 or x.shape[2] * x.shape[3] == 1 or \
            not x.is_contiguous()
    return x


def assert_layout(y, layout):
    fmt = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)


def assert_as_close_as_reference(got, want, exact):
    """``got`` as close to the float64 evaluation ``exact`` as the float32 reference's
    ``want`` is (within 4x, plus a relative 1e-6)."""
    err = (got.double() - exact).abs().max().item()
    err_ref = (want.double() - exact).abs().max().item()
    assert err <= 4 * err_ref + 1e-6 * exact.abs().max().item(), (err, err_ref)


@contextlib.contextmanager
def num_threads(threads):
    """torch's intra-op threads set to ``threads`` inside the block."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def test_cpu_kernels_are_built():
    assert cpu_kernels.kernels() is not None, (
        'cbam_mmdet.ops._cpu_kernels is missing: `python setup.py build_ext --inplace` '
        '(make setup runs it) builds it')


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    real = cpu_kernels.cbam
    monkeypatch.setattr(cpu_kernels, 'cbam', lambda *a: calls.append(a[1].shape) or real(*a))
    return calls


@pytest.fixture
def se_kernel_calls(monkeypatch):
    calls = []
    real = cpu_kernels.se
    monkeypatch.setattr(cpu_kernels, 'se', lambda *a: calls.append(1) or real(*a))
    return calls


@LAYOUTS
@pytest.mark.parametrize('shape', SHAPES, ids=str)
@pytest.mark.parametrize('bn_training', [False, True], ids=['bn_eval', 'bn_train'])
def test_cpu_kernels_match_reference(shape, bn_training, layout, kernel_calls):
    """Outputs as close to a float64 evaluation as the float32 reference's (the sums over
    channels run in another order; BatchNorm with random statistics amplifies their
    rounding), and BatchNorm's running statistics equal."""
    ref, fast = pair(CBAM, shape[1], ratio=8)
    truth = CBAM(shape[1], ratio=8, implementation='reference').double()
    truth.load_state_dict(ref.state_dict())
    x = laid_out(torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3, layout)
    for m in (ref, fast, truth):
        m.train(bn_training)
    with torch.no_grad():
        want = ref(x)
        got = fast(x)
        exact = truth(x.double())
    assert kernel_calls == [shape]
    assert_layout(got, layout)
    assert_as_close_as_reference(got, want, exact)
    for (name, b), (_, b_ref) in zip(fast.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, b_ref, msg=name)  # running statistics in BN training


@LAYOUTS
def test_cpu_kernels_each_pass_matches_torch(layout):
    kern = cpu_kernels.kernels()
    x = laid_out(torch.randn(2, 43, 33, 17), layout)  # channels in blocks of 8 and 3 alone
    a = torch.rand(2, 43)
    s = torch.rand(2, 1, 33, 17)
    pooled = kern.channel_pool(x)
    torch.testing.assert_close(pooled[0], x.mean((2, 3)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pooled[1], x.amax((2, 3)), rtol=0, atol=0)
    w1, b1, w2, b2 = torch.randn(5, 43), torch.randn(5), torch.randn(43, 5), torch.randn(43)
    gate = torch.sigmoid(torch.relu(x.mean((2, 3)) @ w1.T + b1) @ w2.T + b2)
    se_out = torch.empty_like(x)
    kern.se_eval(x, w1, b1, w2, b2, se_out)
    assert_layout(se_out, layout)
    torch.testing.assert_close(se_out, x * gate[:, :, None, None], rtol=1e-5, atol=1e-6)
    # chunks of 4096, a tail of 1; the gate's logit is the average itself
    big = laid_out(torch.randn(2, 3, 70, 67) + 5, layout)
    eye = torch.eye(3)
    big_out = torch.empty_like(big)
    kern.se_eval(big, eye, torch.full((3,), 10.0), eye, torch.full((3,), -10.0), big_out)
    want = big.double() * torch.sigmoid(big.double().mean((2, 3)))[:, :, None, None]
    torch.testing.assert_close(big_out.double(), want, rtol=1e-6, atol=0)
    y = x * a[:, :, None, None]
    desc = kern.spatial_pool(x, a)
    torch.testing.assert_close(desc[:, :1], y.amax(1, keepdim=True), rtol=0, atol=0)
    torch.testing.assert_close(desc[:, 1:], y.mean(1, keepdim=True), rtol=1e-5, atol=1e-6)
    out = torch.empty_like(x)
    kern.scale(x, a, s, out)
    assert_layout(out, layout)
    torch.testing.assert_close(out, y * s, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match='float32 CPU tensor .*contiguous NCHW or '
                       'channels_last'):
        kern.channel_pool(x.double())
    with pytest.raises(RuntimeError, match='float32 CPU tensor .*contiguous NCHW or '
                       'channels_last'):
        kern.se_eval(x[:, :, ::2], w1, b1, w2, b2, se_out)
    with pytest.raises(RuntimeError, match='w2 must be a contiguous float32 CPU tensor'):
        kern.se_eval(x, w1, b1, w2[:4], b2, se_out)
    with pytest.raises(RuntimeError, match='contiguous NCHW or channels_last'):
        kern.spatial_pool(x[:, :, ::2], a)
    other = 'nchw' if layout == 'channels_last' else 'channels_last'
    with pytest.raises(RuntimeError, match="out must have x's shape and memory layout"):
        kern.scale(x, a, s, laid_out(torch.empty(x.shape), other))


@LAYOUTS
def test_cpu_kernels_propagate_nan_and_inf_like_the_reference(layout, kernel_calls):
    ref, fast = pair(CBAM, 32, ratio=8)
    x = torch.randn(3, 32, 6, 7)
    x[0, 3, 2, 2] = float('nan')
    x[1, 5, 1, 4] = float('inf')
    x[2, 6, 0, 0] = -float('inf')
    x = laid_out(x, layout)
    with torch.no_grad():
        want = ref.eval()(x)
        got = fast.eval()(x)
    assert kernel_calls
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    torch.testing.assert_close(got, want, equal_nan=True)
    kern = cpu_kernels.kernels()
    pooled = kern.channel_pool(x)
    assert torch.isnan(pooled[1, 0, 3]) and torch.isnan(pooled[0, 0, 3])
    assert pooled[1, 1, 5] == float('inf')
    se_ref, se_fast = pair(SE, 32, ratio=8)
    with torch.no_grad():
        se_want = se_ref.eval()(x)
        se_got = torch.empty_like(x)
        kern.se_eval(x, se_fast.fc1.weight, se_fast.fc1.bias, se_fast.fc2.weight,
                     se_fast.fc2.bias, se_got)
    assert torch.isnan(se_want[0]).all()  # the NaN reaches every gate of sample 0
    assert torch.equal(torch.isnan(se_got), torch.isnan(se_want))
    torch.testing.assert_close(se_got, se_want, equal_nan=True)
    desc = kern.spatial_pool(x, torch.ones(3, 32))
    assert torch.isnan(desc[0, 0, 2, 2]) and desc[1, 0, 1, 4] == float('inf')


@pytest.mark.parametrize('threads', [1, 2, 3, 5])
@pytest.mark.parametrize('kernel', [3, 7])
@pytest.mark.parametrize('shape', [(2, 24, 37, 13), (1, 40, 64, 9), (3, 8, 6, 5),
                                   (1, 512, 41, 130), (1, 200, 9, 7)], ids=str)
@LAYOUTS
def test_cpu_gate_call_matches_reference_across_threads(threads, kernel, shape, layout,
                                                        kernel_calls):
    """BatchNorm in running statistics: one C++ call forms the descriptor (the threads
    split the channels and combine their partial maps; channels_last: they split the
    pixels), the gate (the threads split the rows, whose 7x7 neighbourhoods cross the
    splits) and the scale; the maximum sits on a row where two threads' rows meet. The
    pooling over H x W splits the pixels of a channels_last map over the threads and sums
    chunks of 4096 in descending blocks of 64 pixels (1 x 512 x 41 x 130), and on a small
    map, too few pixels for every thread, the channels into blocks as well (1 x 200 x 9 x
    7)."""
    ref, fast = pair(CBAM, shape[1], ratio=4, spatial_kernel=kernel)
    truth = CBAM(shape[1], ratio=4, spatial_kernel=kernel, implementation='reference')
    truth.load_state_dict(ref.state_dict())
    truth.double()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 2
    x[0, 1, shape[2] // 2, 2] = 40.0  # the maximum, on a boundary between two ranges
    x = laid_out(x, layout)
    with num_threads(threads), torch.no_grad():
        want = ref.eval()(x)
        exact = truth.eval()(x.double())
        x_in = x.clone()
        got = fast.eval()(x_in)
    assert kernel_calls == [shape]
    torch.testing.assert_close(x_in, x, rtol=0, atol=0)  # the input is not written
    assert_layout(got, layout)
    assert_as_close_as_reference(got, want, exact)


@LAYOUTS
@pytest.mark.parametrize('shape', SHAPES, ids=str)
def test_cpu_kernels_se_matches_reference(shape, layout, se_kernel_calls):
    ref, fast = pair(SE, shape[1], ratio=8)
    truth = SE(shape[1], ratio=8, implementation='reference').double()
    truth.load_state_dict(ref.state_dict())
    x = laid_out(torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3, layout)
    with torch.no_grad():
        want = ref.eval()(x)
        got = fast.eval()(x)
        exact = truth.eval()(x.double())
    assert se_kernel_calls == [1]
    assert_layout(got, layout)
    assert_as_close_as_reference(got, want, exact)


@pytest.mark.parametrize('threads', [1, 2, 3, 5])
@pytest.mark.parametrize('shape', [(2, 24, 37, 13), (1, 512, 41, 130), (3, 7, 6, 5),
                                   (1, 200, 9, 7)], ids=str)
@LAYOUTS
def test_cpu_se_call_matches_reference_across_threads(threads, shape, layout,
                                                      se_kernel_calls):
    """SE in one C++ call: the threads split the channel planes (NCHW) or the pixels
    (channels_last, 128 or more per thread, else the channels as well), each thread's in
    descending order for the average and ascending for the scale, into a new tensor."""
    ref, fast = pair(SE, shape[1], ratio=4)
    truth = SE(shape[1], ratio=4, implementation='reference')
    truth.load_state_dict(ref.state_dict())
    truth.double()
    x = laid_out(torch.randn(shape, generator=torch.Generator().manual_seed(4)) * 2, layout)
    with num_threads(threads), torch.no_grad():
        want = ref.eval()(x)
        exact = truth.eval()(x.double())
        x_in = x.clone()
        got = fast.eval()(x_in)
    assert se_kernel_calls == [1]
    assert got.data_ptr() != x_in.data_ptr()
    torch.testing.assert_close(x_in, x, rtol=0, atol=0)
    assert_layout(got, layout)
    assert_as_close_as_reference(got, want, exact)


def test_cpu_kernels_mlp_gate_matches_the_mlp():
    kern = cpu_kernels.kernels()
    g = torch.Generator().manual_seed(1)
    pooled = torch.randn(2, 3, 96, generator=g)
    w1, b1 = torch.randn(6, 96, generator=g), torch.randn(6, generator=g)
    w2, b2 = torch.randn(96, 6, generator=g), torch.randn(96, generator=g)
    mlp = [w2 @ torch.relu(w1 @ p.T + b1[:, None]) + b2[:, None] for p in pooled]
    want = torch.sigmoid(mlp[0] + mlp[1]).T
    torch.testing.assert_close(kern.mlp_gate(pooled, w1, b1, w2, b2), want)
    torch.testing.assert_close(kern.mlp_gate(pooled[:1], w1, b1, w2, b2),
                               torch.sigmoid(mlp[0]).T)
    with pytest.raises(RuntimeError, match='w1 must be a contiguous float32'):
        kern.mlp_gate(pooled, w1.T, b1, w2, b2)


@pytest.mark.parametrize('bn_training', [False, True], ids=['bn_eval', 'bn_train'])
def test_cpu_kernels_take_a_model_converted_to_channels_last(bn_training, kernel_calls):
    """``model.to(memory_format=torch.channels_last)`` also lays the spatial
    convolution's weight out channels_last: the kernels still take the call."""
    ref, fast = pair(CBAM, 24, ratio=4)
    fast = fast.to(memory_format=torch.channels_last)
    assert not fast.spatial_attention.conv.weight.is_contiguous()
    x = laid_out(torch.randn(2, 24, 15, 11, generator=torch.Generator().manual_seed(2)),
                 'channels_last')
    ref.train(bn_training)
    fast.train(bn_training)
    with torch.no_grad():
        want = ref(x)
        got = fast(x)
    assert kernel_calls == [x.shape]
    assert_layout(got, 'channels_last')
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
