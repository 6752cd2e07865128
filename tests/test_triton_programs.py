"""Recorded Triton launches replayed from C++ (cbam_mmdet/ops/triton_programs.py)."""
import copy
import pickle
import struct
import types

import pytest
import torch

from cbam_mmdet import CBAM, SE
from cbam_mmdet.ops import triton_available, triton_launch, triton_programs
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
    shapes = [[4, 8], [4], [1, 2, 7, 7]]
    ext = triton_programs._ext
    with pytest.raises(RuntimeError, match='one gradient stride list per gradient shape'):
        ext.TrainState(ext.Program(), ext.Program(), 256, [0, 32, 36], shapes, [], [[8, 1]])
    with pytest.raises(RuntimeError,
                       match="each gradient's strides must have one value per dimension"):
        ext.TrainState(ext.Program(), ext.Program(), 256, [0, 32, 36], shapes, [],
                       [[8, 1], [1], [98, 1, 14]])


def bound_se(train=False, inplace=False):
    """An SE module on CPU with one binding of an empty program (no launches: a bound
    inference call returns a new tensor of x's layout, or x where ``inplace``), so that
    whether a binding applies can be checked without a GPU."""
    se = SE(32, ratio=8)
    x = torch.randn(2, 32, 5, 6)
    params = [se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias]
    ext = triton_programs._ext
    if train:
        owner = ext.TrainState(ext.Program(), ext.Program(), 2000, [0, 300, 400, 700],
                               [list(p.shape) for p in params], [])
    else:
        owner = ext.Program()
    modules, f1 = se._modules, se.fc1._parameters
    checks = [(modules, 'fc1', se.fc1, False), (f1, 'weight', f1['weight'], False),
              (se.__dict__, 'training', True, True)]
    triton_programs.bind(se, owner, train, x, inplace, 64, 0, params, [], checks)
    return se, x


def test_triton_programs_replayed_calls_counts_the_bound_calls():
    """What the benchmark checks its plugin variants with: the bound calls' hits of every
    module of a model, restarting where a module's bindings are dropped."""
    se, x = bound_se()
    model = torch.nn.Sequential(torch.nn.ReLU(), se)
    assert triton_programs.replayed_calls(model) == 0
    with torch.no_grad():
        model(x)
        model(x)
    assert triton_programs.replayed_calls(model) == 2
    model(x)  # autograd records: the inference binding does not apply
    assert triton_programs.replayed_calls(model) == 2
    se.inplace = True  # drops the bindings
    assert triton_programs.replayed_calls(model) == 0


