"""The block tail of SE and CBAM: ``forward_residual`` and ``FusedTailResNet``
(cbam_mmdet/models/fused_tail_resnet.py)."""
import copy

import pytest
import torch
from mmdet.registry import MODELS

from cbam_mmdet import CBAM, SE
from cbam_mmdet.models import FusedTailBottleneck
from cbam_mmdet.ops import triton_available, triton_programs
from test_fast_attention import make_input, pair

CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not (CUDA and triton_available()),
                                  reason='needs CUDA and Triton')
PLUGIN_TYPES = {'SE': SE, 'CBAM': CBAM}


def run_tail(module, x, r, grad, training, fused=True, autocast_dtype=None):
    """(out, dx, dr, parameter grads) of the tail, or of relu(module(x) + r)."""
    module.train(training)
    x = x.detach().clone().requires_grad_()
    r = r.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.float16,
                        enabled=autocast_dtype is not None):
        out = module.forward_residual(x, r) if fused else torch.relu(module(x) + r)
    out.backward(grad)
    return (out.detach(), x.grad, r.grad,
            {n: p.grad for n, p in module.named_parameters()})


def assert_tail_close(got, want, tol):
    for name, a, b in zip(('out', 'dx', 'dr'), got[:3], want[:3]):
        assert a.shape == b.shape and a.stride() == b.stride(), name
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f'{name}: {m}')
    assert set(got[3]) == set(want[3])
    for k in want[3]:
        torch.testing.assert_close(got[3][k], want[3][k], **tol, msg=lambda m: f'{k}: {m}')


def away_from_zero(ref, x, r, autocast_dtype=None, margin=0.05):
    """``r`` moved by 2 margin where ref(x) + r is within ``margin`` of 0 (in place, its
    layout kept): the fused pass rounds the attention's output plus r once, the
    reference rounds the attention's output first, and in fp16 the two may fall on
    either side of the ReLU's 0, where the gradients differ by g."""
    with torch.no_grad(), torch.autocast(x.device.type, dtype=torch.float16,
                                         enabled=autocast_dtype is not None):
        pre = (ref(x) + r).float()
    shift = torch.where(pre >= 0, 2 * margin, -2 * margin) * (pre.abs() < margin)
    return r.add_(shift.to(r.dtype))


