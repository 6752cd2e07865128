"""The fast CBAM/SE paths (cbam_mmdet.ops) against the modules' reference forward, and
which path a module call takes."""
import copy

import pytest
import torch

from cbam_mmdet import CBAM, SE, ops
from cbam_mmdet.ops import attention, cbam_torch, triton_available
from test_attention_modules import randomize_

CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not (CUDA and triton_available()),
                                  reason='needs CUDA and Triton')
SHAPES = [(2, 32, 9, 11), (1, 64, 16, 16), (3, 48, 1, 7), (2, 128, 5, 3)]


def pair(cls, channels, device='cpu', implementation='auto', **kwargs):
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


def counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or real(*a))
    return calls


def test_modules_call_the_kernel_layer_only_where_it_applies(monkeypatch):
    x = torch.randn(1, 32, 4, 4, requires_grad=True)
    assert CBAM(32).implementation == 'auto' and SE(32).implementation == 'auto'
    cbam_calls = counting(monkeypatch, ops, 'cbam')
    se_calls = counting(monkeypatch, ops, 'se')
    CBAM(32)(x)
    SE(32)(x)
    assert cbam_calls == [1] and se_calls == [1]
    CBAM(32, implementation='reference')(x)
    SE(32, implementation='reference')(x)
    CBAM(32, arrangement='parallel')(x)  # no fast path for this option: reference
    CBAM(32, channel_pool='avg')(x)
    assert cbam_calls == [1] and se_calls == [1]


def test_reference_setting_makes_every_module_run_its_reference(monkeypatch):
    x = torch.randn(1, 32, 4, 4)
    cbam_calls = counting(monkeypatch, ops, 'cbam')
    previous = ops.set_reference(True)
    try:
        assert ops.use_reference()
        CBAM(32)(x)
        SE(32)(x)
    finally:
        ops.set_reference(previous)
    assert cbam_calls == [] and not ops.use_reference()
    with pytest.raises(ValueError, match='enabled must be True or False'):
        ops.set_reference('yes')


def test_invalid_implementation_is_refused():
    for bad in ('triton', None, 'fast', 'graph', 'eager'):
        with pytest.raises(ValueError, match=r"implementation must be one of \['auto', "
                                             r"'reference'\]"):
            CBAM(32, implementation=bad)
        with pytest.raises(ValueError, match='implementation must be one of'):
            SE(32, implementation=bad)


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
    calls = counting(monkeypatch, cbam_torch, 'cbam' if cls is CBAM else 'se')
    got = run(fast, x, grad, training)
    assert got[0].stride() == x.stride()
    assert_as_accurate_as_reference(got, run(ref, x, grad, training),
                                    run(ref64, x.double(), grad.double(), training))
    with torch.no_grad():  # the inference path (no autograd)
        for _ in range(2):  # recorded, then replayed from C++
            out = fast.train(training)(x)
            torch.testing.assert_close(out, ref.train(training)(x), rtol=1e-3, atol=1e-4)
    assert out.stride() == x.stride()
    assert calls == []  # every call ran the Triton kernels


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
    if backend == 'torch':
        monkeypatch.setattr(attention, '_triton_takes', lambda x: False)
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
