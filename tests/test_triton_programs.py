"""The C++ replay of recorded Triton launches (cbam_mmdet/ops/triton_programs.py and
csrc/triton_programs.cpp): the extension's checks, argument packing, the switches, and
what a training call's backward does with the parameters' gradients (on CPU, with
programs of no launches); on CUDA, that replayed calls compute what the Python launches
and the reference compute."""
import copy
import os
import struct
import subprocess
import sys
import types

import pytest
import torch

from cbam_mmdet import CBAM, SE
from cbam_mmdet.ops import extensions, triton_available, triton_launch, triton_programs
from test_attention_modules import randomize_
from test_fast_attention import make_input, pair, run

EXT = triton_programs._ext
CUDA = torch.cuda.is_available()
needs_triton = pytest.mark.skipif(not (CUDA and triton_available()),
                                  reason='needs CUDA and Triton')
TOL = dict(rtol=1e-3, atol=1e-4)  # sums in another order (atomics)


@pytest.fixture
def switches():
    """The replay's process-wide settings, restored after the test."""
    saved = triton_programs.enabled(), EXT.graphs(), EXT.direct_grads()
    yield
    triton_programs.set_enabled(saved[0])
    EXT.set_graphs(saved[1])
    EXT.set_direct_grads(saved[2])


def replayed():
    return triton_programs.replayed_calls()


# ---- the extension, argument packing, the switches (CPU) -------------------------------

def test_extension_is_built_and_refuses_what_does_not_fit():
    """setup.py builds it with the package (it needs no CUDA to load)."""
    assert EXT is not None
    program = EXT.Program()
    program.add(function=1, grid=[2, 3, 1], block=128, smem=0, slots=[0, -1, 5],
                values=[0, 7, 0])
    assert program.num_launches == 1 and program.num_slots == 6
    for grid, slots, values, error in (
            ([2, 3], [], [], 'grid must have 3 values'),
            ([1, 1, 1], [0, -1], [0], 'one entry per parameter'),
            ([1, 1, 1], [-1] * 95, [0] * 95, 'too many parameters')):
        with pytest.raises(RuntimeError, match=error):
            program.add(1, grid, 128, 0, slots, values)
    assert program.num_launches == 1
    x = torch.randn(2, 32, 5, 6)
    shapes = [[4, 8], [4], [1, 2, 7, 7]]
    for offsets, strides, error in (
            ([0, 32], [], 'one gradient offset per gradient shape'),
            ([0, 32, 36], [[8, 1]], 'one gradient stride list per gradient shape'),
            ([0, 32, 36], [[8, 1], [1], [98, 1, 14]], 'one value per dimension')):
        with pytest.raises(RuntimeError, match=error):
            EXT.TrainState(EXT.Program(), EXT.Program(), 256, offsets, shapes, [], strides)
    with pytest.raises(RuntimeError, match='expected 4 parameters, got 3'):
        triton_programs.train(empty_train_call().state, x, se_params()[:3], 0, [])


def fake_compiled(signature, **metadata):
    md = dict(num_warps=4, shared=512, num_ctas=1)
    md.update(metadata)
    return types.SimpleNamespace(src=types.SimpleNamespace(signature=signature),
                                 metadata=types.SimpleNamespace(**md), function=1234)


def test_launch_spec_packs_arguments_by_the_compiled_signature():
    """Tensors become slots (by identity, first match), constexprs are dropped, scalars
    are packed as the signature types them; the block is the warps x 32 threads."""
    a, b = torch.zeros(4), torch.zeros(4)
    compiled = fake_compiled({'x': '*fp16', 'y': '*fp32', 'n': 'i32', 'big': 'i64',
                              'neg': 'i32', 'eps': 'fp32', 'flag': 'i1', 'd': 'fp64',
                              'BLOCK': 'constexpr'}, num_warps=2)
    args = (b, b, 7, 1 << 40, -1, 1e-5, True, 0.5, 64)
    spec = triton_programs.launch_spec(compiled, (5, 1, 1), args, [a, b, b])
    function, grid, block, smem, slots, values = spec
    assert (function, grid, block, smem) == (1234, [5, 1, 1], 64, 512)
    assert slots == [1, 1, -1, -1, -1, -1, -1, -1]
    assert values == [0, 0, 7, 1 << 40, 0xFFFFFFFF,
                      struct.unpack('<I', struct.pack('<f', 1e-5))[0], 1,
                      struct.unpack('<Q', struct.pack('<d', 0.5))[0]]
    assert triton_programs.pack_immediate('i64', -2) == (1 << 64) - 2
    assert triton_programs.pack_immediate('u8', 0x1FF) == 0xFF
    with pytest.raises(triton_programs.Unsupported, match='is not an integer'):
        triton_programs.pack_immediate('i32', 1.5)


