"""CBAM and SE (the public modules, whatever implementation is the default) give no inf or
NaN in fp16: under CPU autocast (float16) and with plain float16 inputs, for very large
(1e4) and very small (1e-4, and 1e-7, below fp16's smallest normal number) activations,
in training and eval mode. The attention maps are reduced in float32: the result must
also match a float64 computation on the same (fp16-rounded) input."""
import copy

import pytest
import torch

from cbam_mmdet import CBAM, SE

FP16_TINY = 2.0 ** -24  # spacing of fp16 numbers near zero (subnormals)
C = 64


def make(cls, train):
    torch.manual_seed(0)
    module = cls(in_channels=C)
    if cls is CBAM:
        # A trained spatial BatchNorm (the official init sets its weight to 0, which makes
        # the spatial map 0.5 everywhere and hides its numerics).
        with torch.no_grad():
            module.spatial_attention.bn.weight.fill_(1.0)
    return module.train(train)


def activations(scale):
    torch.manual_seed(1)
    x = torch.randn(2, C, 12, 12)
    x[:, : C // 2] = x[:, : C // 2].abs()  # large positive channels: sums do not cancel
    return x * scale


def float64_reference(module, x):
    return copy.deepcopy(module).double()(x.double())


def assert_matches(out, ref, scale):
    """fp16 output = fp16(x * fp16(map)): relative rounding, plus the absolute rounding of
    the map near 0 (a saturated gate of 1e-9 becomes 0) times |x| <= 5 * scale."""
    assert torch.isfinite(out).all(), 'inf or NaN in the output'
    torch.testing.assert_close(out.double(), ref, rtol=5e-3,
                               atol=2 * FP16_TINY * (1 + 5 * scale), check_dtype=False)


CASES = [(cls, train, scale) for cls in (CBAM, SE) for train in (True, False)
         for scale in (1e4, 1e-4, 1e-7)]
IDS = [f'{c.__name__}-{"train" if t else "eval"}-{s:g}' for c, t, s in CASES]


def test_cpu_autocast_float16_is_supported():
    with torch.autocast('cpu', dtype=torch.float16):
        y = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
        z = torch.nn.functional.conv2d(torch.randn(1, 2, 5, 5), torch.randn(1, 2, 3, 3))
    assert y.dtype == torch.float16 and z.dtype == torch.float16


@pytest.mark.parametrize('cls,train,scale', CASES, ids=IDS)
def test_autocast_fp16_input(cls, train, scale):
    """What AMP training feeds a plugin: the fp16 output of the conv before it."""
    module, x = make(cls, train), activations(scale).half()
    ref = float64_reference(module, x)
    with torch.autocast('cpu', dtype=torch.float16):
        out = module(x)
    assert out.dtype == torch.float16
    assert_matches(out, ref, scale)


@pytest.mark.parametrize('cls,train,scale', CASES, ids=IDS)
def test_autocast_fp32_input(cls, train, scale):
    """A float32 tensor reaching the plugin inside an autocast region."""
    module, x = make(cls, train), activations(scale)
    ref = float64_reference(module, x)
    with torch.autocast('cpu', dtype=torch.float16):
        out = module(x)
    assert torch.isfinite(out).all(), 'inf or NaN in the output'
    torch.testing.assert_close(out.double(), ref, rtol=5e-3, atol=1e-3 * scale,
                               check_dtype=False)


@pytest.mark.parametrize('cls,train,scale', CASES, ids=IDS)
def test_plain_fp16_input(cls, train, scale):
    module, x = make(cls, train), activations(scale).half()
    ref = float64_reference(module, x)
    out = module(x)
    assert out.dtype == torch.float16
    assert_matches(out, ref, scale)


@pytest.mark.parametrize('cls', (CBAM, SE))
def test_autocast_backward_has_finite_gradients(cls):
    module, x = make(cls, True), activations(1e4).half().requires_grad_()
    with torch.autocast('cpu', dtype=torch.float16):
        out = module(x)
    (out.float() / 1e4).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_the_large_activations_overflow_a_plain_fp16_reduction():
    """The control: the channel sum these tests feed overflows fp16 when reduced in fp16,
    so the tests above see the float32 reduction at work."""
    x = activations(1e4).half()
    assert torch.isinf(x[:, : C // 2].sum(dim=1, dtype=torch.float16)).any()
    assert torch.isfinite(x[:, : C // 2].sum(dim=1, dtype=torch.float32)).all()
