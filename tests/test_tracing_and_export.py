"""Tracing, scripting and export record the plugins' equations, not the result of a fast
path: the fast paths step aside while torch.jit traces or torch.export exports."""
import pytest
import torch
import torch.nn as nn

from cbam_mmdet import CBAM, SE, ops
from test_attention_modules import randomize_


class Block(nn.Module):
    """A convolution, then the plugin, as in a ResNet block."""

    def __init__(self, plugin):
        super().__init__()
        self.conv = nn.Conv2d(8, 32, 3, padding=1)
        self.plugin = plugin

    def forward(self, x):
        return self.plugin(self.conv(x))


def block(cls):
    torch.manual_seed(0)
    return Block(randomize_(cls(32, ratio=8))).eval()


@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
@pytest.mark.parametrize('grad', [False, True], ids=['no_grad', 'autograd'])
def test_jit_trace_records_the_equations(cls, grad):
    """Traced under no_grad (where the CPU kernels would take the call) or with autograd
    on, the model gives eager's outputs on a new input of another size."""
    model = block(cls)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, torch.randn(2, 8, 12, 10), check_trace=False)
        x = torch.randn(3, 8, 9, 14) * 3
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('cls', [CBAM, SE], ids=['CBAM', 'SE'])
def test_torch_export_records_the_equations(cls):
    model = block(cls)
    with torch.no_grad():
        exported = torch.export.export(model, (torch.randn(2, 8, 12, 10),))
        x = torch.randn(2, 8, 12, 10) * 3
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_use_reference_while_tracing():
    seen = []

    class Probe(nn.Module):
        def forward(self, x):
            seen.append(ops.use_reference())
            return x + 1

    assert not ops.use_reference()
    torch.jit.trace(Probe(), torch.randn(2), check_trace=False)
    assert seen == [True]