def test_bindings_apply_only_while_what_they_were_bound_for_holds(monkeypatch):
    from cbam_mmdet.ops import ENV_VAR
    se, x = bound_se()
    bindings = se._bindings
    assert len(bindings) == 1

    def applies(t):
        with torch.no_grad():
            out = bindings(t)
        if out is not None:
            assert out.shape == t.shape and out.stride() == t.stride()
        return out is not None

    assert applies(x) and applies(torch.randn_like(x)) and bindings.infer_hits == 2
    with torch.inference_mode():
        assert bindings(x) is not None
    # another signature
    assert not applies(x[:1]) and not applies(x.double())
    assert not applies(x.contiguous(memory_format=torch.channels_last))
    assert not applies(torch.randn(x.numel() + 1)[1:].view_as(x))  # not 16-byte aligned
    assert bindings('not a tensor') is None
    # autograd recording: an inference binding does not apply
    assert bindings(x.clone().requires_grad_()) is None
    assert bindings(x) is None  # a parameter requires grad
    # the environment variables of the backend choice and of the programs
    for name, value in ((ENV_VAR, 'reference'), (triton_programs.ENV_VAR, '0')):
        monkeypatch.setenv(name, value)
        assert not applies(x)
        monkeypatch.delenv(name)
        assert applies(x)
    # a replaced submodule or parameter, a changed setting
    fc1 = se.fc1
    se.fc1 = copy.deepcopy(fc1)
    assert not applies(x)
    se.fc1 = fc1
    assert applies(x)
    weight = se.fc1.weight
    se.fc1.weight = torch.nn.Parameter(weight.detach().clone())
    assert not applies(x)
    se.fc1.weight = weight
    se.eval()
    assert not applies(x)
    se.train()
    assert applies(x)
    # parameters the kernels do not read (converted in place: the same tensors)
    se.double()
    assert not applies(x)
    se.float()
    assert applies(x)
    # a parameter laid out anew in place (the kernels read the layout bound for)
    weight = se.fc1.weight
    weight.data = weight.data.t().contiguous().t()
    assert not applies(x)
    weight.data = weight.data.contiguous()
    assert applies(x)
    assert bindings.train_hits == 0 and bindings.infer_hits > 3
    # kept out of copies, pickles and replicas; dropped when the implementation or
    # inplace is set
    assert copy.deepcopy(se)._bindings is None and se._bindings is bindings
    replica = se._replicate_for_data_parallel()  # as nn.DataParallel makes them
    assert replica._bindings is None and se._bindings is bindings
    restored = pickle.loads(pickle.dumps(se))
    assert restored._bindings is None and restored.implementation == 'auto'
    old_state = {k: v for k, v in se.__getstate__().items() if k[0] != '_' or
                 k in ('_parameters', '_buffers', '_modules')}  # as pickled before
    old_state.update(implementation='reference', inplace=True)
    old = SE.__new__(SE)
    old.__setstate__(old_state)
    assert (old.implementation, old.inplace) == ('reference', True)
    se.inplace = False
    assert se._bindings is None
    se, _ = bound_se()
    se.implementation = 'auto'
    assert se._bindings is None
    with pytest.raises(ValueError, match='implementation must be one of'):
        se.implementation = 'fastest'


def test_bindings_do_not_keep_the_input_that_stands_in_for_absent_buffers():
    """CBAM passes x in place of BatchNorm buffers it lacks (track_running_stats=False);
    an entry puts each call's own x there and keeps no input alive."""
    import gc
    import weakref
    se = SE(32, ratio=8)
    x = torch.randn(2, 32, 5, 6)
    params = [se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias]
    triton_programs.bind(se, triton_programs._ext.Program(), False, x, False, 64, 0, params,
                         [x], [])
    alive = weakref.ref(x)
    del x
    gc.collect()
    assert alive() is None
    with torch.no_grad():
        assert se._bindings(torch.randn(2, 32, 5, 6)) is not None