@pytest.mark.parametrize('kind', ['SE', 'CBAM'])
@pytest.mark.parametrize('implementation', ['reference', 'auto'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_forward_residual_is_relu_of_attention_plus_residual_on_cpu(kind, implementation,
                                                                    channels_last):
    """On CPU in training the tail is the plugin, the addition and ReLU: values and
    gradients of x, the residual and the parameters; in inference the C++ kernels' last
    pass (test_cpu_kernels_take_the_tail_in_inference), with the CPU fast path's
    tolerance."""
    ref, fast = pair(PLUGIN_TYPES[kind], 32, implementation=implementation, ratio=8)
    x, grad = make_input((2, 32, 7, 9), channels_last, seed=2)
    r = make_input((2, 32, 7, 9), channels_last, seed=3)[0]
    tol = dict(rtol=1e-4, atol=1e-5)
    assert_tail_close(run_tail(fast, x, r, grad, True),
                      run_tail(ref, x, r, grad, True, fused=False), tol)
    with torch.no_grad():
        want = torch.relu(ref.eval()(x) + r)
        torch.testing.assert_close(fast.eval().forward_residual(x.clone(), r), want, **tol)


class KernelSpy:
    """The C++ CPU kernels, recording each call's name and whether it got a residual (the
    last of se_eval's and cbam_eval's 7 arguments, of scale's 5)."""

    ARITY = {'se_eval': 7, 'cbam_eval': 7, 'scale': 5}

    def __init__(self, kern):
        self.kern, self.calls = kern, []

    def __getattr__(self, name):
        fn = getattr(self.kern, name)

        def call(*args):
            residual = len(args) == self.ARITY.get(name) and args[-1] is not None
            self.calls.append((name, residual))
            return fn(*args)
        return call


@pytest.mark.parametrize('kind,bn_training', [('SE', False), ('CBAM', False),
                                              ('CBAM', True)],
                         ids=['SE', 'CBAM-running-stats', 'CBAM-batch-stats'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('inplace', [False, True], ids=['new', 'inplace'])
def test_cpu_kernels_take_the_tail_in_inference(kind, bn_training, channels_last, inplace,
                                                monkeypatch):
    """CPU inference writes max(plugin(x) + r, 0) in the C++ kernels' last pass (SE's
    se_eval; CBAM's cbam_eval with BatchNorm's running statistics, its scale with batch
    statistics), equal to the reference's relu(plugin(x) + r); a residual laid out
    otherwise, or recorded by autograd, takes the addition and ReLU after the kernels."""
    from cbam_mmdet.ops import cbam_cpu
    # as tests/test_fast_attention.py's CPU fast path: where y + r nears 0 the sum keeps
    # y's absolute error (about 1e-6 from CBAM's convolution on some CPUs)
    tol = dict(rtol=1e-4, atol=1e-5)
    spy = KernelSpy(cbam_cpu.kernels())
    assert spy.kern is not None, 'the CPU kernels are built by setup.py build_ext'
    monkeypatch.setattr(cbam_cpu, 'kernels', lambda: spy)
    ref, fast = pair(PLUGIN_TYPES[kind], 64, implementation='auto', ratio=8)
    fast.inplace = inplace
    x = make_input((2, 64, 9, 13), channels_last, seed=4)[0]
    r = make_input((2, 64, 9, 13), channels_last, seed=9)[0]
    ref.train(bn_training), fast.train(bn_training)
    last = {'SE': 'se_eval', 'CBAM': 'scale' if bn_training else 'cbam_eval'}[kind]
    with torch.no_grad():
        want = torch.relu(ref(x) + r)
        xin = x.clone()
        out = fast.forward_residual(xin, r)
        assert (last, True) in spy.calls, spy.calls
        torch.testing.assert_close(out, want, **tol)
        assert out.stride() == x.stride()
        assert (out.data_ptr() == xin.data_ptr()) == inplace
        spy.calls.clear()  # a residual in the other layout: the kernels without it
        other = r.contiguous(memory_format=torch.contiguous_format if channels_last
                             else torch.channels_last)
        torch.testing.assert_close(fast.forward_residual(x.clone(), other), want,
                                   **tol)
        assert (last, False) in spy.calls and (last, True) not in spy.calls, spy.calls
    spy.calls.clear()  # autograd records the residual: PyTorch's addition and ReLU
    out = fast.forward_residual(x.clone(), r.clone().requires_grad_())
    assert out.requires_grad and (last, True) not in spy.calls, spy.calls
    torch.testing.assert_close(out.detach(), want, **tol)


def backbones(depth=50, kind='SE', **kwargs):
    """mmdet's ResNet (PluginResNet for ResNet-18/34) and FusedTailResNet with ``kind``
    at the end of each block's residual branch (after conv3; after conv2 in a
    BasicBlock), the same weights."""
    basic = depth in (18, 34)
    position = 'after_conv2' if basic else 'after_conv3'
    cfg = dict(depth=depth, num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=0,
               norm_cfg=dict(type='BN', requires_grad=True),
               plugins=[dict(cfg=dict(type=kind, ratio=16), position=position)], **kwargs)
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='PluginResNet' if basic else 'ResNet', **cfg))
    fused = MODELS.build(dict(type='FusedTailResNet', **cfg))
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())
    return plain, fused


def backbone_step(model, x, training, loss_scale=1.0):
    """Outputs and parameter gradients (None for the frozen stem) of one step; the loss
    is multiplied by ``loss_scale`` and the gradients divided by it, as GradScaler does
    so that fp16 gradients do not underflow."""
    model.train(training)
    model.zero_grad(set_to_none=True)
    outs = model(x)
    if training:
        loss = sum((o.float() * (i + 1)).mean() for i, o in enumerate(outs))
        (loss * loss_scale).backward()
    return [o.detach() for o in outs], {
        n: None if p.grad is None else p.grad / loss_scale
        for n, p in model.named_parameters()}


@pytest.mark.parametrize('kind', ['SE', 'CBAM'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_fused_tail_resnet_computes_mmdets_resnet(kind, training, monkeypatch):
    """Same keys, outputs, parameter gradients and BatchNorm statistics as mmdet's
    ResNet-50 with SE or CBAM after conv3; every Bottleneck hands its tail to it."""
    plain, fused = backbones(kind=kind)
    blocks = [m for m in fused.modules() if isinstance(m, FusedTailBottleneck)]
    assert len(blocks) == 16 and all(b.fused_tail() is not None for b in blocks)
    assert_backbone_computes(fused, plain, kind, training, 16, monkeypatch)


def assert_backbone_computes(fused, plain, kind, training, blocks, monkeypatch):
    """``fused`` hands ``blocks`` tails to ``kind``'s forward_residual in one step and
    gives ``plain``'s outputs, parameter gradients and state (BatchNorm statistics)."""
    calls = []
    real = PLUGIN_TYPES[kind].forward_residual
    x = torch.randn(2, 3, 64, 64)
    with monkeypatch.context() as patch:
        patch.setattr(PLUGIN_TYPES[kind], 'forward_residual',
                      lambda self, *a: calls.append(1) or real(self, *a))
        got = backbone_step(fused, x, training)
    assert len(calls) == blocks
    want = backbone_step(plain, x, training)
    for a, b in zip(got[0], want[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    if training:
        for k, g in want[1].items():
            torch.testing.assert_close(got[1][k], g, rtol=1e-3, atol=1e-5, msg=k)
    for (k, a), b in zip(fused.state_dict().items(), plain.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)


def test_fused_tail_falls_back_to_mmdets_block_where_the_tail_cannot_be_handed_over(
        monkeypatch):
    """A hook on the plugin sees its output as mmdet's block makes it; two plugins at
    after_conv3, none, and with_cp in training take mmdet's forward."""
    plain, fused = backbones()
    block = fused.layer1[0]
    seen = []
    handle = block.se.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    assert block.fused_tail() is None
    x = torch.randn(1, 64, 16, 16)
    with torch.no_grad():
        out = block.eval()(x)
        torch.testing.assert_close(out, plain.layer1[0].eval()(x))
    assert len(seen) == 1 and (seen[0] < 0).any()  # SE's output, before the ReLU
    handle.remove()
    assert block.fused_tail() is not None
    two = [dict(cfg=dict(type='SE', ratio=16, postfix=i), position='after_conv3')
           for i in (1, 2)]
    model = MODELS.build(dict(type='FusedTailResNet', depth=50, plugins=two))
    assert model.layer1[0].fused_tail() is None
    model = MODELS.build(dict(type='FusedTailResNet', depth=50))
    assert model.layer1[0].fused_tail() is None
    plain, fused = backbones(with_cp=True)
    block = fused.layer1[0].train()
    x = torch.randn(1, 64, 16, 16, requires_grad=True)
    calls = []
    real = type(block.se).forward_residual
    monkeypatch.setattr(type(block.se), 'forward_residual',
                        lambda self, *a: calls.append(1) or real(self, *a))
    block(x).sum().backward()
    assert calls == []


# ---- CUDA: the fused Triton pass --------------------------------------------------------

@needs_triton
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=['fp32', 'fp16'])
@pytest.mark.parametrize('shape', [(2, 48, 9, 11), (2, 256, 50, 76), (1, 1024, 13, 19)],
                         ids=str)
@pytest.mark.parametrize('kind', ['SE', 'CBAM'])
def test_fused_tail_matches_the_reference_on_cuda(kind, shape, dtype, channels_last):
    """The fused pass (recorded, then replayed from C++ and through the module's
    bindings) against relu(plugin(x) + r): output, dx, dr and the parameters'
    gradients, in training and inference (in place too). For SE the plugin is the
    reference path; for CBAM it is CBAM's fast path without the tail, so that only the
    tail differs: CBAM's fast path and its reference differ at a few positions of dx
    where channels tie for the maximum (in fp16 by rounding; tests/test_fast_attention.py
    compares the two against float64), and the whole backbone with the tail is compared
    with the reference in fp32 in test_fused_tail_resnet_matches_mmdets_resnet_on_cuda.
    CBAM's fast path is not bit-reproducible where its passes split the channels (float
    atomics add in varying order): at 1x1024x13x19 in fp32 two of its runs without the
    tail differ by up to 4e-4 in dx, hence CBAM's wider fp32 tolerance."""
    fp32 = dtype == torch.float32
    ref, fast = pair(PLUGIN_TYPES[kind], shape[1], device='cuda', implementation='auto',
                     ratio=16)
    if kind == 'CBAM':
        ref = copy.deepcopy(fast)
    x, grad = make_input(shape, channels_last, 'cuda', dtype, seed=5)
    r = make_input(shape, channels_last, 'cuda', dtype, seed=6)[0]
    tol = dict(rtol=1e-2, atol=2e-2)
    if fp32:
        tol = dict(rtol=1e-3, atol=1e-3) if kind == 'CBAM' else dict(rtol=1e-4, atol=1e-4)
    ac = None if fp32 else torch.float16  # fp16 maps come from autocast in a detector
    away_from_zero(ref, x, r, ac)
    want = run_tail(ref, x, r, grad, True, fused=False, autocast_dtype=ac)
    hits = []
    for _ in range(3):
        fast.zero_grad(set_to_none=True)
        assert_tail_close(run_tail(fast, x, r, grad, True, autocast_dtype=ac), want, tol)
        hits.append(fast._bindings.train_hits if fast._bindings is not None else 0)
    assert hits[-1] >= 1, hits  # replayed through the bindings
    ref.load_state_dict(fast.state_dict())  # the same running statistics
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.float16, enabled=not fp32):
        want = torch.relu(ref.eval()(x) + r)
        fast.eval()
        for inplace in (False, True, True):
            fast.inplace = inplace
            for _ in range(2):
                xin = x.clone()
                out = fast.forward_residual(xin, r)
                assert out.stride() == x.stride()
                torch.testing.assert_close(out, want, **tol)
                assert (out.data_ptr() == xin.data_ptr()) == inplace
        assert fast._bindings.infer_hits >= 1


@needs_triton
@pytest.mark.parametrize('kind,dtype', [('SE', torch.float16), ('CBAM', torch.float32)])
def test_fused_tail_gradients_reach_only_what_requires_them_and_check_versions(kind, dtype):
    """A residual without requires_grad, an x without it, and an output modified in place
    before the backward (autograd's error)."""
    ref, fast = pair(PLUGIN_TYPES[kind], 64, device='cuda', implementation='auto', ratio=16)
    x, grad = make_input((2, 64, 12, 10), False, 'cuda', dtype, seed=7)
    r = make_input((2, 64, 12, 10), False, 'cuda', dtype, seed=8)[0]
    away_from_zero(ref, x.float(), r)
    tol = dict(rtol=1e-2, atol=2e-2)
    for _ in range(3):  # record, replay, bound replay
        for x_grad, r_grad in ((True, False), (False, True)):
            a = x.clone().requires_grad_(x_grad)
            b = r.clone().requires_grad_(r_grad)
            fast.zero_grad(set_to_none=True)
            fast.forward_residual(a, b).backward(grad)
            ref.zero_grad(set_to_none=True)
            a2 = x.clone().requires_grad_(x_grad)
            b2 = r.clone().requires_grad_(r_grad)
            torch.relu(ref(a2.float()).to(dtype) + b2).backward(grad)
            assert (a.grad is None) == (not x_grad) and (b.grad is None) == (not r_grad)
            for t, t2 in ((a, a2), (b, b2)):
                if t.grad is not None:
                    torch.testing.assert_close(t.grad, t2.grad, **tol)
            for (name, p), p2 in zip(fast.named_parameters(), ref.parameters()):
                torch.testing.assert_close(p.grad, p2.grad, rtol=1e-2, atol=1e-2,
                                           msg=lambda m: f'{name}: {m}')
    out = fast.forward_residual(x.clone().requires_grad_(), r.clone().requires_grad_())
    out.mul_(2)
    with pytest.raises(RuntimeError, match='modified by an inplace operation'):
        out.backward(grad)


@needs_triton
@pytest.mark.parametrize('depth', [50, 18])
@pytest.mark.parametrize('kind', ['SE', 'CBAM'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_fused_tail_resnet_matches_mmdets_resnet_on_cuda(depth, kind, training,
                                                         monkeypatch):
    """The whole backbone (ResNet-50's 16 Bottlenecks, ResNet-18's 8 BasicBlocks):
    FusedTailResNet with the plugin replayed from C++ against mmdet's ResNet
    (PluginResNet for ResNet-18) with the plugin on the reference path. SE under fp16
    autocast, with the loss scaled as in AMP training: unscaled, the reference's fp16
    gradients of SE's first layer in stage 4 underflow to about zero while the fused
    pass's, accumulated in fp32, do not. CBAM in fp32 without TF32: in fp16 the two round
    M_c F, and so CBAM's channel max and the ReLU's mask, differently at a few positions
    per block, which the blocks carry into the gradients (fp16 CBAM is compared per
    module in test_fused_tail_matches_the_reference_on_cuda)."""
    amp = kind == 'SE'
    if not amp:
        monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    plain, fused = backbones(depth=depth, kind=kind)
    for m in plain.modules():
        if isinstance(m, PLUGIN_TYPES[kind]):
            m.implementation = 'reference'
    plain, fused = plain.cuda(), fused.cuda()
    x = torch.randn(2, 3, 128, 160, device='cuda')
    for _ in range(3):
        with torch.autocast('cuda', dtype=torch.float16, enabled=amp):
            got = backbone_step(fused, x, training, loss_scale=2.0**16)
            want = backbone_step(plain, x, training, loss_scale=2.0**16)
        for a, b in zip(got[0], want[0]):
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=5e-2)
        if training:
            for k, g in want[1].items():
                if g is None:
                    assert got[1][k] is None, k
                    continue
                err = (got[1][k] - g).norm() / g.norm().clamp_min(1e-12)
                assert err < 2e-2, (k, err.item())
    calls = triton_programs.replayed_calls(fused)
    assert calls >= (16 if depth == 50 else 8), calls


@pytest.mark.parametrize('kind', ['SE', 'CBAM'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_fused_tail_resnet18_computes_plugin_resnet18(kind, training, monkeypatch):
    """ResNet-18 (BasicBlocks, the plugin at after_conv2): the same keys, outputs,
    parameter gradients and BatchNorm statistics as PluginResNet; every block hands its
    tail over."""
    plain, fused = backbones(depth=18, kind=kind)
    assert_backbone_computes(fused, plain, kind, training, 8, monkeypatch)


def test_fused_tail_resnet18_zero_initialises_the_last_norm_as_mmdet():
    """zero_init_residual reaches FusedTailResNet's BasicBlocks as PluginResNet's."""
    model = MODELS.build(dict(type='FusedTailResNet', depth=18, zero_init_residual=True))
    model.init_weights()
    assert all((b.norm2.weight == 0).all() for b in model.layer1)
