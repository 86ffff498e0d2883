"""A fast forward/backward for the DARTS supernet cell: the same function as `WeightedSumMixedCell`, computed
state by state instead of edge by edge.

What the naive mixture (every edge runs every candidate on its input) does twice or more, this does once:
- every edge reading state j gets the same ReLU(j), max-pool(j), avg-pool(j) and identity: computed once per
  state, and their weighted sums for all those edges are one (edges x 3) @ (3 x pixels) product;
- a depthwise conv followed by its pointwise conv is one dense conv whose weight is P[o,c] * D[c] (the same
  linear map): oneDNN runs it far faster than a depthwise conv, whose weight gradient is its slow part, and
  the depthwise output is never stored. The convs of all edges reading state j are one conv (their
  weights concatenated), the second stage of the separable convs one grouped conv;
- an edge weight times a batch norm's output is the batch norm with affine weight w*gamma and bias w*beta,
  so weighting a candidate keeps no extra tensor; the batch norms of all edges from j are one call;
- everything is channels-last (the layout oneDNN's convs and pools are fast in); the batch norms take their
  sums from matrix products (`spaces.kernels.batch_norm`: PyTorch's channels-last kernel is slow at a DARTS cell's
  few channels);
- the cell's input blocks (`CellInputs`) go through the same conv and batch-norm paths as the edges;
- with `checkpoint_cells`, the edges from each state are recomputed in backward one state at a time.
Parameters, buffers, their names and the alphas are NNI's cell's own; running statistics are updated as each
module's own batch norm would. Any other candidate module is run as it is, on its own edge.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from nni_emotionnas.nni_compat import DifferentiableMixedCell, arch_alphas, arch_softmax, preprocess_cell_inputs
from nni_emotionnas.spaces.darts_ops import CellInputs, DilConv, FactorizedReduce, ReLUConvBN, SepConv
from nni_emotionnas.spaces.kernels.batch_norm import batch_norm
from nni_emotionnas.spaces.kernels.cell_checkpoint import recomputed

CHANNELS_LAST = torch.channels_last


class ChannelsLastGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient channels-last: gradients arriving as slices of a concat or
    split are strided, and batch-norm and conv backward on strided gradients are several times slower."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous(memory_format=CHANNELS_LAST)


def fused_batch_norm(x: torch.Tensor, norms: Sequence[Any], scales: Optional[torch.Tensor]) -> torch.Tensor:
    """`cat_m(scales[m] * norms[m](x_m))` where x = cat_m(x_m) along channels, in one batch-norm call.

    Running statistics are gathered from the modules and written back, so each module ends up as if it had
    normalised its own slice."""
    first = norms[0]
    channels = first.num_features
    weight: Optional[torch.Tensor]
    if first.affine:
        weight = torch.stack([bn.weight for bn in norms])
        bias = torch.stack([bn.bias for bn in norms])
        if scales is not None:
            weight, bias = weight * scales[:, None], bias * scales[:, None]
        weight, bias = weight.flatten(), bias.flatten()
    else:
        weight, bias = (scales.repeat_interleave(channels) if scales is not None else None), None
    updates = first.training and first.track_running_stats
    mean = torch.cat([bn.running_mean for bn in norms]) if first.track_running_stats else None
    var = torch.cat([bn.running_var for bn in norms]) if first.track_running_stats else None
    momentum = first.momentum
    if updates:
        with torch.no_grad():
            torch._foreach_add_([bn.num_batches_tracked for bn in norms], 1)
        if momentum is None:  # cumulative average, as nn.BatchNorm2d does with momentum=None
            momentum = 1.0 / float(first.num_batches_tracked)
    out = batch_norm(x, mean, var, weight, bias, first.training or mean is None, momentum or 0.0, first.eps)
    if updates:
        assert mean is not None and var is not None, "only batch norms that track statistics update them"
        with torch.no_grad():
            torch._foreach_copy_([bn.running_mean for bn in norms], list(mean.split(channels)))
            torch._foreach_copy_([bn.running_var for bn in norms], list(var.split(channels)))
    return out


def separable_weight(block: DilConv) -> torch.Tensor:
    """The dense k x k weight of a depthwise conv (D) followed by a pointwise conv (P): W[o,c] = P[o,c] D[c]."""
    depthwise, pointwise = block[1].weight, block[2].weight
    return pointwise[:, :, 0, 0, None, None] * depthwise[:, 0][None]


def separable_convs(x: torch.Tensor, blocks: Sequence[DilConv], groups: int) -> torch.Tensor:
    """The convs of `DilConv` blocks (ReLU and batch norm left to the caller) as one conv over `x`:
    groups=1 when all read `x`, groups=len(blocks) when block m reads the m-th channel group of `x`."""
    depthwise = blocks[0][1]
    weight = torch.cat([separable_weight(b) for b in blocks])
    return F.conv2d(x, weight, None, depthwise.stride, depthwise.padding, depthwise.dilation, groups)


def factorized_reduce_weight(module: FactorizedReduce) -> torch.Tensor:
    """`FactorizedReduce`'s two stride-2 1x1 convs, on x and on x shifted by one pixel, as one 2x2 stride-2
    conv: the first reads tap (0, 0), the second tap (1, 1)."""
    return torch.cat([F.pad(module.conv_1.weight, (0, 1, 0, 1)), F.pad(module.conv_2.weight, (1, 0, 1, 0))])


def factorized_reduce(relu_x: torch.Tensor, modules: Sequence[FactorizedReduce]) -> torch.Tensor:
    """The convs of `FactorizedReduce` modules reading one (ReLU'd) input; odd sizes are zero-padded at the end
    as the module pads its shifted branch, so both give ceil(size / 2)."""
    height, width = relu_x.shape[2:]
    if height % 2 or width % 2:
        relu_x = F.pad(relu_x, (0, width % 2, 0, height % 2))
    return F.conv2d(relu_x, torch.cat([factorized_reduce_weight(m) for m in modules]), stride=2)


def cell_input(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """One of `CellInputs`' blocks with the edges' conv and batch norm: their 1x1 convs and batch norms at a
    cell's few channels cost as much as the edges' convs through the modules' own forward."""
    if isinstance(block, ReLUConvBN):
        conv: Any = block[1]
        out = F.conv2d(F.relu(x), conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        return fused_batch_norm(out, [block[2]], None)
    if isinstance(block, FactorizedReduce):
        return fused_batch_norm(factorized_reduce(F.relu(x), [block]), [block.bn], None)
    return block(x)


def preprocess(preprocessor: nn.Module, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """The cell's input states: `CellInputs` block by block through `cell_input`, any other preprocessor as it is."""
    if isinstance(preprocessor, CellInputs):
        return [cell_input(preprocessor.pre0, inputs[0]), cell_input(preprocessor.pre1, inputs[1])]
    return list(preprocessor(inputs))


def mix_shared(outputs: list[torch.Tensor], scales: list[torch.Tensor]) -> list[torch.Tensor]:
    """For every edge m, sum_k scales[k][m] * outputs[k]: one (edges x K) @ (K x pixels) matrix product over the
    K parameter-free outputs the edges share, computed on the channels-last storage."""
    nhwc = [y.permute(0, 2, 3, 1) for y in outputs]  # a view: the tensors are channels-last
    mixed = torch.stack(scales, 1) @ torch.stack(nhwc).flatten(1)
    return [t.view(nhwc[0].shape).permute(0, 3, 1, 2) for t in mixed]


class FastMixedCell(DifferentiableMixedCell):
    """NNI's DARTS cell mixture (softmaxed alphas per edge, implicit `none`) with the state-by-state forward
    described in the module docstring. Plugged in by `SpectrogramSpace.extra_oneshot_hooks`."""

    def _prepare(self, inputs: Sequence[Any]) -> tuple[list, list[torch.Tensor], dict[tuple[int, int], torch.Tensor]]:
        """Channels-last cell inputs, the preprocessed input states and every edge's normalised weights, taken in
        NNI's order (node by node), so GumbelDARTS draws the same noise as with the naive cell."""
        processed = [
            x.contiguous(memory_format=CHANNELS_LAST) for x in preprocess_cell_inputs(self.num_predecessors, *inputs)
        ]
        first, end = self.num_predecessors, self.num_predecessors + self.num_nodes
        alphas = arch_alphas(self)
        weights = {
            (i, j): arch_softmax(self, alphas[f"{self.label}/{i}_{j}"]) for i in range(first, end) for j in range(i)
        }
        return processed, preprocess(self.preprocessor, processed), weights

    def forward(self, *inputs: Any) -> Any:
        return self._forward(inputs, recompute_states=False)

    def forward_checkpointed(self, inputs: list[torch.Tensor]) -> Any:
        """The forward with `checkpoint_cells`: the edges from each state are recomputed in backward one state
        at a time, so backward holds one state's activations instead of the whole cell's (`recomputed`)."""
        return self._forward(inputs, recompute_states=torch.is_grad_enabled())

    def _forward(self, inputs: Sequence[Any], recompute_states: bool) -> Any:
        processed, states, weights = self._prepare(inputs)
        first, end = self.num_predecessors, self.num_predecessors + self.num_nodes
        totals: dict[int, torch.Tensor] = {}
        for j in range(end - 1):
            targets = range(max(j + 1, first), end)

            def edge_terms(x: torch.Tensor, j: int = j, targets: range = targets) -> tuple[torch.Tensor, ...]:
                return tuple(term for _, term in self._edges_from(j, x, targets, weights))

            if recompute_states:
                ops = [self.ops[i - first][j] for i in targets]
                terms = recomputed(edge_terms, [states[j]], ops)
            else:
                terms = edge_terms(states[j])
            for i, term in zip(targets, terms):
                totals[i] = totals[i].add_(term) if i in totals else term
            if j + 1 >= first:  # every edge into node j+1 is summed
                states.append(totals.pop(j + 1))
        return self.postprocessor(torch.cat(states[first:], self.concat_dim), processed)

    def _edges_from(
        self, j: int, x: torch.Tensor, targets: range, weights: dict[tuple[int, int], torch.Tensor]
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(i, sum over candidates of w_k * op_k(x)) for every edge j -> i, i in `targets`; each a new tensor."""
        relu_x: Optional[torch.Tensor] = None
        conv_sum: Optional[torch.Tensor] = None  # the edges' weighted conv candidates, edge m in channel group m
        shared: list[torch.Tensor] = []
        shared_scales: list[torch.Tensor] = []
        own: dict[int, list[torch.Tensor]] = {i: [] for i in targets}
        for k, name in enumerate(self.op_names):
            modules = [self.ops[i - self.num_predecessors][j][name] for i in targets]
            scales = torch.stack([weights[(i, j)][k] for i in targets])
            kind = modules[0]
            if isinstance(kind, (DilConv, SepConv, FactorizedReduce)):
                relu_x = F.relu(x) if relu_x is None else relu_x
                if isinstance(kind, DilConv):
                    out = fused_batch_norm(separable_convs(relu_x, modules, 1), [m[3] for m in modules], scales)
                elif isinstance(kind, SepConv):
                    hidden = fused_batch_norm(
                        separable_convs(relu_x, [m[0] for m in modules], 1), [m[0][3] for m in modules], None
                    )
                    out = separable_convs(F.relu(hidden), [m[1] for m in modules], len(modules))
                    out = fused_batch_norm(out, [m[1][3] for m in modules], scales)
                else:
                    out = fused_batch_norm(factorized_reduce(relu_x, modules), [m.bn for m in modules], scales)
                conv_sum = out if conv_sum is None else conv_sum.add_(out)
            elif not any(True for _ in kind.parameters()):  # pool or identity: one output for all edges
                shared.append(kind(x))
                shared_scales.append(scales)
            else:
                for m, i in enumerate(targets):
                    own[i].append(modules[m](x) * scales[m])
        if conv_sum is not None:
            conv_sum = ChannelsLastGrad.apply(conv_sum)
        blocks = conv_sum.split(conv_sum.shape[1] // len(targets), 1) if conv_sum is not None else None
        mixed = mix_shared(shared, shared_scales) if shared else None
        for m, i in enumerate(targets):
            parts = [*(() if blocks is None else (blocks[m],)), *(() if mixed is None else (mixed[m],)), *own[i]]
            total = parts[0] + parts[1] if len(parts) > 1 else parts[0].clone(memory_format=CHANNELS_LAST)
            for part in parts[2:]:
                total = total.add_(part)
            yield i, total