@pytest.mark.parametrize('metadata', [dict(num_ctas=2), dict(global_scratch_size=64),
                                      dict(profile_scratch_size=64), dict(launch_pdl=True),
                                      dict(launch_cooperative_grid=True)], ids=str)
def test_launch_spec_refuses_what_the_launcher_cannot_replay(metadata):
    compiled = fake_compiled({'x': '*fp32'}, **metadata)
    t = torch.zeros(1)
    with pytest.raises(triton_programs.Unsupported, match='cluster, cooperative or scratch'):
        triton_programs.launch_spec(compiled, (1, 1, 1), (t,), [t])
    compiled = fake_compiled({'x': '*fp32'})
    with pytest.raises(triton_programs.Unsupported, match='outside'):  # unknown tensor
        triton_programs.launch_spec(compiled, (1, 1, 1), (t,), [torch.zeros(1)])
    with pytest.raises(triton_programs.Unsupported, match='for a signature of 1'):
        triton_programs.launch_spec(compiled, (1, 1, 1), (), [])
    compiled = fake_compiled({'x': 'fp16'})
    with pytest.raises(triton_programs.Unsupported, match='argument type'):
        triton_programs.launch_spec(compiled, (1, 1, 1), (0.5,), [])


class FakeKernel:
    """A stand-in for a ``triton.jit`` kernel: ``kernel[grid](*args, num_warps=w)``
    records the launch and returns a compiled kernel whose launcher records too."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, num_warps=4):
            self.launches.append(('jit', grid, args, num_warps))
            return types.SimpleNamespace(
                function=1, packed_metadata=None, num_warps=num_warps,
                run=lambda *a: self.launches.append(('direct', a[:3], a[9:], num_warps)))
        return launch


def test_triton_launch_passes_the_warps_and_the_recorder_makes_programs():
    kernel, cache = FakeKernel(), {}
    triton_launch.launch(kernel, (3, 2, 1), cache, 'k', 0, 'a', 5, num_warps=1)
    triton_launch.launch(kernel, (3, 2, 1), cache, 'k', 0, 'b', 6, num_warps=1)
    assert kernel.launches == [('jit', (3, 2, 1), ('a', 5), 1),
                               ('direct', (3, 2, 1), ('b', 6), 1)]
    recorder = triton_programs.Recorder()
    recorder(kernel, (1, 1, 1), {}, 'r', 0, 'c', num_warps=2)
    assert kernel.launches[-1] == ('jit', (1, 1, 1), ('c',), 2)
    assert recorder.calls[0][0].num_warps == 2
    assert recorder.program([]) is None  # a compiled kernel unlike Triton's: not replayed
    a, b = torch.zeros(4), torch.zeros(4)
    recorder.calls = [(fake_compiled({'x': '*fp32', 'n': 'i32'}), (2, 1, 1), (b, 5)),
                      (fake_compiled({'y': '*fp32', 'B': 'constexpr'}), (1, 1, 1), (a, 8))]
    program = recorder.program([a, b])
    assert program.num_launches == 2 and program.num_slots == 2
    assert recorder.program([a]) is None  # b is none of the call's tensors


@pytest.mark.parametrize('name', ['enabled', 'graphs', 'direct_grads'])
def test_switches_return_the_previous_setting_and_refuse_other_values(name, switches):
    setter = getattr(triton_programs, f'set_{name}')
    current = triton_programs.enabled if name == 'enabled' else getattr(EXT, name)
    first = current()
    if name != 'enabled':
        assert first is True  # on by default
    assert setter(not first) is first and current() is (not first)
    assert setter(first) is (not first) and current() is first
    for bad in ('yes', 1, None):
        with pytest.raises(ValueError, match='enabled must be True or False'):
            setter(bad)
    assert current() is first


def test_environment_variable_is_read_once_at_import(monkeypatch):
    code = ('from cbam_mmdet.ops import triton_programs as t; '
            'print(t._ext is not None, t.enabled())')
    env = dict(os.environ, **{triton_programs.ENV_VAR: '0'})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, '-c', code], env=env, cwd=root,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == 'True False'  # built, switched off
    was = triton_programs.enabled()
    monkeypatch.setenv(triton_programs.ENV_VAR, '0' if was else '1')
    assert triton_programs.enabled() is was


def test_without_the_extension_nothing_is_replayed_and_the_switches_do_nothing(monkeypatch):
    monkeypatch.setattr(triton_programs, '_ext', None)
    monkeypatch.setattr(triton_programs, '_enabled', [True])  # restored with _ext
    assert not triton_programs.enabled() and triton_programs.replayed_calls() == 0
    assert triton_programs.not_built() is not triton_launch._INTERPRET
    assert triton_programs.set_enabled(True) is True and not triton_programs.enabled()
    assert triton_programs.set_graphs(True) is False
    assert triton_programs.set_direct_grads(True) is False
    with pytest.raises(ValueError, match='enabled must be True or False'):
        triton_programs.set_graphs('no')


# ---- a training call's gradients, on CPU with programs of no launches ------------------

# SE(32, ratio=8)'s gradients in a workspace of 328 (see Plan: split_sizes, grad_sizes)
PLAN = types.SimpleNamespace(split_sizes=[16, 128, 4, 128, 32, 20],
                             grad_sizes=[128, 4, 128, 32], total_size=328,
                             grad_shapes=[(4, 32), (4,), (32, 4), (32,)])
OFFSETS = [16, 144, 148, 276]


def se_params():
    se = SE(32, ratio=8)
    return [se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias]


def empty_train_call(params=None, x_requires_grad=True, atomic_regions=()):
    """A training call of empty programs on CPU tensors: the C++ autograd node without
    launches (the workspace keeps what allocation left there). ``state`` must outlive
    the backward: the node keeps its address, as the plans keep theirs."""
    params = params or se_params()
    plan = types.SimpleNamespace(**vars(PLAN), atomic_regions=list(atomic_regions))
    state = triton_programs.train_state(EXT.Program(), EXT.Program(), plan, params)
    x = torch.randn(2, 32, 5, 6, requires_grad=x_requires_grad)
    out = triton_programs.train(state, x, params, 0, [])
    return types.SimpleNamespace(out=out, x=x, params=params, state=state)


def test_empty_program_calls_are_counted_and_return_new_tensors_laid_out_as_x():
    x = torch.randn(2, 32, 5, 6).contiguous(memory_format=torch.channels_last)
    before = replayed()
    out = triton_programs.infer(EXT.Program(), x, 64, 0, se_params())
    assert out.stride() == x.stride() and out.data_ptr() != x.data_ptr()
    call = empty_train_call()
    assert call.out.grad_fn.name() == 'AttentionBackward' and replayed() == before + 2
    with torch.no_grad():  # no autograd node where grad mode is off
        out = triton_programs.train(call.state, x, call.params, 0, [])
    assert out.grad_fn is None and out.stride() == x.stride() and replayed() == before + 3


def test_direct_gradients_are_workspace_aliases_without_autograd_edges(switches):
    """Laid out as ``train_state`` says: at the plan's offsets, with the parameters'
    strides (here fc2.weight's transposed)."""
    triton_programs.set_direct_grads(True)
    params = se_params()
    params[2] = torch.nn.Parameter(torch.randn(4, 32).t())  # (32, 4), strides (1, 32)
    call = empty_train_call(params)
    assert [type(f).__name__ for f, _ in call.out.grad_fn.next_functions] == \
        ['AccumulateGrad']  # x's only
    call.out.sum().backward()
    assert call.x.grad is not None
    assert [p.grad.storage_offset() for p in params] == OFFSETS
    assert len({p.grad.untyped_storage().data_ptr() for p in params}) == 1
    for p in params:  # aliases with the parameter's layout, not autograd views
        assert p.grad.shape == p.shape and p.grad.stride() == p.stride()
        assert p.grad._base is None and p.grad.grad_fn is None
    assert params[2].grad.stride() == (1, 32)
    triton_programs.set_direct_grads(False)  # read by each call's forward
    call = empty_train_call()
    edges = [f for f, _ in call.out.grad_fn.next_functions]
    assert len(edges) == 5 and all(e.variable is p for e, p in zip(edges[1:], call.params))
    call.out.sum().backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in call.params)