def test_bindings_replay_training_as_an_autograd_function_and_inplace_inference():
    se, x = bound_se(train=True)
    bindings = se._bindings
    with torch.no_grad():
        assert bindings(x) is None
    out = bindings(x)
    assert out is not None and out.grad_fn is not None and bindings.train_hits == 1
    out.sum().backward()  # parameter gradients: views of the (empty program's) workspace
    grads = [p.grad for p in se.parameters()]
    assert [tuple(g.shape) for g in grads] == [tuple(p.shape) for p in se.parameters()]
    # contiguous views of one workspace at the recorded offsets (0, 300, 400, 700)
    assert all(g.is_contiguous() for g in grads)
    base = grads[0].data_ptr()
    assert [(g.data_ptr() - base) // 4 for g in grads] == [0, 300, 400, 700]
    assert len({g.untyped_storage().data_ptr() for g in grads}) == 1
    se, x = bound_se(inplace=True)
    with torch.no_grad():
        assert se._bindings(x) is x


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


def test_triton_launch_passes_the_warps_and_replays_the_compiled_kernel():
    kernel, cache = FakeKernel(), {}
    triton_launch.launch(kernel, (3, 2, 1), cache, 'k', 0, 'a', 5, num_warps=1)
    triton_launch.launch(kernel, (3, 2, 1), cache, 'k', 0, 'b', 6, num_warps=1)
    assert kernel.launches == [('jit', (3, 2, 1), ('a', 5), 1),
                               ('direct', (3, 2, 1), ('b', 6), 1)]
    assert cache['k'].num_warps == 1
    recorder = triton_programs.Recorder()
    recorder(kernel, (1, 1, 1), {}, 'r', 0, 'c', num_warps=2)
    assert kernel.launches[-1] == ('jit', (1, 1, 1), ('c',), 2)
    assert recorder.calls[0][0].num_warps == 2
    # a program's block is the compiled kernel's warps x 32 threads
    spec = triton_programs.launch_spec(fake_compiled({'x': 'i32'}, num_warps=1), (1, 1, 1),
                                       (7,), [])
    assert spec[2] == 32


@needs_triton
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
def test_triton_passes_launch_with_the_warps_chosen_per_kernel(channels_last):
    """NUM_WARPS applies to contiguous NCHW inputs; channels_last keeps Triton's 4."""
    from cbam_mmdet.ops import cbam_triton
    module = CBAM(64).cuda()
    x, grad = make_input((2, 64, 9, 11), channels_last, 'cuda', torch.float16, seed=3)
    cbam_triton._plans.clear()
    run(module, x, grad, True)
    kernels = {'cscale': '_cbam_scale', 'bwddesc': '_bwd_desc_reduce', 'dx': '_bwd_dx',
               'bwdpix': '_bwd_pixels'}
    (plan,) = [p for key, p in cbam_triton._plans.items() if key[0] == 'cbam']
    warps = {}
    for key, compiled in plan.compiled.items():
        name = key[0] if isinstance(key, tuple) else key
        if name in kernels:
            warps[kernels[name]] = compiled.metadata.num_warps
    expected = {k: 4 if channels_last else cbam_triton.NUM_WARPS.get(k, 4)
                for k in kernels.values()}
    assert warps == expected
    assert channels_last or warps['_bwd_dx'] != 4  # the table does change a launch


def assert_close_with_layout(a, b, tol):
    """``a`` and ``b`` have one shape and strides and agree within ``tol``."""
    assert a.shape == b.shape and a.stride() == b.stride()
    torch.testing.assert_close(a, b, **tol)


def count_replays(monkeypatch, module):
    """A function giving the replays so far of ``module``'s calls: through the Python
    wrappers and through the module's bindings."""
    replays = {'infer': 0, 'train': 0}
    for name in replays:
        real = getattr(triton_programs, name)

        def counted(*args, _real=real, _name=name):
            replays[_name] += 1
            return _real(*args)
        monkeypatch.setattr(triton_programs, name, counted)

    def total():
        bindings = module._bindings
        return {name: count + (getattr(bindings, f'{name}_hits') if bindings else 0)
                for name, count in replays.items()}
    return total


def restored(setter):
    """For a fixture: yields ``setter`` (a ``set_*`` switch) and afterwards restores the
    setting it found first."""
    previous = []

    def setting(value):
        previous.append(setter(value))
    yield setting
    if previous:
        setter(previous[0])


@pytest.fixture
def graphs():
    """``set_graphs(value)`` for one test, restored after it."""
    yield from restored(triton_programs.set_graphs)


def test_program_graphs_switch_by_call_and_environment(graphs, monkeypatch):
    """Programs run as CUDA graph launches by default; ``set_graphs(False)`` and
    ``CBAM_MMDET_PROGRAM_GRAPHS=0`` turn that off; other values are refused."""
    ext = triton_programs._ext
    monkeypatch.delenv('CBAM_MMDET_PROGRAM_GRAPHS', raising=False)
    assert ext.graphs()
    graphs(False)
    assert not ext.graphs() and triton_programs.set_graphs(True) is False and ext.graphs()
    monkeypatch.setenv('CBAM_MMDET_PROGRAM_GRAPHS', '0')
    assert not ext.graphs()
    monkeypatch.setenv('CBAM_MMDET_PROGRAM_GRAPHS', '1')
    assert ext.graphs()
    with pytest.raises(ValueError, match='enabled must be True or False'):
        triton_programs.set_graphs('yes')


@pytest.fixture
def direct_grads(monkeypatch):
    """``set_direct_grads(value)`` for one test, restored after it; the environment
    variable unset."""
    monkeypatch.delenv('CBAM_MMDET_DIRECT_GRADS', raising=False)
    yield from restored(triton_programs.set_direct_grads)


def bound_se_call(direct_grads, direct=True, x_requires_grad=True):
    """A training call of an empty program bound to an SE module (see bound_se): its
    output, input and parameters."""
    direct_grads(direct)
    se, x = bound_se(train=True)
    x.requires_grad_(x_requires_grad)
    out = se._bindings(x)
    assert out is not None and se._bindings.train_hits == 1
    return out, x, list(se.parameters())


def test_direct_parameter_gradients_skip_autograd_edges_and_fill_grad(direct_grads,
                                                                      monkeypatch):
    """By default a training call's node has no autograd edge per parameter (x's only),
    and its backward sets each parameter's .grad itself; ``set_direct_grads(False)`` or
    ``CBAM_MMDET_DIRECT_GRADS=0`` give every parameter its edge again, and a parameter
    with a hook keeps its edge (its hook runs) while the others stay direct."""
    out, x, params = bound_se_call(direct_grads)
    assert [type(f).__name__ for f, _ in out.grad_fn.next_functions] == ['AccumulateGrad']
    out.sum().backward()
    assert x.grad is not None
    assert [tuple(p.grad.shape) for p in params] == [tuple(p.shape) for p in params]
    assert len({p.grad.untyped_storage().data_ptr() for p in params}) == 1  # one workspace
    for p in params:  # aliases of the workspace with the parameter's layout, not views
        assert p.grad._base is None and p.grad.stride() == p.stride()
    out, x, params = bound_se_call(direct_grads, direct=False)
    assert len(out.grad_fn.next_functions) == 1 + len(params)
    direct_grads(True)
    monkeypatch.setenv('CBAM_MMDET_DIRECT_GRADS', '0')
    assert not triton_programs._ext.direct_grads()
    out, x, params = bound_se_call(lambda value: None)
    assert len(out.grad_fn.next_functions) == 1 + len(params)
    monkeypatch.setenv('CBAM_MMDET_DIRECT_GRADS', '1')
    se, x = bound_se(train=True)
    seen = []
    se.fc2.weight.register_hook(lambda g: seen.append(tuple(g.shape)))
    out = se._bindings(x)
    assert len(out.grad_fn.next_functions) == 2  # x (no grad: an empty edge) and fc2.weight
    out.sum().backward()
    assert seen == [tuple(se.fc2.weight.shape)]
    assert all(p.grad is not None for p in se.parameters())
    with pytest.raises(ValueError, match='enabled must be True or False'):
        triton_programs.set_direct_grads(1)


def grad_accumulator(p):
    return p.view_as(p).grad_fn.next_functions[0][0]


def test_bound_training_calls_keep_their_parameters_grad_accumulators(direct_grads):
    """A binding keeps its direct parameters' AccumulateGrad nodes past the graphs that
    used them (the next call finds them instead of making new ones): a node tagged
    between two calls is the one autograd hands out after the second call's graph is
    gone. A hook registered on it then gives that parameter its autograd edge again."""
    direct_grads(True)
    se, x = bound_se(train=True)
    x.requires_grad_(True)
    se._bindings(x).sum().backward()
    grad_accumulator(se.fc1.weight).metadata['tag'] = 'kept'
    se.zero_grad(set_to_none=True)
    se._bindings(x).sum().backward()
    assert grad_accumulator(se.fc1.weight).metadata.get('tag') == 'kept'
    seen = []
    grad_accumulator(se.fc1.weight).register_hook(lambda *args: seen.append(1))
    out = se._bindings(x)
    assert len(out.grad_fn.next_functions) == 2  # x and fc1.weight
    out.sum().backward()
    assert seen == [1] and se._bindings.train_hits == 3


def test_direct_parameter_gradients_follow_what_the_backward_asks_for(direct_grads):
    """Direct gradients accumulate as AccumulateGrad does (added in place to a .grad
    already set; a second backward through a retained graph adds again), reach only the
    parameters named in ``backward(inputs=...)``, are left alone by
    ``torch.autograd.grad`` of x, and asking that for a parameter raises, naming the
    setting."""
    out, x, params = bound_se_call(direct_grads)
    out.sum().backward(retain_graph=True)
    grad = params[0].grad
    first = grad.clone()
    out.sum().backward()  # the empty program leaves its workspace as it was: 2x
    assert params[0].grad is grad
    torch.testing.assert_close(grad, 2 * first, equal_nan=True)
    with pytest.raises(RuntimeError, match='backward through the graph a second time'):
        out.sum().backward()
    out, x, params = bound_se_call(direct_grads)
    torch.autograd.grad(out.sum(), x)
    assert all(p.grad is None for p in params)
    out, x, params = bound_se_call(direct_grads)
    with pytest.raises(RuntimeError, match='CBAM_MMDET_DIRECT_GRADS=0'):
        torch.autograd.grad(out.sum(), [x, params[1]])
    out, x, params = bound_se_call(direct_grads)
    out.sum().backward(inputs=[x, params[2]])
    assert [p.grad is not None for p in params] == [False, False, True, False]
    assert x.grad is not None
    out, x, params = bound_se_call(direct_grads, x_requires_grad=False)
    out.sum().backward()  # the parameters' gradients only
    assert all(p.grad is not None for p in params)


    class DropGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t):
            return t.clone()

        @staticmethod
        def backward(ctx, g):
            return None

    out, x, params = bound_se_call(direct_grads)  # an undefined output gradient: zero
    (DropGradient.apply(out).sum() + x.sum()).backward()
    assert all(p.grad is None for p in params)
    torch.testing.assert_close(x.grad, torch.ones_like(x))


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_direct_parameter_gradients_match_autograd_edges(cls, direct_grads):
    """On CUDA, replayed training calls give the same parameter gradients with direct
    gradients as through autograd edges and as the reference path: one backward, two
    backwards accumulating without zeroing, and a second backward of a retained graph with
    another output gradient (into a copy of the workspace: the first's .grad, an alias of
    it, keeps its values)."""
    torch.manual_seed(0)
    fast = cls(64, ratio=8).cuda()
    ref = copy.deepcopy(fast)
    ref.implementation = 'reference'
    x = torch.randn(2, 64, 12, 10, device='cuda')
    g1, g2 = torch.randn_like(x), torch.randn_like(x)

    def grads(module, retained):
        module.zero_grad(set_to_none=True)
        out = module(x)
        out.backward(g1, retain_graph=retained)
        if retained:
            out.backward(g2)
        else:
            module(x).backward(g2)
        return [p.grad.clone() for p in module.parameters()]

    want = {r: grads(ref, r) for r in (False, True)}
    for direct in (True, False, True):
        direct_grads(direct)
        for _ in range(2):  # record (with dx and a dense output gradient), then replay
            fast(x.clone().requires_grad_()).backward(g1)
        for retained in (False, True):
            out = fast(x)
            assert len(out.grad_fn.next_functions) == (1 if direct else 1 + len(want[True]))
            for a, b in zip(grads(fast, retained), want[retained]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert fast._bindings.train_hits > 0


@needs_triton
def test_direct_parameter_gradients_leave_distributed_data_parallel_its_hooks(
        direct_grads, tmp_path):
    """Under DistributedDataParallel (one process, NCCL) the parameters' grad
    accumulators carry DDP's hooks, so replayed calls give them autograd edges and DDP
    reduces their gradients: the same as the module's without DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    direct_grads(True)
    torch.manual_seed(0)
    m = CBAM(64, ratio=8).cuda()
    plain = copy.deepcopy(m)
    x = torch.randn(2, 64, 12, 10, device='cuda')
    g = torch.randn_like(x)
    dist.init_process_group('nccl', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    try:
        ddp = DistributedDataParallel(m, device_ids=[0])
        for _ in range(3):  # record (with dx), then replay
            ddp.zero_grad(set_to_none=True)
            ddp(x.clone().requires_grad_()).backward(g)
        out = m(x)  # the module itself, inside DDP's wrapper
        assert len(out.grad_fn.next_functions) == 1 + len(list(m.parameters()))
        assert m._bindings.train_hits > 0
        for _ in range(3):
            plain.zero_grad(set_to_none=True)
            plain(x.clone().requires_grad_()).backward(g)
        for a, b in zip(m.parameters(), plain.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    finally:
        dist.destroy_process_group()


@needs_triton
@pytest.mark.parametrize('as_graphs', [True, False], ids=['graphs', 'launches'])
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'channels_last'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_triton_programs_replay_matches_the_python_path(cls, channels_last, training,
                                                        as_graphs, graphs, monkeypatch):
    """The first call records, later calls replay from C++ (counted), as one CUDA graph
    launch per program or kernel by kernel; outputs, dx, parameter gradients and
    BatchNorm's running statistics match the Python path's on the same module, in fp32
    and in fp16 under autocast, with and without autograd (a shape without sums by
    atomics, so both paths compute the same values)."""
    graphs(as_graphs)
    graph_launches = triton_programs._ext.graph_launches()
    _, fast = pair(cls, 48, device='cuda', implementation='auto', ratio=8)
    python = copy.deepcopy(fast)
    replays = count_replays(monkeypatch, fast)
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
    replays = replays()
    assert replays['train'] >= 4 and replays['infer'] >= 4, replays
    assert fast._bindings.train_hits > 0 and fast._bindings.infer_hits > 0
    launched = triton_programs._ext.graph_launches() - graph_launches
    # every replayed training call runs its forward and backward program as graphs
    assert launched >= 2 * replays['train'] if as_graphs else launched == 0, launched


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_triton_programs_launch_kernel_by_kernel_into_a_capturing_stream(cls, graphs):
    """A bound call captured into a CUDA graph (torch.cuda.graph) launches its kernels
    one by one into the capture, not a graph of its own, and the captured graph replays
    the call's result."""
    graphs(True)
    torch.manual_seed(0)
    module = cls(64, ratio=8).cuda().eval()
    x = torch.randn(2, 64, 12, 10, device='cuda')
    with torch.no_grad():
        for _ in range(3):  # record, bind, replay
            want = module(x)
    assert module._bindings.infer_hits >= 1
    static = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):  # binds the call on the capture's stream
            module(static)
    torch.cuda.current_stream().wait_stream(stream)
    launched = triton_programs._ext.graph_launches()
    hits = module._bindings.infer_hits
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream), torch.no_grad():
        out = module(static)
    assert module._bindings.infer_hits == hits + 1  # the bound call was captured
    assert triton_programs._ext.graph_launches() == launched
    static.copy_(x * 2)
    graph.replay()
    torch.cuda.synchronize()
    with torch.no_grad():
        torch.testing.assert_close(out, module(x * 2), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(want, module(x), rtol=1e-5, atol=1e-6)
    assert triton_programs._ext.graph_launches() > launched  # outside capture: graphs


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_triton_programs_bound_graph_sets_only_changed_arguments(cls, graphs):
    """A bound inference call launches a graph of its own: called again on the same
    input, it leaves the kernel nodes whose arguments did not change as they are
    (counted); on an input at another address, it sets them again. A second module of
    the same shape shares the recorded program but not the graph. Every call returns
    its own input's result."""
    graphs(True)
    torch.manual_seed(0)
    first, second = cls(64, ratio=8).cuda().eval(), cls(64, ratio=8).cuda().eval()
    references = []
    for module in (first, second):
        references.append(copy.deepcopy(module))
        references[-1].implementation = 'reference'
    x = torch.randn(2, 64, 12, 10, device='cuda')
    y = torch.randn_like(x)
    tol = dict(rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        for _ in range(3):  # record, bind, replay
            first(x)
        hits = first._bindings.infer_hits
        kept = triton_programs._ext.graph_nodes_kept()
        for _ in range(3):
            torch.testing.assert_close(first(x), references[0](x), **tol)
        assert first._bindings.infer_hits == hits + 3
        assert triton_programs._ext.graph_nodes_kept() > kept
        for _ in range(2):
            for module, reference in zip((first, second), references):
                for t in (y, x):
                    torch.testing.assert_close(module(t), reference(t), **tol)
    assert second._bindings.infer_hits >= 1


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_triton_programs_bound_training_graphs_set_only_changed_arguments(cls, graphs):
    """Bound training calls launch graphs of their own for the forward and the backward:
    repeated on the same input, with the gradients set to None between steps, kernel
    nodes keep their arguments (counted); on alternating inputs, the output, dx, the
    parameter gradients and BatchNorm's running statistics equal the reference's."""
    graphs(True)
    torch.manual_seed(0)
    fast = cls(64, ratio=8).cuda()
    reference = copy.deepcopy(fast)
    reference.implementation = 'reference'
    grad = torch.randn(2, 64, 12, 10, device='cuda')

    def step(module, x):
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(x)
        out.backward(grad)
        return [out.detach(), x.grad] + [p.grad for p in module.parameters()]

    x = torch.randn_like(grad).requires_grad_()
    for _ in range(3):  # record, bind, replay
        step(fast, x)
    hits = fast._bindings.train_hits
    kept = triton_programs._ext.graph_nodes_kept()
    for _ in range(3):
        step(fast, x)
    assert fast._bindings.train_hits == hits + 3
    assert triton_programs._ext.graph_nodes_kept() > kept
    reference.load_state_dict(fast.state_dict())
    inputs = [torch.randn_like(grad).requires_grad_() for _ in range(2)]
    for _ in range(2):
        for x in inputs:
            for got, want in zip(step(fast, x), step(reference, x)):
                torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    for name, buffer in reference.named_buffers():
        torch.testing.assert_close(dict(fast.named_buffers())[name], buffer, rtol=1e-4,
                                   atol=1e-5, msg=name)
    assert fast._bindings.train_hits >= hits + 7


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
    ref, fast = pair(cls, 1024, device='cuda', implementation='auto', ratio=8)
    replays = count_replays(monkeypatch, fast)
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
    assert replays()['train'] >= 2, replays()


@needs_triton
def test_triton_programs_second_backward_and_no_input_grad():
    """retain_graph: a second backward through a replayed call gives the same
    gradients; an input without requires_grad skips dx. The backward adds up with
    atomics, so two backward passes agree to the order of their sums."""
    tol = dict(rtol=1e-3, atol=1e-4)
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
        torch.testing.assert_close(a, b, **tol)
    m.zero_grad()
    m(x).backward(g)  # x without requires_grad: parameters only
    for p, want in zip(m.parameters(), first):
        torch.testing.assert_close(p.grad, want, **tol)


@needs_triton
@pytest.mark.parametrize('convert', ['before', 'after'], ids=['converted', 'converted_later'])
@pytest.mark.parametrize('training', [True, False], ids=['train', 'eval'])
def test_triton_path_takes_a_cbam_converted_to_channels_last(convert, training, monkeypatch):
    """``model.to(memory_format=torch.channels_last)`` lays the spatial convolution's
    weight out channels_last: the kernels read it so (replayed and bound calls too), and
    its gradient comes laid out as the weight, also where the module was converted after
    its calls were bound."""
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    ref, fast = pair(CBAM, 64, device='cuda', implementation='auto', ratio=8)
    tol = dict(rtol=1e-3, atol=1e-4)  # sums in another order (atomics)
    weight = fast.spatial_attention.conv.weight
    replays = count_replays(monkeypatch, fast)
    x, grad = make_input((2, 64, 10, 12), True, device='cuda')
    for step in range(6):
        if step == (0 if convert == 'before' else 3):
            for m in (ref, fast):
                m.to(memory_format=torch.channels_last)
            assert not weight.is_contiguous()
            at_conversion = replays()
        got, want = run(fast, x, grad, training), run(ref, x, grad, training)
        for a, b in zip(got[:2], want[:2]):
            assert_close_with_layout(a, b, tol)
        for k in got[2]:
            torch.testing.assert_close(got[2][k], want[2][k], **tol,
                                       msg=lambda m: f'{k}: {m}')
        assert weight.grad.stride() == weight.stride()
        for k in got[3]:
            torch.testing.assert_close(got[3][k], want[3][k], msg=k)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), ref(x), **tol)
        for m in (ref, fast):
            m.zero_grad(set_to_none=True)
    # after the conversion: one call records, the later ones replay
    replayed = {k: v - at_conversion[k] for k, v in replays().items()}
    assert replayed['train'] >= 2 and replayed['infer'] >= 2, replayed


