"""Recorded Triton launches replayed from C++ (cbam_mmdet/ops/triton_programs.py)."""
import copy
import struct
import types

import pytest
import torch

from cbam_mmdet import CBAM, SE
from cbam_mmdet.ops import triton_available, triton_programs
from test_fast_attention import make_input, pair, run

CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not (CUDA and triton_available()),
                                  reason='needs CUDA and Triton')


def test_triton_programs_extension_is_built():
    """setup.py builds it with the package (tools/setup_env.sh); it needs no CUDA."""
    assert triton_programs._ext is not None
    program = triton_programs._ext.Program()
    program.add(function=1, grid=[2, 3, 1], block=128, smem=0, slots=[0, -1],
                values=[0, 7])
    assert program.num_launches == 1 and program.num_slots == 1
    with pytest.raises(RuntimeError, match='grid must have 3 values'):
        program.add(function=1, grid=[2, 3], block=128, smem=0, slots=[], values=[])


def fake_compiled(signature, **metadata):
    md = dict(num_warps=4, shared=512, num_ctas=1)
    md.update(metadata)
    return types.SimpleNamespace(src=types.SimpleNamespace(signature=signature),
                                 metadata=types.SimpleNamespace(**md), function=1234)


def test_triton_programs_pack_arguments_by_the_compiled_signature():
    """Tensors become slots (by identity, first match), constexprs are dropped, scalars
    are packed as the signature types them."""
    a, b = torch.zeros(4), torch.zeros(4)
    compiled = fake_compiled({'x': '*fp16', 'y': '*fp32', 'n': 'i32', 'big': 'i64',
                              'neg': 'i32', 'eps': 'fp32', 'flag': 'i1', 'BLOCK': 'constexpr'})
    spec = triton_programs.launch_spec(compiled, (5, 1, 1),
                                       (b, b, 7, 1 << 40, -1, 1e-5, True, 64), [a, b])
    function, grid, block, smem, slots, values = spec
    assert (function, grid, block, smem) == (1234, [5, 1, 1], 128, 512)
    assert slots == [1, 1, -1, -1, -1, -1, -1]
    assert values[2:] == [7, 1 << 40, 0xFFFFFFFF,
                          struct.unpack('<I', struct.pack('<f', 1e-5))[0], 1]


@pytest.mark.parametrize('metadata', [dict(num_ctas=2), dict(global_scratch_size=64),
                                      dict(launch_cooperative_grid=True)], ids=str)
def test_triton_programs_refuse_what_the_launcher_cannot_replay(metadata):
    compiled = fake_compiled({'x': '*fp32'}, **metadata)
    with pytest.raises(triton_programs.Unsupported):
        triton_programs.launch_spec(compiled, (1, 1, 1), (torch.zeros(1),), [])
    compiled = fake_compiled({'x': '*fp32'})
    with pytest.raises(triton_programs.Unsupported, match='outside'):  # unknown tensor
        triton_programs.launch_spec(compiled, (1, 1, 1), (torch.zeros(1),), [torch.zeros(1)])
    compiled = fake_compiled({'x': 'fp16'})
    with pytest.raises(triton_programs.Unsupported, match='argument type'):
        triton_programs.launch_spec(compiled, (1, 1, 1), (0.5,), [])


def assert_close_with_layout(a, b, tol):
    """``a`` and ``b`` have one shape and strides and agree within ``tol``."""
    assert a.shape == b.shape and a.stride() == b.stride()
    torch.testing.assert_close(a, b, **tol)