@pytest.mark.parametrize('hook', ['tensor', 'post_accumulate', 'accumulator',
                                  'accumulator_prehook'])
def test_a_parameter_with_hooks_gets_its_gradient_through_autograd(hook, switches):
    """Hooks that its AccumulateGrad would run (DistributedDataParallel's are on the grad
    accumulator) keep the parameter's autograd edge, and they run; the others stay
    direct."""
    triton_programs.set_direct_grads(True)
    params = se_params()
    p, seen = params[2], []
    acc = p.view_as(p).grad_fn.next_functions[0][0]  # kept alive: it holds the hooks
    if hook == 'tensor':
        p.register_hook(lambda g: seen.append(g.shape))
    elif hook == 'post_accumulate':
        p.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.shape))
    elif hook == 'accumulator':
        acc.register_hook(lambda grads, _: seen.append(p.shape))
    else:
        acc.register_prehook(lambda grads: seen.append(p.shape))
    call = empty_train_call(params)
    edges = [f for f, _ in call.out.grad_fn.next_functions]
    assert len(edges) == 2 and edges[1].variable is p
    call.out.sum().backward()
    assert seen == [p.shape] and all(q.grad is not None for q in params)


def test_direct_gradients_follow_what_the_backward_asks_for(switches):
    """As triton_programs.py documents: ``backward(inputs=...)`` reaches the parameters
    named where the call's backward runs for another input too; torch.autograd.grad of
    x leaves them alone, and asking it for one raises (or, where nothing else needs the
    call's backward, torch finds the parameter unused)."""
    triton_programs.set_direct_grads(True)
    call = empty_train_call()
    call.out.sum().backward(inputs=[call.x, call.params[2]])
    assert [p.grad is not None for p in call.params] == [False, False, True, False]
    assert call.x.grad is not None
    call = empty_train_call()
    call.out.sum().backward(inputs=[call.params[2]])
    assert all(p.grad is None for p in call.params)
    call = empty_train_call()
    torch.autograd.grad(call.out.sum(), call.x)
    assert all(p.grad is None for p in call.params)
    call = empty_train_call()
    with pytest.raises(RuntimeError, match=r'set_direct_grads\(False\)'):
        torch.autograd.grad(call.out.sum(), [call.x, call.params[1]])
    call = empty_train_call()
    with pytest.raises(RuntimeError, match='not have been used in the graph'):
        torch.autograd.grad(call.out.sum(), call.params[1])
    call = empty_train_call(x_requires_grad=False)
    call.out.sum().backward()  # the parameters' gradients only
    assert all(p.grad is not None for p in call.params)

    class DropGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return None

    call = empty_train_call()  # an undefined output gradient: zero, nothing accumulated
    (DropGradient.apply(call.out).sum() + call.x.sum()).backward()
    assert all(p.grad is None for p in call.params)
    torch.testing.assert_close(call.x.grad, torch.ones_like(call.x))