@needs_triton
@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_bound_calls_follow_reloaded_and_replaced_parameters_and_modes(cls):
    """After a module's calls are bound, loading new weights, replacing a parameter and
    switching between training and evaluation modes give the reference's outputs."""
    from test_attention_modules import randomize_
    ref, fast = pair(cls, 64, device='cuda', implementation='auto', ratio=8)
    x = torch.randn(2, 64, 10, 12, device='cuda')
    with torch.no_grad():
        for _ in range(3):
            fast.eval()(x)
        assert fast._bindings.infer_hits >= 1
        torch.testing.assert_close(fast(x), ref.eval()(x))
        randomize_(ref, seed=1)
        fast.load_state_dict(ref.state_dict())
        torch.testing.assert_close(fast(x), ref(x))
        name, p = next(iter(fast.named_parameters()))
        path, _, attr = name.rpartition('.')
        new = torch.randn_like(p)
        for m in (fast, ref):
            setattr(m.get_submodule(path), attr, torch.nn.Parameter(new.clone()))
        torch.testing.assert_close(fast(x), ref(x))
        for _ in range(3):
            torch.testing.assert_close(fast.train()(x), ref.train()(x))
            torch.testing.assert_close(fast.eval()(x), ref.eval()(x))
    assert fast._bindings.infer_hits >= 6


