"""The fast CBAM/SE paths against the reference forward, their dispatch, and the benchmark."""
import copy
import math
import os.path as osp
import sys
import types

import pytest
import torch

from cbam_mmdet import CBAM, SE
from cbam_mmdet.ops import (ENV_VAR, GRAPH_BY_DEFAULT, cbam_cpu, cuda_graph, select_backend,
                             triton_available)
from test_attention_modules import randomize_

CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not (CUDA and triton_available()),
                                  reason='needs CUDA and Triton')
SHAPES = [(2, 32, 9, 11), (1, 64, 16, 16), (3, 48, 1, 7), (2, 128, 5, 3)]


def pair(cls, channels, device='cpu', implementation='fast', **kwargs):
    """A reference module and a fast one with the same weights and buffers."""
    ref = randomize_(cls(channels, implementation='reference', **kwargs)).to(device)
    fast = cls(channels, implementation=implementation, **kwargs).to(device)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def run(module, x, grad, training, autocast_dtype=None):
    module.train(training)
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float16,
                        enabled=autocast_dtype is not None):
        out = module(x)
    out.backward(grad)
    grads = {n: p.grad for n, p in module.named_parameters()}
    return out.detach(), x.grad, grads, {n: b.clone() for n, b in module.named_buffers()}


def assert_same(fast, ref, rtol, atol):
    out, dx, grads, buffers = fast
    out_r, dx_r, grads_r, buffers_r = ref
    torch.testing.assert_close(out, out_r, rtol=rtol, atol=atol)
    assert out.stride() == out_r.stride()
    torch.testing.assert_close(dx, dx_r, rtol=rtol, atol=atol)
    assert grads.keys() == grads_r.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_r[name], rtol=rtol, atol=atol,
                                   msg=lambda m: f'{name}: {m}')
    for name in buffers:
        torch.testing.assert_close(buffers[name], buffers_r[name], msg=name)