def test_direct_gradients_accumulate_and_a_second_backward_runs_on_a_copy(switches):
    """A set .grad is added to in place (out of place under create_graph); a second
    backward of a retained graph runs on a copy of the workspace with the atomics'
    regions zeroed (here fc1.weight's gradient's), so the first backward's .grad, an
    alias of the workspace, keeps its values; a third raises."""
    triton_programs.set_direct_grads(True)
    call = empty_train_call(atomic_regions=[(OFFSETS[0], 128)])
    call.out.sum().backward(retain_graph=True)
    first = [p.grad for p in call.params]
    for i, g in enumerate(first):  # known values in the workspace
        g.fill_(i + 1)
    call.out.sum().backward(retain_graph=True)
    assert all(p.grad is g for p, g in zip(call.params, first))
    assert [g.unique().tolist() for g in first] == [[1.0], [4.0], [6.0], [8.0]]
    for p in call.params:
        p.grad = None
    call.out.sum().backward()
    assert [p.grad.unique().tolist() for p in call.params] == [[0.0], [4.0], [6.0], [8.0]]
    assert [g.unique().tolist() for g in first] == [[1.0], [4.0], [6.0], [8.0]]
    with pytest.raises(RuntimeError, match='backward through the graph a second time'):
        call.out.sum().backward()
    call = empty_train_call()
    preset = [torch.zeros_like(p) for p in call.params]
    for p, g in zip(call.params, preset):
        p.grad = g
    call.out.sum().backward(create_graph=True)
    assert all(p.grad is not g for p, g in zip(call.params, preset))