@needs_triton
def test_triton_programs_replay_every_plugin_call_of_the_benchmark(monkeypatch):
    """The benchmark counts, per plugin variant and mode, the calls of one step replayed
    from C++: all 16 for the shipped path, none for -graph (not bound), and a warning
    where the replay is switched off."""
    from cbam_mmdet.benchmark import run_benchmark
    monkeypatch.delenv(triton_programs.ENV_VAR, raising=False)
    logs = []
    results = run_benchmark(variants=('baseline', 'se', 'cbam', 'se-graph'),
                            modes=('train', 'infer'), device='cuda', amp=True,
                            shape=(128, 128), backbone_only=True, rounds=1, warmup=1,
                            iters=1, log=logs.append)
    counted = {(r['variant'], r['mode']): r for r in results if 'replayed_calls' in r}
    assert set(counted) == {(v, m) for v in ('se', 'cbam', 'se-graph')
                            for m in ('train', 'infer')}
    for (variant, mode), r in counted.items():
        assert r['plugin_calls'] == 16
        if variant == 'se-graph':
            assert not r['replay_expected'] and r['replayed_calls'] == 0
        else:
            assert r['replay_expected'] and r['replayed_calls'] == 16, (variant, mode)
    assert logs[-1].startswith('calls replayed from C++ per step:')
    assert 'WARNING' not in logs[-1]
    monkeypatch.setenv(triton_programs.ENV_VAR, '0')
    logs = []
    results = run_benchmark(variants=('baseline', 'se'), modes=('infer',), device='cuda',
                            amp=True, shape=(128, 128), backbone_only=True, rounds=1,
                            warmup=1, iters=1, log=logs.append)
    se = next(r for r in results if r['variant'] == 'se')
    assert se['replayed_calls'] == 0 and se['replay_expected']
    assert 'WARNING: se infer: 0 of 16' in logs[-1]
    assert 'CBAM_MMDET_TRITON_PROGRAMS=0' in logs[-1]


@needs_triton
def test_triton_programs_missing_warns_once_and_the_python_launches_match(monkeypatch):
    """Without the extension the Triton kernels run from Python, with the same outputs
    and gradients, and the first call warns that the replay is not built."""
    import warnings

    from cbam_mmdet.ops import extensions
    monkeypatch.setattr(triton_programs, '_ext', None)
    monkeypatch.setattr(extensions, '_warned', set())
    se = SE(64, ratio=8).cuda()
    x = torch.randn(2, 64, 9, 11, device='cuda', requires_grad=True)
    with pytest.warns(RuntimeWarning, match=r'_triton_programs is not built.*launched '
                      'from Python'):
        out = se(x)
    ref_x = x.detach().clone().requires_grad_(True)
    ref = se.reference_forward(ref_x)
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(out)
    dx, = torch.autograd.grad(out, x, g)
    ref_dx, = torch.autograd.grad(ref, ref_x, g)
    torch.testing.assert_close(dx, ref_dx, rtol=1e-4, atol=1e-5)
    assert se.__dict__.get('_bindings') is None  # nothing bound without the extension
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        se(x)
