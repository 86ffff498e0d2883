"""The fast cell's batch norm (`spaces.kernels.batch_norm`) is `F.batch_norm`: same output, gradients and running
statistics, at least as accurate (against float64), and PyTorch's own kernel wherever it does not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nni_emotionnas.spaces.kernels import batch_norm as B

CL = torch.channels_last


def run(fn, x: torch.Tensor, grad: torch.Tensor, affine: bool, dtype: torch.dtype = torch.float32) -> list:
    """[output, input grad, weight grad, bias grad, running mean, running var] of one training-mode call."""
    torch.manual_seed(1)
    channels = x.shape[1]
    weight = torch.rand(channels).to(dtype).requires_grad_() if affine else None  # the same draws in any dtype
    bias = torch.randn(channels).to(dtype).requires_grad_() if affine else None
    mean, var = torch.randn(channels).to(dtype), (torch.rand(channels) + 0.5).to(dtype)
    x = x.to(dtype).detach().requires_grad_()
    out = fn(x, mean, var, weight, bias, True, 0.1, 1e-5)
    out.backward(grad.to(dtype))
    grads = [weight.grad, bias.grad] if affine else []
    return [out.detach(), x.grad, *grads, mean, var]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(3, 5, 7, 9), (4, 24, 16, 16), (2, 1, 3, 3)])
def test_equals_pytorch_batch_norm(shape: tuple[int, ...], affine: bool) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 3 + 2).contiguous(memory_format=CL)
    grad = torch.randn(shape, generator=g).contiguous(memory_format=CL)
    ours, torchs = run(B.batch_norm, x, grad, affine), run(F.batch_norm, x, grad, affine)
    assert ours[0].is_contiguous(memory_format=CL) and ours[1].is_contiguous(memory_format=CL)
    for name, a, b in zip(["out", "grad x", "grad w", "grad b", "running mean", "running var"], ours, torchs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_at_least_as_accurate_as_pytorch_against_float64() -> None:
    g = torch.Generator().manual_seed(0)
    shape = (16, 12, 64, 64)
    x = (torch.randn(shape, generator=g) * 2 + 3).contiguous(memory_format=CL)
    grad = torch.randn(shape, generator=g).contiguous(memory_format=CL)
    exact = run(F.batch_norm, x, grad, True, torch.float64)

    def error(results: list) -> float:
        return max(float((a.double() - e).abs().max() / e.abs().max()) for a, e in zip(results[:4], exact))

    ours, torchs = error(run(B.batch_norm, x, grad, True)), error(run(F.batch_norm, x, grad, True))
    assert ours < 1e-5
    assert ours <= torchs * 1.5


def test_pytorch_kernel_where_it_does_not_apply() -> None:
    """Eval mode, NCHW input, other dtypes: the autograd node is PyTorch's."""
    cases = [
        (torch.randn(2, 4, 5, 5).contiguous(memory_format=CL), True),  # applies
        (torch.randn(2, 4, 5, 5), True),
        (torch.randn(2, 4, 5, 5, dtype=torch.float64).contiguous(memory_format=CL), True),
        (torch.randn(2, 4, 5, 5).contiguous(memory_format=CL), False),
    ]
    for x, training in cases[1:]:
        weight = torch.ones(x.shape[1], dtype=x.dtype, requires_grad=True)
        mean, var = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
        out = B.batch_norm(x, mean, var, weight, None, training, 0.1, 1e-5)
        assert "ChannelsLastBatchNorm" not in type(out.grad_fn).__name__
    x = cases[0][0]
    out = B.batch_norm(x, None, None, torch.ones(4, requires_grad=True), None, True, 0.1, 1e-5)
    assert type(out.grad_fn).__name__ == "ChannelsLastBatchNormBackward"