# ---- CUDA: replayed calls against the Python launches and the reference ----------------

@pytest.fixture
def fresh_plans(monkeypatch):
    """No signature planned or recorded yet (each one's first call records, the later
    ones replay); the earlier plans come back after the test."""
    from cbam_mmdet.ops import triton_plan
    monkeypatch.setattr(triton_plan, '_plans', {})
    return triton_plan


KERNELS = dict(poolmlp='_pool_mlp', spool='_spatial_pool', conv='_spatial_conv',
               cscale='_cbam_scale', scale='_scale_channels', bwdpix='_bwd_pixels',
               bwdsp='_bwd_spatial', bwddesc='_bwd_desc_reduce', bwdred='_bwd_reduce',
               mlpbwd='_mlp_bwd', dx='_bwd_dx')
BOTH = pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
LAYOUTS = pytest.mark.parametrize('channels_last', [False, True],
                                  ids=['nchw', 'channels_last'])
MODES = pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])


@needs_triton
@BOTH
@LAYOUTS
def test_triton_passes_launch_with_the_warps_chosen_per_kernel(cls, channels_last,
                                                               fresh_plans):
    """NUM_WARPS applies to contiguous NCHW inputs; channels_last keeps Triton's 4."""
    x, grad = make_input((2, 64, 9, 11), channels_last, 'cuda', torch.float16, seed=3)
    run(cls(64).cuda(), x, grad, True)
    (plan,) = fresh_plans._plans.values()
    warps = {KERNELS[k[0] if isinstance(k, tuple) else k]: c.metadata.num_warps
             for k, c in plan.compiled.items()}
    assert len(warps) == (9 if cls is CBAM else 5)
    assert warps == {name: plan.warps[name] for name in warps}
    table = {name: 4 if channels_last else warps_ for name, warps_ in
             fresh_plans.NUM_WARPS.items() if name in warps}
    assert table and {name: warps[name] for name in table} == table
    assert channels_last or warps['_bwd_dx'] != 4  # the table does change a launch


def assert_results_match(got, want, tol):
    """``run``'s results: output and dx (with one layout), gradients, buffers."""
    for a, b in zip(got[:2], want[:2]):
        assert a.stride() == b.stride()
        torch.testing.assert_close(a, b, **tol)
    for i in (2, 3):
        for k in want[i]:
            torch.testing.assert_close(got[i][k], want[i][k], **tol, msg=k)