def make_input(shape, channels_last, device='cpu', dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(device, dtype)
    grad = torch.randn(shape, generator=g).to(device, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        grad = grad.contiguous(memory_format=torch.channels_last)
    return x, grad


# ---- CPU: the PyTorch fast path --------------------------------------------------------

@pytest.mark.parametrize('shape', SHAPES, ids=str)
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_cbam_cpu_fast_path_matches_reference(shape, channels_last, training):
    ref, fast = pair(CBAM, shape[1], ratio=8)
    x, grad = make_input(shape, channels_last)
    assert_same(run(fast, x, grad, training), run(ref, x, grad, training),
                rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape', SHAPES, ids=str)
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_se_cpu_fast_path_matches_reference(shape, channels_last):
    ref, fast = pair(SE, shape[1], ratio=8)
    x, grad = make_input(shape, channels_last)
    assert_same(run(fast, x, grad, True), run(ref, x, grad, True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kernel', [3, 7])
def test_cbam_fast_path_float64_and_kernel_sizes(kernel):
    ref, fast = pair(CBAM, 32, ratio=4, spatial_kernel=kernel)
    ref, fast = ref.double(), fast.double()
    x, grad = make_input((2, 32, 6, 7), False, dtype=torch.float64)
    assert_same(run(fast, x, grad, True), run(ref, x, grad, True), rtol=1e-10, atol=1e-12)


def test_cbam_fast_inference_does_not_modify_its_input_and_keeps_dtype():
    ref, fast = pair(CBAM, 32)
    x = torch.randn(2, 32, 8, 8)
    x_copy = x.clone()
    with torch.no_grad():
        out = fast.eval()(x)
    torch.testing.assert_close(x, x_copy, rtol=0, atol=0)
    torch.testing.assert_close(out, ref.eval()(x))
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        out_bf16 = fast(x.bfloat16())
        ref_bf16 = ref(x.bfloat16())
    assert out_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(out_bf16.float(), ref_bf16.float(), rtol=2e-2, atol=2e-2)


def test_cpu_fast_path_is_the_default_on_cpu(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    x = torch.randn(1, 32, 4, 4)
    assert select_backend('auto', x, has_fast_path=True) == 'torch'
    assert CBAM(32).implementation == 'auto' and SE(32).implementation == 'auto'
    calls = []
    real = cbam_cpu.cbam_forward
    monkeypatch.setattr(cbam_cpu, 'cbam_forward', lambda *a: calls.append(1) or real(*a))
    CBAM(32)(x)
    assert calls == [1]
    CBAM(32, implementation='reference')(x)
    CBAM(32, arrangement='parallel')(x)  # no fast path for this option: reference
    assert calls == [1]


def test_environment_variable_forces_the_reference(monkeypatch):
    x = torch.randn(1, 32, 4, 4)
    monkeypatch.setenv(ENV_VAR, 'reference')
    assert select_backend('auto', x, has_fast_path=True) == 'reference'
    assert select_backend('fast', x, has_fast_path=True) == 'torch'  # explicit argument wins
    monkeypatch.setenv(ENV_VAR, 'fast')
    with pytest.raises(ValueError, match='no fast path'):
        select_backend('auto', x, has_fast_path=False)
    monkeypatch.setenv(ENV_VAR, 'bogus')
    with pytest.raises(ValueError, match=ENV_VAR):
        select_backend('auto', x, has_fast_path=True)
    if not (CUDA and triton_available()):
        monkeypatch.setenv(ENV_VAR, 'triton')
        with pytest.raises(ValueError, match='Triton'):
            select_backend('auto', x, has_fast_path=True)


def test_invalid_implementation_is_refused():
    with pytest.raises(ValueError, match='implementation must be one of'):
        CBAM(32, implementation='triton')
    with pytest.raises(ValueError, match='implementation must be one of'):
        SE(32, implementation=None)
    with pytest.raises(ValueError, match="implementation='fast' needs"):
        CBAM(32, arrangement='spatial_first', implementation='fast')


def test_state_dict_and_parameters_do_not_depend_on_the_implementation():
    for cls in (CBAM, SE):
        a, b = cls(64, implementation='reference'), cls(64)
        assert list(a.state_dict()) == list(b.state_dict())
        assert sum(p.numel() for p in a.parameters()) == \
            sum(p.numel() for p in b.parameters())


# ---- CUDA: the Triton kernels (skipped without CUDA and Triton) ------------------------

def assert_as_accurate_as_reference(got, want, truth, factor=4.0, floor=1e-4):
    """Every tensor of ``got`` (fast path) is within ``factor`` times the largest error
    of ``want`` (the float32 reference) against ``truth`` (the reference in float64),
    plus ``floor`` times the tensor's largest value.

    Sums over thousands of terms (gradients of the pooled descriptors, of the MLP
    weights) round differently in another order; where their terms cancel, the float32
    reference itself is more than 1e-3 (relative) away from float64 at some elements
    (e.g. C=2048, 25x38). The reference's own error moves by 10x from one random input to
    the next, so the factor needs a floor of its own: on an H200, over 24 random inputs of
    shape 2x1024x25x38 (CBAM, train and eval), the fast path's largest error was at most
    4.3e-5 of the tensor's largest value (the reference's at most 5.1e-5), while a floor
    of 1e-5 failed this shape once in eval. A wrong gradient is off by the gradient's
    size, far above this bound."""
    names = ['output', 'dx'] + [f'grad {k}' for k in got[2]]
    triples = [(got[0], want[0], truth[0]), (got[1], want[1], truth[1])] + [
        (got[2][k], want[2][k], truth[2][k]) for k in got[2]]
    for name, (g, w, t) in zip(names, triples):
        err = (g.double() - t).abs().max().item()
        err_ref = (w.double() - t).abs().max().item()
        bound = factor * err_ref + floor * t.abs().max().item() + 1e-12
        assert err <= bound, (f'{name}: error {err:.3g} against float64 is over {bound:.3g} '
                              f'(float32 reference: {err_ref:.3g})')
    for name in got[3]:
        torch.testing.assert_close(got[3][name], want[3][name], msg=name)


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('shape', SHAPES + [(2, 256, 50, 76), (2, 1024, 25, 38),
                                            (2, 2048, 5, 7), (1, 512, 48, 64),
                                            (2, 64, 96, 96), (2, 16, 192, 176),
                                            (2, 16, 160, 320), (2, 512, 90, 100),
                                            (1, 1024, 90, 100)], ids=str)
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_triton_fast_path_matches_reference_fp32(cls, shape, channels_last, training,
                                                 monkeypatch):
    """Shapes with C x H x W like ResNet's late stages take the kernels' channel splits
    and the MLP spread over the pooling programs; 2x2048x5x7 (256 hidden units) the
    MLP's backward on wider channel blocks (``MLP_BWD_PROGRAMS``); 1x512x48x64 (over
    2048 pixels, the MLP spread over the pooling programs) CBAM's channel pooling on
    512-pixel blocks; 2x64x96x96 and 2x16x192x176 the backward's pixel blocks of large
    maps (64 x 64 at two warps; 32 x 128, wide, at one); 2x16x160x320 the spatial
    convolution's backward on 512-pixel blocks (W a multiple of 16, 200 programs), the
    others on 128 (2x16x192x176, 2x64x96x96) and 64 (2x256x50x76 and smaller);
    2x512x90x100 the direct pooling pass over large maps, one channel per program, with
    CBAM's gate formed by its last program (``LARGE_POOL_BLOCK``); 1x1024x90x100 the same
    where the passes over pixels also split the channels (the same last program sets
    the descriptors and zeroes dL/ds)."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    ref, fast = pair(cls, shape[1], device='cuda', implementation='auto', ratio=8)
    ref64 = copy.deepcopy(ref).double()
    x, grad = make_input(shape, channels_last, device='cuda')
    assert select_backend(fast.implementation, x, True) == 'triton'
    with torch.no_grad():
        monkeypatch.setenv(ENV_VAR, 'eager')
        assert select_backend('auto', x, True) == 'triton'  # inference: Triton
        monkeypatch.setenv(ENV_VAR, 'triton')
    got = run(fast, x, grad, training)
    assert got[0].stride() == x.stride()
    assert_as_accurate_as_reference(got, run(ref, x, grad, training),
                                    run(ref64, x.double(), grad.double(), training))
    with torch.no_grad():  # the launch-lean inference path (no autograd)
        out = fast.train(training)(x)
        torch.testing.assert_close(out, ref.train(training)(x), rtol=1e-3, atol=1e-4)
    assert out.stride() == x.stride()


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('shape', [(2, 64, 16, 16), (2, 256, 50, 76)], ids=str)
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_triton_fast_path_matches_reference_fp16_autocast(cls, shape, channels_last,
                                                          monkeypatch):
    """fp16 under autocast: outputs against the fp16 reference; gradients against the
    reference in float32 on the same (fp16-valued) inputs, since the fp16 reference
    rounds M_c F to fp16 before its channel max, which moves the argmax (and so the max's
    gradient) at a few positions where two channels are within fp16 rounding."""
    monkeypatch.setenv(ENV_VAR, 'triton')
    ref, fast = pair(cls, shape[1], device='cuda', implementation='auto', ratio=8)
    x, grad = make_input(shape, channels_last, device='cuda', dtype=torch.float16)
    got = run(fast, x, grad, True, autocast_dtype=torch.float16)
    want16 = run(copy.deepcopy(ref), x, grad, True, autocast_dtype=torch.float16)
    want32 = run(ref, x.float(), grad.float(), True)
    assert got[0].dtype == torch.float16
    torch.testing.assert_close(got[0], want16[0], rtol=2e-2, atol=2e-2)
    dx, dx_ref = got[1].float(), want32[1]
    far = ~torch.isclose(dx, dx_ref, rtol=2e-2, atol=2e-2)
    assert far.float().mean().item() <= 1e-3, f'{far.sum().item()} of {far.numel()} differ'
    for name, g in got[2].items():
        torch.testing.assert_close(g, want32[2][name], rtol=3e-2, atol=3e-2,
                                   msg=lambda m: f'{name}: {m}')


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('magnitude', [1e4, 1e-4])
@pytest.mark.parametrize('backend', ['triton', 'torch'])
def test_cuda_fast_paths_fp16_extreme_activations_stay_finite(cls, magnitude, backend,
                                                              monkeypatch):
    monkeypatch.setenv(ENV_VAR, backend)
    m = cls(64).cuda().train()
    x = (torch.randn(2, 64, 12, 12, device='cuda') * magnitude).half().requires_grad_()
    with torch.autocast('cuda', dtype=torch.float16):
        out = m(x)
    out.float().mean().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    for p in m.parameters():
        assert torch.isfinite(p.grad).all()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16):
        assert torch.isfinite(m.eval()(x)).all()


# ---- CUDA graphs: dispatch and cache policy (CPU, with a stand-in for the capture) ----

class FakeCapture:
    """Stands in for cuda_graph.capture on CPU: records captures, replays eagerly."""

    def __init__(self, fail=False):
        self.count = 0
        self.fail = fail

    def __call__(self, fn, x):
        if self.fail:
            raise RuntimeError('capture not supported')
        self.count += 1
        return lambda t: fn(t).clone()


@pytest.fixture
def fake_capture(monkeypatch):
    fake = FakeCapture()
    monkeypatch.setattr(cuda_graph, 'capturable', lambda module, x: True)
    monkeypatch.setattr(cuda_graph, 'capture', fake)
    return fake


def test_graph_dispatch_only_for_cuda_inference(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    cpu = torch.randn(1, 8, 4, 4)
    cuda = types.SimpleNamespace(is_cuda=True, dtype=torch.float16)  # dispatch reads these
    with torch.no_grad():
        assert select_backend('graph', cpu, True) == 'torch'
        assert select_backend('graph', cuda, True) == 'graph'
        assert select_backend('eager', cuda, True) != 'graph'
        assert (select_backend('auto', cuda, True) == 'graph') == GRAPH_BY_DEFAULT
        assert select_backend('graph', cuda, False) == 'reference'  # no fast path
        monkeypatch.setenv(ENV_VAR, 'eager')
        assert select_backend('auto', cuda, True) != 'graph'
        monkeypatch.setenv(ENV_VAR, 'graph')
        assert select_backend('auto', cuda, True) == 'graph'
        monkeypatch.setenv(ENV_VAR, 'reference')
        assert select_backend('auto', cuda, True) == 'reference'
    assert select_backend('graph', cuda, True) != 'graph'  # autograd on: eager
    assert not cuda_graph.capturable(CBAM(32).eval(), cpu)


def test_graph_cache_captures_repeated_signatures_and_recaptures_new_weights(fake_capture):
    ref, m = pair(CBAM, 16, implementation='eager', ratio=4)
    ref.eval(), m.eval()
    fn = lambda t: cbam_cpu.cbam_forward(t, m.channel_attention, m.spatial_attention)  # noqa
    a, b = torch.randn(2, 16, 5, 6), torch.randn(1, 16, 7, 3)
    with torch.no_grad():
        for i, x in enumerate([a, a, a, b, a, b, b]):
            torch.testing.assert_close(cuda_graph.run(m, x, fn), ref(x))
        assert fake_capture.count == 2  # a on its 2nd call, b on its 2nd call
        cache = cuda_graph.cache_of(m)
        assert len(cache.calls) == 2 and not cache.disabled
        new = randomize_(CBAM(16, ratio=4, implementation='reference'), seed=5).eval()
        m.load_state_dict(new.state_dict())  # same storage, new versions: new signature
        for _ in range(3):
            torch.testing.assert_close(cuda_graph.run(m, a, fn), new(a))
        assert fake_capture.count == 3
    with torch.no_grad(), torch.inference_mode():
        cuda_graph.run(m, a, fn)
        cuda_graph.run(m, a, fn)
    assert fake_capture.count == 4  # inference mode is part of the signature


def test_graph_signature_follows_a_parameter_laid_out_anew():
    """A parameter given another memory format over the same storage (same address and
    version) gives a new signature: a graph captured for one layout is not replayed for
    the other."""
    m = CBAM(16, ratio=4)
    x = torch.randn(1, 16, 5, 6)
    before = cuda_graph.signature(m, x)
    weight = m.spatial_attention.conv.weight
    ptr, version = weight.data_ptr(), weight._version
    cl_strides = weight.contiguous(memory_format=torch.channels_last).stride()
    weight.data = weight.data.as_strided(weight.shape, cl_strides)
    assert (weight.data_ptr(), weight._version) == (ptr, version)
    assert cuda_graph.signature(m, x) != before


def test_graph_cache_is_bounded_and_switches_off_when_shapes_vary(fake_capture):
    m = SE(8, ratio=4).eval()
    fn = lambda t: cbam_cpu.se_forward(t, m)  # noqa: E731
    with torch.no_grad():
        for size in range(1, cuda_graph.MAX_GRAPHS + 2):
            x = torch.randn(1, 8, size, 3)
            cuda_graph.run(m, x, fn)
            cuda_graph.run(m, x, fn)
        cache = cuda_graph.cache_of(m)
        assert len(cache.calls) == cuda_graph.MAX_GRAPHS and cache.evictions == 1
        for size in range(10, 10 + cuda_graph.MAX_EVICTIONS):
            x = torch.randn(1, 8, size, 3)
            cuda_graph.run(m, x, fn)
            torch.testing.assert_close(cuda_graph.run(m, x, fn), m.reference_forward(x))
    assert cache.disabled and not cache.calls
    count = fake_capture.count
    with torch.no_grad():
        cuda_graph.run(m, x, fn), cuda_graph.run(m, x, fn)
    assert fake_capture.count == count


def test_graph_capture_failure_falls_back_and_logs_once(monkeypatch, caplog):
    monkeypatch.setattr(cuda_graph, 'capturable', lambda module, x: True)
    monkeypatch.setattr(cuda_graph, 'capture', FakeCapture(fail=True))
    monkeypatch.setattr(cuda_graph, '_logged', set())
    m = SE(8, ratio=4).eval()
    fn = lambda t: cbam_cpu.se_forward(t, m)  # noqa: E731
    x = torch.randn(2, 8, 4, 4)
    with torch.no_grad(), caplog.at_level('WARNING', logger=cuda_graph.__name__):
        for _ in range(4):
            torch.testing.assert_close(cuda_graph.run(m, x, fn), m.reference_forward(x))
        m2 = SE(8, ratio=4).eval()
        for _ in range(2):
            cuda_graph.run(m2, x, lambda t: cbam_cpu.se_forward(t, m2))
    assert cuda_graph.cache_of(m).disabled
    assert len([r for r in caplog.records if 'capture' in r.getMessage()]) == 1


# ---- CUDA graphs on the GPU (skipped without CUDA) --------------------------------------

@pytest.mark.skipif(not CUDA, reason='needs CUDA')
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'fp16_autocast'])
def test_cuda_graph_path_matches_reference(cls, channels_last, amp, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    ref, m = pair(cls, 64, device='cuda', implementation='graph', ratio=8)
    ref.eval(), m.eval()
    dtype = torch.float16 if amp else torch.float32
    tol = dict(rtol=2e-2, atol=2e-2) if amp else dict(rtol=1e-3, atol=1e-4)
    shapes = [(2, 64, 24, 40), (1, 64, 13, 7)]
    inputs = [make_input(s, channels_last, device='cuda', dtype=dtype, seed=i)[0]
              for i, s in enumerate(shapes * 3)]
    outputs = []
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16, enabled=amp):
        for x in inputs:  # two shapes alternating
            assert select_backend(m.implementation, x, True) == 'graph'
            outputs.append(m(x))
        wanted = [ref(x) for x in inputs]
    cache = cuda_graph.cache_of(m)
    assert cache.captures == 2 and len(cache.calls) == 2  # both shapes replayed
    for out, want, x in zip(outputs, wanted, inputs):  # earlier outputs not overwritten
        assert out.dtype == x.dtype and out.stride() == x.stride()
        torch.testing.assert_close(out, want, **tol)
    assert len({o.data_ptr() for o in outputs}) == len(outputs)


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_cuda_graph_recaptures_after_load_state_dict(cls):
    ref, m = pair(cls, 32, device='cuda', implementation='graph', ratio=4)
    ref.eval(), m.eval()
    x = torch.randn(2, 32, 9, 11, device='cuda')
    with torch.inference_mode():
        for _ in range(3):
            torch.testing.assert_close(m(x), ref(x), rtol=1e-3, atol=1e-4)
        new = randomize_(cls(32, ratio=4, implementation='reference'), seed=7).cuda().eval()
        m.load_state_dict(new.state_dict())
        for _ in range(3):
            torch.testing.assert_close(m(x), new(x), rtol=1e-3, atol=1e-4)
    assert cuda_graph.cache_of(m).captures == 2
    m.train()
    x.requires_grad_()
    m(x).sum().backward()  # training: eager path with autograd
    assert x.grad is not None


# ---- the benchmark ---------------------------------------------------------------------

def test_benchmark_backbones_interleaved_with_ratios():
    from cbam_mmdet.benchmark import run_benchmark
    logs = []
    results = run_benchmark(variants=('baseline', 'cbam-ref', 'cbam'),
                            modes=('train', 'infer'), device='cpu', shape=(64, 64),
                            backbone_only=True, rounds=2, warmup=0, iters=1,
                            log=logs.append)
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


def test_benchmark_warns_where_plugin_calls_were_not_replayed_from_cpp():
    from cbam_mmdet.benchmark import format_replayed
    results = [
        dict(variant='baseline', mode='train'),
        dict(variant='se', mode='train', plugin_calls=16, replayed_calls=16,
             replay_expected=True),
        dict(variant='cbam', mode='infer', plugin_calls=16, replayed_calls=0,
             replay_expected=True),
        dict(variant='se-graph', mode='infer', plugin_calls=16, replayed_calls=0,
             replay_expected=False)]
    lines = format_replayed(results).splitlines()
    assert lines[0] == ('calls replayed from C++ per step: se train 16/16, '
                        'cbam infer 0/16, se-graph infer 0/16')
    assert len(lines) == 2 and lines[1].startswith(
        'WARNING: cbam infer: 0 of 16 plugin calls replayed from C++')
    assert 'fast paths:' in lines[1]


def test_benchmark_round_order_draws_every_place_and_never_repeats_a_model():
    """Every round runs every model once; over the rounds each model takes each place
    about equally often (a fixed or alternating order gives each a fixed place), and no
    model runs twice in a row across the turn of two rounds."""
    import random
    from cbam_mmdet.benchmark import round_order
    rng, last = random.Random(0), None
    places = [[0] * 4 for _ in range(4)]
    for _ in range(400):
        order = round_order(4, rng, last)
        assert sorted(order) == [0, 1, 2, 3] and order[0] != last
        for place, model in enumerate(order):
            places[model][place] += 1
        last = order[-1]
    assert all(70 <= count <= 130 for row in places for count in row), places
    assert round_order(1, rng, 0) == [0]


def test_benchmark_builds_each_variant_from_consecutive_seeds(monkeypatch):
    """A variant is ``seeds`` models built after torch.manual_seed(seed + i), the same
    seeds for every variant; detectors default to 3 models, backbones to 1."""
    from cbam_mmdet import benchmark
    built = []
    real = benchmark.build_model

    def recording(cfg, backbone_only):
        built.append(torch.initial_seed())
        return real(cfg, backbone_only)

    monkeypatch.setattr(benchmark, 'build_model', recording)
    results = benchmark.run_benchmark(
        variants=('baseline', 'se'), modes=('infer',), device='cpu', shape=(64, 64),
        backbone_only=True, rounds=2, warmup=0, iters=1, seed=5, seeds=2,
        log=lambda s: None)
    assert built == [5, 6, 5, 6]
    assert [r['variant'] for r in results] == ['baseline', 'se']
    assert results[0]['ratio'] == 1.0 and results[1]['ms'] > 0
    assert benchmark.default_seeds(backbone_only=False) == 3
    assert benchmark.default_seeds(backbone_only=True) == 1
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match=r'seeds \(models per variant\) must be'):
            benchmark.run_benchmark(variants=('baseline',), modes=('infer',), seeds=bad,
                                    backbone_only=True, shape=(64, 64), rounds=1,
                                    warmup=0, iters=1, log=lambda s: None)


def test_benchmark_median_interval_is_the_order_statistics_interval():
    """The distribution-free interval of the median: for 30 rounds the 10th and 21st
    smallest ratios (coverage 95.7%); too few rounds for 95% give the whole range."""
    import random
    from cbam_mmdet.benchmark import median_interval
    values = list(range(1, 31))
    random.Random(0).shuffle(values)
    assert median_interval(values) == (10, 21)
    assert median_interval([3, 1, 2, 5, 4]) == (1, 5)
    assert median_interval(list(range(1, 7))) == (1, 6)  # 6 values: j = 1, 96.9%
    # coverage of the true median of a skewed distribution, over many draws
    rng = random.Random(1)
    covered = 0
    for _ in range(2000):
        lo, hi = median_interval([rng.expovariate(1.0) for _ in range(30)])
        covered += lo <= math.log(2) <= hi
    assert 0.94 <= covered / 2000 <= 0.975


def test_benchmark_collects_garbage_between_timed_blocks_not_inside():
    """The collector is paused while steps are timed and collects once after the
    block; a cycle made by a step is gone when the block returns."""
    import gc
    import weakref
    from cbam_mmdet.benchmark import collector_frozen, time_steps

    class Node:
        pass

    seen, refs = [], []

    def step():
        seen.append(gc.isenabled())
        node = Node()
        node.self = node  # a cycle: only the collector frees it
        refs.append(weakref.ref(node))

    assert gc.isenabled()
    frozen_before = gc.get_freeze_count()
    with collector_frozen():
        assert gc.get_freeze_count() > frozen_before
        time_steps(step, 3, torch.device('cpu'), collect_outside=True)
        assert seen == [False] * 3 and gc.isenabled()
        assert all(r() is None for r in refs)
        seen.clear()
        time_steps(step, 1, torch.device('cpu'))
        assert seen == [True]
    assert gc.get_freeze_count() == 0


def test_benchmark_runs_with_the_collector_inside_the_steps():
    from cbam_mmdet.benchmark import run_benchmark
    results = run_benchmark(variants=('baseline', 'se'), modes=('infer',), device='cpu',
                            shape=(64, 64), backbone_only=True, rounds=2, warmup=1,
                            iters=1, collect_in_steps=True, log=lambda s: None)
    assert [r['variant'] for r in results] == ['baseline', 'se']
    assert all(r['ms'] > 0 for r in results)


def test_benchmark_sets_each_mode_once_outside_the_timed_steps(monkeypatch):
    """model.train() / eval() walk every module (more of them with plugins): the
    benchmark switches modes once per mode, as mmengine's loops do, not in every step."""
    import torch.nn as nn
    from mmdet.models.backbones import ResNet
    from cbam_mmdet.benchmark import run_benchmark
    calls = []
    real = nn.Module.train

    def counting_train(module, mode=True):
        if isinstance(module, ResNet):
            calls.append(mode)
        return real(module, mode)

    monkeypatch.setattr(nn.Module, 'train', counting_train)
    run_benchmark(variants=('baseline', 'se'), modes=('train', 'infer'), device='cpu',
                  shape=(64, 64), backbone_only=True, rounds=3, warmup=1, iters=2,
                  log=lambda s: None)
    # ResNet.train calls super().train once per switch: one switch per mode and variant
    assert calls == [True, True, False, False]


def test_benchmark_times_the_plugins_with_forward_hooks(monkeypatch):
    """The time inside the plugins comes from one more step per model and round, with
    forward hooks; the timed steps run without hooks."""
    from cbam_mmdet.benchmark import Runner, run_benchmark
    hooked = {}  # variant -> per step, whether its plugins had forward hooks
    real_step = Runner.infer_step

    def infer_step(self, images, samples):
        hooks = [bool(m._forward_hooks) for m in self.model.modules()
                 if isinstance(m, (CBAM, SE))]
        hooked.setdefault(self.name, []).append(any(hooks))
        return real_step(self, images, samples)

    monkeypatch.setattr(Runner, 'infer_step', infer_step)
    logs = []
    results = run_benchmark(variants=('baseline', 'se', 'cbam'), modes=('infer',),
                            device='cpu', shape=(64, 64), backbone_only=True, rounds=2,
                            warmup=1, iters=2, time_plugins=True, log=logs.append)
    by_name = {r['variant']: r for r in results}
    assert by_name['baseline']['plugin_ms'] == 0 and by_name['baseline']['plugin_share'] == 0
    for name in ('se', 'cbam'):
        r = by_name[name]
        assert 0 < r['plugin_ms'] < r['ms'] and r['plugin_share'] > 0
        # warm-up 1 and per round 2 timed steps without hooks, then 1 with them
        assert hooked[name] == [False] + [False, False, True] * 2
    assert 'in plugins ms' in logs[0]


def test_benchmark_variants_differ_only_by_implementation():
    from cbam_mmdet.benchmark import build_model, variant_config
    ref = build_model(variant_config('cbam-ref'), backbone_only=True)
    fast = build_model(variant_config('cbam'), backbone_only=True)
    base = build_model(variant_config('baseline'), backbone_only=True)
    assert list(ref.state_dict()) == list(fast.state_dict())
    assert ref.layer1[0].cbam.implementation == 'reference'
    assert fast.layer1[0].cbam.implementation == 'auto'
    assert not any('cbam' in k for k in base.state_dict())
    graph = build_model(variant_config('cbam-graph'), backbone_only=True)
    assert graph.layer1[0].cbam.implementation == 'graph'
    assert variant_config('se-eager').model.backbone.plugins[0].cfg.implementation == 'eager'
    with pytest.raises(ValueError, match='variant must be one of'):
        variant_config('cbam-fast')


def test_benchmark_mmdet_variants_are_the_configs_in_mmdets_resnet():
    """'<plugin>' is the config as shipped (FusedTailResNet); '<plugin>-mmdet' is the
    same model in mmdet's own ResNet, with the same keys and the suffix's implementation."""
    from mmdet.models.backbones.resnet import Bottleneck
    from cbam_mmdet.benchmark import build_model, variant_config
    from cbam_mmdet.models import FusedTailBottleneck
    assert variant_config('baseline').model.backbone.type == 'ResNet'
    for plugin in ('se', 'cbam'):
        shipped = build_model(variant_config(plugin), backbone_only=True)
        in_mmdet = build_model(variant_config(plugin + '-mmdet-ref'), backbone_only=True)
        assert type(shipped.layer1[0]) is FusedTailBottleneck
        assert type(in_mmdet.layer1[0]) is Bottleneck
        assert list(shipped.state_dict()) == list(in_mmdet.state_dict())
        assert getattr(in_mmdet.layer1[0], plugin).implementation == 'reference'
    r18 = 'configs/pretrained/faster_rcnn_r18_cbam_coco_imagenet_cbam.py'
    cfg = variant_config('cbam-mmdet', configs={'cbam': r18})
    assert cfg.model.backbone.type == 'PluginResNet'  # mmdet's BasicBlock takes no plugins


def test_benchmark_detector_steps_run():
    from cbam_mmdet.benchmark import run_benchmark
    results = run_benchmark(variants=('baseline', 'se'), modes=('train', 'infer'),
                            device='cpu', shape=(96, 128), rounds=1, warmup=0, iters=1,
                            log=lambda s: None)
    assert len(results) == 4 and all(r['ms'] > 0 for r in results)


def test_benchmark_fixed_proposals_give_every_model_the_same_work():
    """Detectors of other seeds and variants propose the same boxes and keep no
    detection; the backbone still gets gradients, and the learning rate of 0 keeps the
    weights (and so the proposals) through training steps."""
    from cbam_mmdet.benchmark import (Runner, build_model, fix_proposals, synthetic_batch,
                                      variant_config)
    device = torch.device('cpu')
    images, samples = synthetic_batch(2, (96, 128), device)
    proposals = []
    for name, seed in (('baseline', 0), ('se', 1)):
        torch.manual_seed(seed)
        model = build_model(variant_config(name), backbone_only=False)
        fix_proposals(model)
        runner = Runner(name, model, False, False, device, lr=0.0)
        loss = model.roi_head.loss
        model.roi_head.loss = lambda x, rpn, data, loss=loss: (
            proposals.append([r.bboxes.clone() for r in rpn]) or loss(x, rpn, data))
        weight = model.backbone.layer2[0].conv1.weight
        before = weight.detach().clone()
        runner.set_mode('train')
        runner.train_step(images, samples)
        runner.train_step(images, samples)
        assert weight.grad is not None and weight.grad.abs().sum() > 0
        assert torch.equal(weight, before)
        runner.set_mode('infer')
        with torch.no_grad():
            predictions = model(images, samples, mode='predict')
        assert [len(p.pred_instances) for p in predictions] == [0, 0]
    assert len(proposals) == 4
    for boxes in proposals[1:]:
        assert all(torch.equal(a, b) for a, b in zip(proposals[0], boxes))
    # with random output layers the models propose boxes of their own
    torch.manual_seed(0)
    free = build_model(variant_config('baseline'), backbone_only=False)
    assert free.rpn_head.rpn_cls.weight.abs().sum() > 0
    with pytest.raises(ValueError, match="lacks \\['rpn_head.rpn_cls'"):
        fix_proposals(torch.nn.Sequential())


def test_benchmark_learning_rate_follows_the_proposals(monkeypatch):
    from cbam_mmdet import benchmark
    built = []
    real = benchmark.Runner.__post_init__
    monkeypatch.setattr(benchmark.Runner, '__post_init__',
                        lambda self: built.append(self) or real(self))
    for random_proposals in (False, True):
        benchmark.run_benchmark(variants=('baseline',), modes=('infer',), device='cpu',
                                shape=(64, 64), rounds=1, warmup=0, iters=1, seeds=1,
                                random_proposals=random_proposals, log=lambda s: None)
    assert [r.optimizer.param_groups[0]['lr'] for r in built] == [0.0, 1e-4]
    assert built[0].model.rpn_head.rpn_cls.weight.abs().sum() == 0
    assert built[1].model.rpn_head.rpn_cls.weight.abs().sum() > 0


def test_benchmark_breakdown_counts_the_plugins_parameter_tensors():
    from cbam_mmdet.benchmark import run_benchmark
    logged = []
    results = run_benchmark(variants=('baseline', 'se', 'cbam'), modes=('train',),
                            device='cpu', shape=(64, 64), backbone_only=True, rounds=1,
                            warmup=0, iters=1, breakdown=True, log=logged.append)
    parts = {r['variant']: r for r in results}
    base = parts['baseline']['param_tensors']
    # 16 blocks: SE's two linear layers (weight, bias); CBAM's too, its 7x7 convolution
    # and its BatchNorm's weight and bias
    assert parts['se']['param_tensors'] - base == 16 * 4
    assert parts['cbam']['param_tensors'] - base == 16 * 7
    assert all(r['optimizer_ms'] > 0 and r['kernel_ms'] is None for r in results)
    table = logged[-1].splitlines()
    assert table[0].split()[:3] == ['variant', 'tensors', 'optimiser']
    assert [line.split()[0] for line in table[1:]] == ['baseline', 'se', 'cbam']
    assert table[1].split()[1] == str(base)
    with pytest.raises(ValueError, match="breakdown measures training steps: modes must "
                       "include 'train', got \\['infer'\\]"):
        run_benchmark(variants=('baseline',), modes=('infer',), backbone_only=True,
                      breakdown=True)
    with pytest.raises(ValueError, match='random_proposals applies to detectors'):
        run_benchmark(variants=('baseline',), backbone_only=True, random_proposals=True)


def test_benchmark_tool_writes_its_results_and_the_models_per_variant(tmp_path, capsys):
    import json
    sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
    from benchmark import main
    out = tmp_path / 'speed.json'
    main(['--backbone-only', '--shape', '64', '--modes', 'infer', '--rounds', '1',
          '--warmup', '0', '--iters', '1', '--variants', 'baseline', 'se', '--json',
          str(out)])
    data = json.loads(out.read_text())
    assert data['args']['seeds'] == 1  # backbones: one model per variant
    assert [r['variant'] for r in data['results']] == ['baseline', 'se']
    assert [r['backbone'] for r in data['results']] == ['ResNet', 'FusedTailResNet']
    assert '1 model(s) per variant' in capsys.readouterr().out


def benchmark_run(ratios, shape=(800, 1216), device='NVIDIA H200, torch 2.11.0'):
    """A run as tools/benchmark.py --json writes it, with the given ratio per variant."""
    return dict(args=dict(batch_size=2, shape=list(shape), amp=True, channels_last=False,
                          backbone_only=False, random_proposals=False, rounds=30,
                          seeds=3, iters=2),
                device=device,
                results=[dict(mode='train', variant=v, ms=70.0 * r, ratio=r)
                         for v, r in ratios.items()])


def test_benchmark_pool_runs_gives_mean_spread_and_range_of_the_runs_ratios():
    from cbam_mmdet.benchmark import format_pooled, pool_runs
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


def test_benchmark_pool_runs_refuses_runs_of_different_workloads():
    from cbam_mmdet.benchmark import pool_runs
    run = benchmark_run({'baseline': 1.0, 'se': 1.05})
    with pytest.raises(ValueError, match="differ in 'shape'"):
        pool_runs([run, benchmark_run({'baseline': 1.0}, shape=(512, 512))])
    with pytest.raises(ValueError, match="differ in 'device'"):
        pool_runs([run, benchmark_run({'baseline': 1.0}, device='CPU, 2 threads')])
    with pytest.raises(ValueError, match='at least 2 runs'):
        pool_runs([run])
    old = benchmark_run({'baseline': 1.0})
    del old['args']['channels_last']
    with pytest.raises(ValueError, match="run 2 does not record \\['channels_last'\\]"):
        pool_runs([run, old])
    # runs written before --random-proposals existed had random proposals
    before = benchmark_run({'baseline': 1.0, 'se': 1.03})
    del before['args']['random_proposals']
    with pytest.raises(ValueError, match="differ in 'random_proposals'"):
        pool_runs([run, before])
    random = benchmark_run({'baseline': 1.0, 'se': 1.04})
    random['args']['random_proposals'] = True
    assert [p['mean'] for p in pool_runs([before, random])] == pytest.approx([1.0, 1.035])
    # runs of other implementations (a build without the C++ replay) do not pool
    replayed, python = (benchmark_run({'baseline': 1.0, 'se': 1.03}) for _ in range(2))
    replayed['fast_paths'] = 'fast paths: Triton kernels, calls replayed from C++'
    python['fast_paths'] = 'fast paths: Triton kernels launched from Python'
    with pytest.raises(ValueError, match="differ in 'fast_paths'"):
        pool_runs([replayed, run, python])
    assert len(pool_runs([replayed, run, dict(replayed)])) == 2  # unrecorded: not compared
    # a variant whose backbone differs between runs ('se' before and after it became the
    # config in FusedTailResNet) does not pool; runs without the field count as None
    tail, mmdet = (benchmark_run({'baseline': 1.0, 'se': 1.02}) for _ in range(2))
    for r, backbone in ((tail, 'FusedTailResNet'), (mmdet, 'ResNet')):
        for result in r['results']:
            result['backbone'] = 'ResNet' if result['variant'] == 'baseline' else backbone
    with pytest.raises(ValueError, match="differ in the 'backbone' of variant 'se'"):
        pool_runs([tail, mmdet])
    with pytest.raises(ValueError, match="'backbone' of variant 'baseline'"):
        pool_runs([tail, run])
    assert len(pool_runs([tail, copy.deepcopy(tail)])) == 2


def test_pool_benchmarks_tool_reads_the_runs_files(tmp_path, capsys):
    import json
    sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
    from pool_benchmarks import main
    paths = []
    for i, ratio in enumerate((1.04, 1.06)):
        paths.append(tmp_path / f'run{i}.json')
        run = benchmark_run({'baseline': 1.0, 'cbam': ratio})
        if i:
            run['fast_paths'] = 'fast paths: Triton kernels, calls replayed from C++'
        paths[-1].write_text(json.dumps(run))
    pooled = main([str(p) for p in paths])
    assert [p['mean'] for p in pooled] == pytest.approx([1.0, 1.05])
    out = capsys.readouterr().out
    assert '2 runs on NVIDIA H200' in out
    assert 'fast paths: Triton kernels, calls replayed from C++ (1 of the runs record it)' in out
    missing = tmp_path / 'missing.json'
    with pytest.raises(SystemExit):
        main([str(paths[0]), str(missing)])
    assert f'{missing}: cannot read it' in capsys.readouterr().err
    (tmp_path / 'other.json').write_text(json.dumps({'results': []}))
    with pytest.raises(SystemExit):
        main([str(paths[0]), str(tmp_path / 'other.json')])
    assert 'not a tools/benchmark.py --json file' in capsys.readouterr().err


def test_benchmark_command_line_arguments():
    sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'tools'))
    from benchmark import parse_args
    args = parse_args(['--device', 'cuda', '--amp', '--batch-size', '2', '--shape',
                       '800x1216', '--channels-last', '--backbone-only', '--time-plugins'])
    assert args.shape == (800, 1216) and args.amp and args.channels_last
    assert args.time_plugins and not parse_args([]).time_plugins
    assert parse_args(['--shape', '512']).shape == (512, 512)
    assert parse_args(['--seeds', '2']).seeds == 2 and parse_args([]).seeds is None
    assert parse_args(['--random-proposals']).random_proposals
    assert not parse_args([]).random_proposals
    assert parse_args(['--breakdown']).breakdown and not parse_args([]).breakdown
    with pytest.raises(SystemExit):
        parse_args(['--breakdown', '--modes', 'infer'])
    with pytest.raises(SystemExit):
        parse_args(['--random-proposals', '--backbone-only'])
    with pytest.raises(SystemExit):
        parse_args(['--seeds', '0'])
    with pytest.raises(SystemExit):
        parse_args(['--shape', '10x10'])
    with pytest.raises(SystemExit):
        parse_args(['--variants', 'nope'])
    with pytest.raises(SystemExit):
        parse_args(['--rounds', '0'])


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_triton_backward_twice_with_retain_graph(cls):
    """The backward's accumulators are zeroed by the forward; a second backward through
    the same graph zeroes them again."""
    m = cls(64).cuda().train()
    x = torch.randn(2, 64, 12, 12, device='cuda', requires_grad=True)
    out = m(x)
    out.backward(torch.ones_like(out), retain_graph=True)
    first = [x.grad.clone()] + [p.grad.clone() for p in m.parameters()]
    out.backward(torch.ones_like(out))
    second = [x.grad] + [p.grad for p in m.parameters()]
    for a, b in zip(first, second):
        torch.testing.assert_close(b, 2 * a)