def count_replays(monkeypatch):
    replays = {'infer': 0, 'train': 0}
    for name in replays:
        real = getattr(triton_programs, name)

        def counted(*args, _real=real, _name=name):
            replays[_name] += 1
            return _real(*args)
        monkeypatch.setattr(triton_programs, name, counted)
    return replays


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_triton_programs_replay_matches_the_python_path(cls, channels_last, training,
                                                        monkeypatch):
    """The first call records, later calls replay from C++ (counted); outputs, dx,
    parameter gradients and BatchNorm's running statistics match the Python path's on
    the same module, in fp32 and in fp16 under autocast, with and without autograd
    (a shape without sums by atomics, so both paths compute the same values)."""
    replays = count_replays(monkeypatch)
    _, fast = pair(cls, 48, device='cuda', implementation='auto', ratio=8)
    python = copy.deepcopy(fast)
    for dtype in (None, torch.float16):
        x, grad = make_input((2, 48, 9, 11), channels_last, device='cuda',
                             dtype=torch.float32 if dtype is None else torch.float16)
        tol = dict(rtol=1e-4, atol=1e-5) if dtype is None else dict(rtol=1e-2, atol=1e-2)
        for _ in range(3):
            monkeypatch.setenv(triton_programs.ENV_VAR, '1')
            got = run(fast, x, grad, training, autocast_dtype=dtype)
            monkeypatch.setenv(triton_programs.ENV_VAR, '0')
            want = run(python, x, grad, training, autocast_dtype=dtype)
            for a, b in zip(got[:2], want[:2]):
                assert_close_with_layout(a, b, tol)
            for k in got[2]:
                torch.testing.assert_close(got[2][k], want[2][k], **tol,
                                           msg=lambda m: f'{k}: {m}')
            for k in got[3]:
                torch.testing.assert_close(got[3][k], want[3][k], **tol, msg=k)
            for module in (fast, python):
                module.zero_grad(set_to_none=True)
            monkeypatch.setenv(triton_programs.ENV_VAR, '1')
            with torch.no_grad():
                out = fast.train(training)(x)
            monkeypatch.setenv(triton_programs.ENV_VAR, '0')
            with torch.no_grad():
                assert_close_with_layout(out, python.train(training)(x), tol)
    assert replays['train'] >= 4 and replays['infer'] >= 4, replays


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_triton_programs_replay_is_as_accurate_as_the_reference(cls, channels_last, training,
                                                                monkeypatch):
    """A late-stage shape (channel splits, the MLP spread over the pooling programs with
    atomics, so that two calls may differ by an ulp of M_c and route a maximum's gradient
    to another of two near-tied channels): replayed calls meet the accuracy bound of the
    Python path's own test against the reference in float64."""
    from test_fast_attention import assert_as_accurate_as_reference
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    replays = count_replays(monkeypatch)
    ref, fast = pair(cls, 1024, device='cuda', implementation='auto', ratio=8)
    initial = copy.deepcopy(ref.state_dict())
    ref64 = copy.deepcopy(ref).double()
    x, grad = make_input((2, 1024, 25, 38), channels_last, device='cuda')
    want = run(ref, x, grad, training)
    truth = run(ref64, x.double(), grad.double(), training)
    for _ in range(3):
        fast.load_state_dict(initial)  # BatchNorm's running statistics as ref's were
        got = run(fast, x, grad, training)
        fast.zero_grad(set_to_none=True)
        assert_as_accurate_as_reference(got, want, truth)
    assert replays['train'] >= 2, replays


@needs_triton
def test_triton_programs_second_backward_and_no_input_grad():
    """retain_graph: a second backward through a replayed call gives the same
    gradients; an input without requires_grad skips dx."""
    torch.manual_seed(0)
    m = CBAM(64, ratio=8).cuda()
    x = torch.randn(2, 64, 12, 10, device='cuda')
    for _ in range(2):  # record, then replay
        m(x.clone().requires_grad_()).sum().backward()
    m.zero_grad()
    xg = x.clone().requires_grad_()
    out = m(xg)
    g = torch.randn_like(out)
    out.backward(g, retain_graph=True)
    first = [p.grad.clone() for p in m.parameters()] + [xg.grad.clone()]
    m.zero_grad()
    xg.grad = None
    out.backward(g)
    second = [p.grad for p in m.parameters()] + [xg.grad]
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    m.zero_grad()
    m(x).backward(g)  # x without requires_grad: parameters only
    for p, want in zip(m.parameters(), first):
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-6)