@needs_triton
@pytest.mark.parametrize('as_graphs', [True, False], ids=['graphs', 'launches'])
@BOTH
@LAYOUTS
@MODES
def test_replayed_calls_match_the_python_launches(cls, channels_last, training, as_graphs,
                                                  switches, fresh_plans):
    """A signature's first call records (from Python); each later one is replayed from
    C++ and counted once, as one CUDA graph launch per program or kernel by kernel;
    with set_enabled(False) calls run from Python, uncounted. Outputs, dx, gradients and
    BatchNorm's statistics match, in fp32 and fp16 under autocast, with and without
    autograd (a shape without sums by atomics: the same values)."""
    triton_programs.set_graphs(as_graphs)
    graph_launches = EXT.graph_launches()
    _, fast = pair(cls, 48, device='cuda', ratio=8)
    python = copy.deepcopy(fast)
    for dtype in (torch.float32, torch.float16):
        x, grad = make_input((2, 48, 9, 11), channels_last, 'cuda', dtype)
        autocast = None if dtype is torch.float32 else torch.float16
        tol = dict(rtol=1e-4, atol=1e-5) if autocast is None else dict(rtol=1e-2, atol=1e-2)
        for step in range(3):
            before = replayed()
            got = run(fast, x, grad, training, autocast_dtype=autocast)
            with torch.no_grad():
                out = fast(x)
            assert replayed() == before + (0 if step == 0 else 2)
            triton_programs.set_enabled(False)
            try:
                want = run(python, x, grad, training, autocast_dtype=autocast)
                with torch.no_grad():
                    out_python = python(x)
            finally:
                triton_programs.set_enabled(True)
            assert replayed() == before + (0 if step == 0 else 2)
            assert_results_match(got, want, tol)
            assert out.stride() == x.stride()
            torch.testing.assert_close(out, out_python, **tol)
            for module in (fast, python):
                module.zero_grad(set_to_none=True)
    # two replayed steps per dtype, each a forward, a backward and an inference program
    assert EXT.graph_launches() - graph_launches == (12 if as_graphs else 0)


@needs_triton
@BOTH
@LAYOUTS
@MODES
def test_replayed_calls_are_as_accurate_as_the_reference(cls, channels_last, training,
                                                         monkeypatch, fresh_plans):
    """A late-stage shape (channel splits, the MLP over the pooling programs with
    atomics): replayed calls meet the Python path's accuracy bound against float64."""
    from test_fast_attention import assert_as_accurate_as_reference
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    ref, fast = pair(cls, 1024, device='cuda', ratio=8)
    initial = copy.deepcopy(ref.state_dict())
    x, grad = make_input((2, 1024, 25, 38), channels_last, device='cuda')
    want = run(ref, x, grad, training)
    truth = run(copy.deepcopy(ref).double(), x.double(), grad.double(), training)
    before = replayed()
    for _ in range(3):
        fast.load_state_dict(initial)  # BatchNorm's running statistics as ref's were
        got = run(fast, x, grad, training)
        fast.zero_grad(set_to_none=True)
        assert_as_accurate_as_reference(got, want, truth)
    assert replayed() == before + 2


@needs_triton
@BOTH
def test_replayed_backward_twice_and_without_input_grad(cls, fresh_plans):
    """retain_graph: a second backward of a replayed call runs on a copy of the
    workspace (the first's .grad, aliases of it, keep their values) and gives the same
    gradients, a third adds onto the second's; without x.requires_grad, no dx and the
    same parameter gradients."""
    _, m = pair(cls, 64, device='cuda', ratio=8)
    x = torch.randn(2, 64, 12, 10, device='cuda')
    g = torch.randn_like(x)
    m(x.clone().requires_grad_()).backward(g)  # records (a dense gradient, with dx)
    m.zero_grad(set_to_none=True)
    xg = x.clone().requires_grad_()
    before = replayed()
    out = m(xg)
    assert replayed() == before + 1 and out.grad_fn.name() == 'AttentionBackward'
    out.backward(g, retain_graph=True)
    first = [p.grad for p in m.parameters()] + [xg.grad]
    kept = [t.clone() for t in first]
    m.zero_grad(set_to_none=True)
    xg.grad = None
    out.backward(g, retain_graph=True)
    second = [p.grad.clone() for p in m.parameters()] + [xg.grad.clone()]
    for a, b, c in zip(first, kept, second):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(c, b, **TOL)
    out.backward(g)
    for t, want in zip([*m.parameters(), xg], second):
        torch.testing.assert_close(t.grad, 2 * want, **TOL)
    m.zero_grad(set_to_none=True)
    m(x).backward(g)
    for p, want in zip(m.parameters(), kept):
        torch.testing.assert_close(p.grad, want, **TOL)


@needs_triton
@BOTH
def test_direct_and_autograd_edge_gradients_match_the_reference(cls, switches, fresh_plans):
    """Direct and autograd-edge gradients of replayed calls are the reference's (one
    backward, two adding up, two of a retained graph); torch.autograd.grad gives dx
    alone, refuses a direct parameter, and gives all with set_direct_grads(False)."""
    ref, fast = pair(cls, 64, device='cuda', ratio=8)
    x = torch.randn(2, 64, 12, 10, device='cuda')
    g1, g2 = torch.randn_like(x), torch.randn_like(x)

    def grads(module, retained):
        module.zero_grad(set_to_none=True)
        out = module(x)
        out.backward(g1, retain_graph=retained)
        (out if retained else module(x)).backward(g2)
        return [p.grad.clone() for p in module.parameters()]

    want = {r: grads(ref, r) for r in (False, True)}
    fast(x.clone().requires_grad_()).backward(g1)  # records
    for direct in (True, False):
        triton_programs.set_direct_grads(direct)
        out = fast(x)
        assert out.grad_fn.name() == 'AttentionBackward'
        assert len(out.grad_fn.next_functions) == (1 if direct else 1 + len(want[True]))
        for retained in (False, True):
            for a, b in zip(grads(fast, retained), want[retained]):
                torch.testing.assert_close(a, b, **TOL)
    fast.zero_grad(set_to_none=True)
    xr, xg = x.clone().requires_grad_(), x.clone().requires_grad_()
    want = torch.autograd.grad(ref(xr), [xr, *ref.parameters()], g1)
    triton_programs.set_direct_grads(True)
    torch.testing.assert_close(torch.autograd.grad(fast(xg), xg, g1)[0], want[0], **TOL)
    assert all(p.grad is None for p in fast.parameters())
    with pytest.raises(RuntimeError, match=r'set_direct_grads\(False\)'):
        torch.autograd.grad(fast(xg), [xg, next(fast.parameters())], g1)
    triton_programs.set_direct_grads(False)
    for a, b in zip(torch.autograd.grad(fast(xg), [xg, *fast.parameters()], g1), want):
        torch.testing.assert_close(a, b, **TOL)


@needs_triton
def test_distributed_data_parallel_hooks_give_parameters_autograd_edges(switches, tmp_path,
                                                                       fresh_plans):
    """DistributedDataParallel (one process, NCCL) hooks the grad accumulators: replayed
    calls give every parameter its autograd edge, and DDP's gradients are the plain
    module's."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    triton_programs.set_direct_grads(True)
    _, m = pair(CBAM, 64, device='cuda', ratio=8)
    plain = copy.deepcopy(m)
    x = torch.randn(2, 64, 12, 10, device='cuda')
    g = torch.randn_like(x)
    dist.init_process_group('nccl', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    try:
        ddp = DistributedDataParallel(m, device_ids=[0])
        before = replayed()
        for module in (ddp, ddp, ddp, plain, plain, plain):  # record, then replay
            module.zero_grad(set_to_none=True)
            module(x.clone().requires_grad_()).backward(g)
        assert replayed() == before + 5  # all but DDP's first call
        out = m(x)  # the module itself, inside DDP's wrapper
        assert out.grad_fn.name() == 'AttentionBackward'
        assert len(out.grad_fn.next_functions) == 1 + len(list(m.parameters()))
        for a, b in zip(m.parameters(), plain.parameters()):
            torch.testing.assert_close(a.grad, b.grad, **TOL)
    finally:
        dist.destroy_process_group()


@needs_triton
@BOTH
def test_graph_launches_set_changed_arguments_and_not_while_capturing(cls, switches,
                                                                      fresh_plans):
    """A replayed call on the same input leaves the kernel nodes whose arguments did
    not change as they are (counted); on alternating inputs, and for a second module
    sharing the recorded programs, each call (inference, training) computes its own
    input's result. Captured into a CUDA graph (torch.cuda.graph), a call launches its
    kernels one by one into the capture, and the captured graph computes it anew."""
    triton_programs.set_graphs(True)
    ref1, first = pair(cls, 64, device='cuda', ratio=8)
    ref2, second = pair(cls, 64, device='cuda', ratio=8)
    randomize_(ref2, seed=1)
    second.load_state_dict(ref2.state_dict())
    pairs = ((first, ref1), (second, ref2))
    x, y = (torch.randn(2, 64, 12, 10, device='cuda') for _ in range(2))
    with torch.no_grad():
        for m in (ref1, first, ref2, second):
            m.eval()
        first(x)  # records
        kept = EXT.graph_nodes_kept()
        outs = [first(x) for _ in range(3)]  # each workspace at the last one's address
        assert EXT.graph_nodes_kept() > kept
        for out in outs:
            torch.testing.assert_close(out, ref1(x), **TOL)
        for module, ref in pairs * 2:
            for t in (y, x):
                torch.testing.assert_close(module(t), ref(t), **TOL)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        static = x.clone()
        with torch.cuda.stream(stream):
            for _ in range(2):  # replayed on the capture's stream (its own counters)
                first(static)
        torch.cuda.current_stream().wait_stream(stream)
        launched, before = EXT.graph_launches(), replayed()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            out = first(static)
        assert replayed() == before + 1 and EXT.graph_launches() == launched
        static.copy_(y)
        graph.replay()
        torch.testing.assert_close(out, ref1(y), **TOL)
        first(x)  # outside a capture: one graph launch
        assert EXT.graph_launches() == launched + 1
    g = torch.randn_like(x)

    def step(module, t):
        module.train().zero_grad(set_to_none=True)
        t.grad = None
        module(t).backward(g)
        return [t.grad] + [p.grad for p in module.parameters()]

    inputs = [x.clone().requires_grad_(), y.clone().requires_grad_()]
    before = replayed()
    for module, ref in pairs * 2:
        for t in inputs:
            for a, b in zip(step(module, t), step(ref, t)):
                torch.testing.assert_close(a, b, **TOL)
    assert replayed() == before + 7  # the first training call records


@needs_triton
@pytest.mark.parametrize('convert', ['before', 'after'], ids=['first', 'later'])
@MODES
def test_cbam_converted_to_channels_last_records_again_and_matches(convert, training,
                                                                   monkeypatch,
                                                                   fresh_plans):
    """``model.to(memory_format=torch.channels_last)`` lays the spatial convolution's
    weight out channels_last: recorded anew (the kernels read it so), then replayed,
    its gradient laid out as the weight."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    ref, fast = pair(CBAM, 64, device='cuda', ratio=8)
    weight = fast.spatial_attention.conv.weight
    x, grad = make_input((2, 64, 10, 12), True, device='cuda')
    at = 0 if convert == 'before' else 3
    for step in range(6):
        if step == at:
            for m in (ref, fast):
                m.to(memory_format=torch.channels_last)
            assert not weight.is_contiguous()
            at_conversion = replayed()
        assert_results_match(run(fast, x, grad, training), run(ref, x, grad, training), TOL)
        assert weight.grad.stride() == weight.stride()
        with torch.no_grad():
            torch.testing.assert_close(fast(x), ref(x), **TOL)
        for m in (ref, fast):
            m.zero_grad(set_to_none=True)
    # after the conversion one step records, the later ones replay (train and infer)
    assert replayed() - at_conversion == 2 * (5 - at)


@needs_triton
def test_without_the_extension_the_kernels_launch_from_python_and_warn_once(monkeypatch,
                                                                            fresh_plans):
    import warnings
    monkeypatch.setattr(triton_programs, '_ext', None)
    monkeypatch.setattr(extensions, '_warned', set())
    ref, se = pair(SE, 64, device='cuda', ratio=8)
    x, grad = make_input((2, 64, 9, 11), False, device='cuda')
    with pytest.warns(RuntimeWarning, match='_triton_programs is not built.*from Python'):
        got = run(se, x, grad, True)
    assert_results_match(got, run(ref, x, grad, True), TOL)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once per process
        for _ in range(2):
            assert se(x.clone().requires_grad_()).grad_fn.name() != 'AttentionBackward'
    assert all(not plan.native for plan in fresh_plans._plans.values())  # nothing recorded
