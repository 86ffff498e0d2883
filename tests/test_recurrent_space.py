"""The deep stream's recurrent cell space: fixed-cell runtime vs torch's cells, NAS-Bench-NLP import,
attention pooling masks, baselines, and tiny DARTS / catalog searches through the shared search code."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nni_emotionnas.config.parse import parse
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.models.baselines_recurrent import RECURRENT_BASELINES, build_recurrent_baseline
from nni_emotionnas.search.run import run_search
from nni_emotionnas.spaces import deep as R
from nni_emotionnas.spaces.cells.catalog import gru, lstm, vanilla_rnn
from nni_emotionnas.spaces.cells.fixed import FixedCellLayer
from nni_emotionnas.spaces.cells.nasbench import import_recipe, load_recipes
from nni_emotionnas.spaces.cells.ops import OPS, FusedOp, RecurrentOp
from nni_emotionnas.spaces.cells.spec import Node, cell_from_dict, make_cell
from nni_emotionnas.spaces.genotype import build_fixed, read_genotype
from nni_emotionnas.spaces.kernels.recurrent_sequence import sequence_kernel
from nni_emotionnas.spaces.pooling import AttentionPooling
from nni_emotionnas.training.evaluator import TrainConfig

D, H, T = 6, 8, 12
TINY = R.RecurrentSpaceConfig(input_dim=D, hidden_size=H, nodes=3, attention_dim=8, dropout=0.0)


def linear_parameters(layer: FixedCellLayer, node: str) -> dict[str, Tensor]:
    """Views of a linear node's weights in a fixed cell by input name (and `bias`), to load known weights."""
    H, spec = layer.hidden_size, layer.cell.node(node)
    out: dict[str, Tensor] = {}
    if "x" in spec.inputs:
        assert layer.w_x is not None and layer.b_x is not None, "a node that reads x has x's projection"
        k = layer.x_columns.index(node)
        out["x"], out["bias"] = layer.w_x[k * H:(k + 1) * H], layer.b_x[k * H:(k + 1) * H]
    else:
        out["bias"] = layer.bias[node]
    for s in ("h1", "h2"):
        if s in spec.inputs:
            k = layer.state_chunks[s].index(node)
            out[s] = layer.w_state[s][k * H:(k + 1) * H]
    for i in spec.inputs:
        if i not in ("x", "h1", "h2"):
            out[i] = layer.w_node[f"{node}__{i}"]
    return out


def _load_gates(layer: FixedCellLayer, ref: torch.nn.RNNCellBase, gates: str) -> None:
    with torch.no_grad():
        for k, g in enumerate(gates):
            p = linear_parameters(layer, f"{g}_pre")
            p["x"].copy_(ref.weight_ih[k * H:(k + 1) * H])
            p["h1"].copy_(ref.weight_hh[k * H:(k + 1) * H])
            p["bias"].copy_(ref.bias_ih[k * H:(k + 1) * H] + ref.bias_hh[k * H:(k + 1) * H])


def _run_cell(ref: torch.nn.RNNCellBase, x: torch.Tensor, lstm_like: bool) -> tuple[torch.Tensor, torch.Tensor]:
    h = c = torch.zeros(x.shape[0], H)
    outs = []
    for step in x.unbind(1):
        if lstm_like:
            h, c = ref(step, (h, c))
        else:
            h = ref(step, h)
        outs.append(h)
    return torch.stack(outs, 1), c


def test_catalog_lstm_computes_exactly_what_lstmcell_computes():
    torch.manual_seed(0)
    ref, layer = torch.nn.LSTMCell(D, H), FixedCellLayer(lstm(), D, H)
    _load_gates(layer, ref, "ifgo")
    x = torch.randn(3, T, D, requires_grad=True)
    out, (h1, c) = layer(x)
    want, want_c = _run_cell(ref, x, lstm_like=True)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(c, want_c)
    grad, want_grad = torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0]
    torch.testing.assert_close(grad, want_grad)


def test_catalog_gru_and_rnn_match_torch_cells():
    torch.manual_seed(1)
    x = torch.randn(2, T, D)
    ref, layer = torch.nn.GRUCell(D, H), FixedCellLayer(gru(), D, H)
    _load_gates(layer, ref, "rz")
    with torch.no_grad():
        linear_parameters(layer, "xn")["x"].copy_(ref.weight_ih[2 * H:])
        linear_parameters(layer, "xn")["bias"].copy_(ref.bias_ih[2 * H:])
        linear_parameters(layer, "hn")["h1"].copy_(ref.weight_hh[2 * H:])
        linear_parameters(layer, "hn")["bias"].copy_(ref.bias_hh[2 * H:])
    torch.testing.assert_close(layer(x)[0], _run_cell(ref, x, lstm_like=False)[0])
    ref, layer = torch.nn.RNNCell(D, H), FixedCellLayer(vanilla_rnn(), D, H)
    with torch.no_grad():
        p = linear_parameters(layer, "pre")
        p["x"].copy_(ref.weight_ih), p["h1"].copy_(ref.weight_hh), p["bias"].copy_(ref.bias_ih + ref.bias_hh)
    torch.testing.assert_close(layer(x)[0], _run_cell(ref, x, lstm_like=False)[0])


def test_hoisted_x_only_nodes_give_the_step_by_step_result():
    """x-only nodes run on whole sequences before the loop; the result must equal a plain per-step loop."""
    torch.manual_seed(2)
    cell = make_cell([Node("s", "linear", ("x",)), Node("a", "tanh", ("s",)), Node("m", "product", ("a", "h1")),
                      Node("g", "sigmoid", ("x",)), Node("n", "linear", ("m", "x", "h2")),
                      Node("h", "blend", ("g", "n", "h1")), Node("c", "leaky_relu", ("n",))], {"h1": "h", "h2": "c"})
    layer = FixedCellLayer(cell, D, H)
    x = torch.randn(2, T, D)
    P = {name: linear_parameters(layer, name) for name in ("s", "n")}
    x_proj = x @ layer.w_x[-H:].T + layer.b_x[-H:]  # the projection of x feeding non-linear ops
    h1 = h2 = torch.zeros(2, H)
    outs = []
    for t in range(T):
        a = torch.tanh(x[:, t] @ P["s"]["x"].T + P["s"]["bias"])
        m = a * h1
        g = torch.sigmoid(x_proj[:, t])
        n = m @ P["n"]["m"].T + x[:, t] @ P["n"]["x"].T + P["n"]["bias"] + h2 @ P["n"]["h2"].T
        h1, h2 = g * n + (1 - g) * h1, torch.nn.functional.leaky_relu(n, 0.01)
        outs.append(h1)
    torch.testing.assert_close(layer(x)[0], torch.stack(outs, 1))
    # a new state that depends on x only (h2 = g) is read from the hoisted sequence
    static_h2 = FixedCellLayer(make_cell(list(cell.nodes), {"h1": "h", "h2": "g"}), D, H)
    _, (_, h2_last) = static_h2(x)
    torch.testing.assert_close(h2_last, torch.sigmoid(x[:, -1] @ static_h2.w_x[-H:].T + static_h2.b_x[-H:]))


NASBENCH_LSTM = {
    "i": {"op": "linear", "input": ["x", "h_prev_0"]}, "i_act": {"op": "activation_sigm", "input": ["i"]},
    "j": {"op": "linear", "input": ["x", "h_prev_0"]}, "j_act": {"op": "activation_tanh", "input": ["j"]},
    "f": {"op": "linear", "input": ["x", "h_prev_0"]}, "f_act": {"op": "activation_sigm", "input": ["f"]},
    "o": {"op": "linear", "input": ["x", "h_prev_0"]}, "o_act": {"op": "activation_sigm", "input": ["o"]},
    "h_new_0": {"op": "elementwise_prod", "input": ["h_new_1_act", "o_act"]},
    "h_new_1_act": {"op": "activation_tanh", "input": ["h_new_1"]},
    "h_new_1": {"op": "elementwise_sum", "input": ["h_new_1_part1", "h_new_1_part2"]},
    "h_new_1_part1": {"op": "elementwise_prod", "input": ["f_act", "h_prev_1"]},
    "h_new_1_part2": {"op": "elementwise_prod", "input": ["i_act", "j_act"]},
}


def test_nasbench_nlp_recipe_imports_into_the_cell_format(tmp_path):
    cell = import_recipe(NASBENCH_LSTM)
    assert cell.outputs == {"h1": "h_new_0", "h2": "h_new_1"}
    assert cell.node("h_new_1_part1").op == "product" and cell.node("h_new_1_part1").inputs == ("f_act", "h2")
    assert cell.node("i").inputs == ("x", "h1") and cell.node("o_act").op == "sigmoid"
    order = [n.name for n in cell.nodes]
    assert order.index("h_new_1") < order.index("h_new_1_act") < order.index("h_new_0")
    # the imported recipe is an LSTM: same numbers as nn.LSTMCell (gate j is LSTMCell's g)
    torch.manual_seed(3)
    ref, layer = torch.nn.LSTMCell(D, H), FixedCellLayer(cell, D, H)
    with torch.no_grad():
        for k, g in enumerate("ijfo"):
            p = linear_parameters(layer, g)
            rows = slice([0, 2, 1, 3][k] * H, ([0, 2, 1, 3][k] + 1) * H)  # LSTMCell order: i, f, g, o
            p["x"].copy_(ref.weight_ih[rows]), p["h1"].copy_(ref.weight_hh[rows])
            p["bias"].copy_(ref.bias_ih[rows] + ref.bias_hh[rows])
    x = torch.randn(2, T, D)
    torch.testing.assert_close(layer(x)[0], _run_cell(ref, x, lstm_like=True)[0])
    # files: a mapping of recipes, list-form nodes, as JSON
    recipes = tmp_path / "recipes.json"
    recipes.write_text(json.dumps({"rnn": {"f": ["linear", "x", "h_prev_0"], "h_new_0": ["activation_tanh", "f"]},
                                   "lstm": NASBENCH_LSTM}))
    loaded = load_recipes(recipes)
    assert set(loaded) == {"rnn", "lstm"} and loaded["rnn"].node("h_new_0").op == "tanh"
    assert R.cell_of({"cell": f"{recipes}#rnn"}) == loaded["rnn"]


@pytest.mark.parametrize("recipe, message", [
    ({"h_new_0": {"op": "conv", "input": ["x"]}}, "unknown NAS-Bench-NLP op 'conv'"),
    ({"h_new_0": {"op": "elementwise_sum", "input": ["a", "x"]}, "a": {"op": "activation_tanh", "input": ["h_new_0"]}},
     "cycle"),
    ({"h_new_0": {"op": "linear", "input": ["x", "h_prev_2"]}}, "states h1, h2 only"),
    ({"h_new_0": {"op": "blend", "input": ["x", "h_prev_0"]}}, "blend takes 3 inputs"),
    ({"h_new_0": {"op": "linear", "input": ["y"]}}, "'y', which is not defined"),
    ({"f": {"op": "linear", "input": ["x"]}}, "at least the node 'h_new_0'"),
])
def test_bad_recipes_are_config_errors(recipe, message):
    with pytest.raises(ConfigError, match=message):
        import_recipe(recipe)


def test_attention_pooling_gives_padding_exactly_zero_weight():
    torch.manual_seed(4)
    pool = AttentionPooling(H, 8)
    seq = torch.randn(3, T, H)
    mask = torch.arange(T)[None] < torch.tensor([[5], [T], [0]])
    weights = pool.weights(seq, mask)
    assert (weights[~mask] == 0).all() and torch.allclose(weights[:2].sum(-1), torch.ones(2))
    changed = seq.clone()
    changed[~mask] = 1e6  # whatever sits in padding frames cannot leak into the embedding
    torch.testing.assert_close(pool(changed, mask), pool(seq, mask))
    assert (pool(seq, mask)[2] == 0).all()  # no valid frame: zeros, not NaN


@pytest.mark.parametrize("name", sorted(RECURRENT_BASELINES))
def test_recurrent_baselines_by_name_honour_the_mask(name):
    torch.manual_seed(5)
    model = build_recurrent_baseline(name, input_dim=D, num_classes=4).eval()
    kind, hidden, layers = RECURRENT_BASELINES[name]
    assert model.embedding_dim == hidden == 512 and model.rnn.num_layers == layers and isinstance(model.rnn, kind)
    frames, mask = torch.randn(2, T, D), torch.arange(T)[None] < torch.tensor([[7], [T]])
    noisy = frames.clone()
    noisy[~mask] = 50.0
    logits = model({"frames": frames, "mask": mask})
    assert logits.shape == (2, 4)
    torch.testing.assert_close(model({"frames": noisy, "mask": mask}), logits)
    with pytest.raises(ConfigError, match="unknown baseline"):
        build_recurrent_baseline("gru_h512_l1", D, 4)


def test_space_labels_freeze_and_genotype_round_trip():
    space = R.build_space(TINY, num_classes=4)
    labels = space.simplify()
    assert set(labels) == {f"n{i}/{s}" for i in (1, 2, 3) for s in ("operand_a", "operand_b", "operand_z", "op")} | {
        "new_h1", "new_h2", "reads_x"}
    arch = {"n1/op": "linear", "n1/operand_a": [0], "n1/operand_b": [0], "n1/operand_z": [0],
            "n2/op": "blend", "n2/operand_a": [3], "n2/operand_b": [1], "n2/operand_z": [2],
            "n3/op": "tanh", "n3/operand_a": [4], "n3/operand_b": [0], "n3/operand_z": [0],
            "new_h1": [2], "new_h2": [1]}
    model = space.freeze(arch)
    assert isinstance(model, R.RecurrentNetwork) and model.embedding_dim == H
    genotype = R.readable_genotype(arch)
    assert genotype["cell"]["nodes"] == [
        {"name": "n1", "op": "linear", "inputs": ["x"]},
        {"name": "n2", "op": "blend", "inputs": ["h2", "n1", "h1"]},
        {"name": "n3", "op": "tanh", "inputs": ["n2"]},
    ] and genotype["cell"]["outputs"] == {"h1": "n3", "h2": "n2"}
    assert genotype["reads"] == ["x", "h1", "h2"]
    assert cell_from_dict(json.loads(json.dumps(genotype["cell"]))) == model.cell
    inputs = {"frames": torch.randn(2, T, D), "mask": torch.ones(2, T, dtype=torch.bool)}
    assert model(inputs).shape == space(inputs).shape == (2, 4)
    with pytest.raises(ConfigError, match="input_dim is 6: set input_dim"):
        model({"frames": torch.randn(2, T, 5), "mask": torch.ones(2, T, dtype=torch.bool)})


def test_input_statistics_skip_appends_the_valid_frames_standardised_mean_and_std():
    """`input_statistics: true`: the embedding ends with the mean and std over the valid frames of the input
    (padding ignored), standardised with the training batches' statistics, in the supernet and in the frozen
    network alike; off by default."""
    from dataclasses import replace

    assert R.RecurrentSpaceConfig().input_statistics is False
    space = R.build_space(replace(TINY, input_statistics=True), num_classes=4)
    assert space.embedding_dim == H + 2 * D and space.classifier.in_features == H + 2 * D
    frames, mask = torch.randn(3, T, D), torch.ones(3, T, dtype=torch.bool)
    mask[1, T - 2:] = False
    frames[1, T - 2:] = 1e3  # padding: must not reach the statistics
    valid = frames[1, : T - 2]
    raw = torch.stack([torch.cat([f[m].mean(0), f[m].std(0, unbiased=False)]) for f, m in zip(frames, mask)])
    arch = {label: mutable.default() for label, mutable in space.simplify().items()}
    for net in (space, space.freeze(arch)):
        net.train()
        embedding = net.embed({"frames": frames, "mask": mask})
        assert embedding.shape == (3, H + 2 * D)
        expected = (raw - raw.mean(0)) / (raw.var(0, unbiased=False) + 1e-5).sqrt()  # batch statistics
        torch.testing.assert_close(embedding[:, H:], expected, rtol=1e-4, atol=1e-4)
        norm = net.input_statistics.norm
        torch.testing.assert_close(norm.running_mean, 0.1 * raw.mean(0))  # momentum 0.1 from zero
        one = net.embed({"frames": frames[1:2], "mask": mask[1:2]})  # a batch of one: the running statistics
        torch.testing.assert_close(one[0, H:], (raw[1] - norm.running_mean) / (norm.running_var + 1e-5).sqrt())
        net.eval()
        torch.testing.assert_close(net.embed({"frames": frames, "mask": mask})[1, H:], one[0, H:])
        torch.testing.assert_close(raw[1, :D], valid.mean(0))


def test_derivation_rewires_a_cell_that_ignores_x():
    arch = {"n1/op": "sigmoid", "n1/operand_a": [2], "n1/operand_b": [0], "n1/operand_z": [0],
            "n2/op": "product", "n2/operand_a": [3], "n2/operand_b": [1], "n2/operand_z": [0],
            "new_h1": [1], "new_h2": [0]}
    probs = {"n1/operand_a": {"0": 0.2, "1": 0.3, "2": 0.5}, "n2/operand_a": {"0": 0.1}, "n2/operand_b": {"0": 0.4}}
    derived = R.derive_architecture(arch, probs, TINY)
    assert derived == {**arch, "n2/operand_b": [0]}  # n2's operand b leaned most to x among the used operands
    assert R.cell_of(derived).node("n2").inputs == ("n1", "x")
    reads_x = {**arch, "n1/operand_a": [0]}
    assert R.derive_architecture(reads_x, probs, TINY) == reads_x


def test_derivation_says_when_the_cell_is_not_recurrent(caplog):
    feedforward = {"n1/op": "linear", "n1/operand_a": [0], "n1/operand_b": [0], "n1/operand_z": [0],
                   "n2/op": "sum", "n2/operand_a": [3], "n2/operand_b": [0], "n2/operand_z": [0],
                   "new_h1": [1], "new_h2": [0]}
    with caplog.at_level("WARNING", logger="nni_emotionnas.spaces.deep"):
        assert R.derive_architecture(feedforward, {}, TINY) == feedforward
    assert "reads neither h1 nor h2" in caplog.text
    assert R.readable_genotype(feedforward)["reads"] == ["x"]
    caplog.clear()
    recurrent = {**feedforward, "n2/operand_b": [1]}  # n2 = n1 + h1
    with caplog.at_level("WARNING", logger="nni_emotionnas.spaces.deep"):
        R.derive_architecture(recurrent, {}, TINY)
    assert caplog.text == "" and R.readable_genotype(recurrent)["reads"] == ["x", "h1"]


class FrameData(Dataset):
    """Class-dependent mean in some feature dims, random valid lengths: learnable by a tiny cell."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.arange(n) % 3).tolist()
        self.frames = torch.randn(n, T, D, generator=g) * 0.5
        lengths = torch.randint(4, T + 1, (n,), generator=g)
        self.mask = torch.arange(T)[None] < lengths[:, None]
        for i, y in enumerate(self.labels):
            self.frames[i, :, y] += 1.5
        self.frames[~self.mask] = 0.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return {"frames": self.frames[i], "mask": self.mask[i]}, self.labels[i]


@pytest.mark.slow
def test_tiny_darts_search_exports_a_cell_that_retrains(tmp_path):
    result = run_search(
        space_mod=R, space_config=TINY, train_dataset=FrameData(24, 0), num_classes=3,
        search_config=TrainConfig(epochs=2, batch_size=8, seed=0), strategy_name="DARTS",
        strategy_args={"arc_learning_rate": 0.05}, run_dir=tmp_path, stream="deep", classes=["a", "b", "c"],
    )
    record = read_genotype(result.genotype_path)
    weights = record["edge_weights"]
    assert {"n1/op", "n3/operand_a", "new_h1", "new_h2"} <= set(weights)
    assert set(weights["n2/op"]) == set(TINY.ops) and sum(weights["n2/op"].values()) == pytest.approx(1.0)
    assert max(abs(p - 1 / 7) for p in weights["n2/op"].values()) > 1e-3  # architecture weights moved
    model, module = build_fixed(record)
    assert module is R and model.cell == R.cell_of(record["architecture"])
    assert record["genotype"]["cell"] == R.readable_genotype(record["architecture"])["cell"]
    assert R.derive_architecture(record["nni_export"], weights, TINY) == record["architecture"]
    assert any("x" in node["inputs"] for node in record["genotype"]["cell"]["nodes"])
    assert result.drawing_path.read_bytes()[:4] == b"\x89PNG"
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    data = FrameData(24, 1)
    batch = {"frames": data.frames, "mask": data.mask}
    target = torch.tensor(data.labels)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(batch), target)
        optimizer.zero_grad(), loss.backward(), optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_catalog_strategy_picks_the_cell_with_lowest_validation_loss(tmp_path):
    catalog = R.RecurrentSpaceConfig(input_dim=D, hidden_size=H, attention_dim=8, cells=["rnn", "lstm", "gru"])
    result = run_search(
        space_mod=R, space_config=catalog, train_dataset=FrameData(18, 0), val_dataset=FrameData(9, 1),
        num_classes=3, search_config=TrainConfig(epochs=1, batch_size=6, seed=0), strategy_name="catalog",
        strategy_args={"epochs": 2}, run_dir=tmp_path, stream="deep",
    )
    seen = read_genotype(result.genotype_path)["search_metrics"]["candidate_val_loss"]
    assert set(seen) == {"rnn", "lstm", "gru"} and all(v > 0 for v in seen.values())
    best = min(seen, key=seen.get)
    assert result.record["architecture"] == {"cell": best} and result.record["genotype"]["source"] == best
    model, _ = build_fixed(read_genotype(result.genotype_path))
    assert model.cell == R.cell_of({"cell": best})


@pytest.mark.parametrize(
    ("ops", "state_bound"),
    [(list(OPS), 5.0), (["linear", "tanh", "product"], 5.0), (["blend", "sigmoid", "leaky_relu", "sum"], None)],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_fast_darts_mixture_gives_the_call_by_call_logits_and_gradients(ops, state_bound, threads):
    """The supernet layer's one-matmul-per-mixture step (spaces.kernels.recurrent_mixture) is NNI's mixture, with and
    without a linear op (whose weight gradient is summed over time after the loop) and a state bound, in one
    block of rows and split over two threads (weight gradients summed over the blocks)."""

    from nni_emotionnas.spaces.kernels.recurrent_sequence import row_blocks

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert row_blocks(torch.zeros(3, 9, 5)) == threads and row_blocks(torch.zeros(1, 9, 5)) == 1
        compare_fast_and_naive_mixtures(ops, state_bound)
        assert torch.get_num_threads() == threads  # the split restores the caller's thread count
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("op", list(OPS))
def test_every_op_of_the_table_gives_the_same_function_fused_and_call_by_call(op: str) -> None:
    """Each op of the table, mixed with another, through the fused step and through NNI's mixtures."""
    compare_fast_and_naive_mixtures([op, "tanh" if op == "sum" else "sum"], 5.0)


class FusedDifference(FusedOp):  # a - b: an op the package does not have
    def forward(self, out: Tensor, a: Tensor, b: Tensor, z: Tensor, weight: Tensor, bias: Tensor, slope: float) -> None:
        torch.sub(a, b, out=out)

    @torch.jit.export
    def grad(self, g_operands: Tensor, g: Tensor, w: float, a: Tensor, b: Tensor, z: Tensor, out: Tensor,
             weight: Tensor, slope: float) -> None:
        g_operands[0].add_(g, alpha=w)
        g_operands[1].add_(g, alpha=-w)


def test_an_op_added_to_the_table_only_works_in_the_supernet_the_fused_step_and_the_fixed_cell(monkeypatch):
    monkeypatch.setitem(OPS, "difference", RecurrentOp(("a", "b"), (2, 2), lambda x, _: x[0] - x[1], FusedDifference))
    compare_fast_and_naive_mixtures(["difference", "linear", "tanh"], 5.0)  # supernet: fused and call by call
    cell = make_cell([Node("p", "linear", ("x",)), Node("d", "difference", ("p", "h1"))], {"h1": "d"})
    layer = FixedCellLayer(cell, D, H)
    x, h1, outs = torch.randn(2, T, D), torch.zeros(2, H), []
    P = linear_parameters(layer, "p")
    for t in range(T):
        h1 = x[:, t] @ P["x"].T + P["bias"] - h1
        outs.append(h1)
    torch.testing.assert_close(layer(x)[0], torch.stack(outs, 1))
    arch = {"n1/op": "linear", "n1/operand_a": [0], "n1/operand_b": [0],
            "n2/op": "difference", "n2/operand_a": [3], "n2/operand_b": [1], "new_h1": [1], "new_h2": [0]}
    config = R.RecurrentSpaceConfig(input_dim=D, hidden_size=H, nodes=2, ops=["linear", "difference"], attention_dim=4)
    assert R.readable_genotype(arch)["cell"]["nodes"][1] == {"name": "n2", "op": "difference", "inputs": ["n1", "h1"]}
    assert R.build_space(config, 3).freeze(arch)({"frames": x, "mask": torch.ones(2, T, dtype=torch.bool)}).shape == (
        2, 3)


def test_an_unknown_op_is_an_error_naming_it_on_every_path():
    with pytest.raises(ConfigError, match=r"cell.nodes\[0\] \(n\).op: unknown recurrent op 'cube' \(known: linear, "):
        make_cell([Node("n", "cube", ("x",))], {"h1": "n"})
    with pytest.raises(ConfigError, match="space.yml: ops: unknown recurrent op 'cube'"):
        parse(R.RecurrentSpaceConfig, {"ops": ["linear", "cube"]}, "space.yml")
    with pytest.raises(ConfigError, match="ops: unknown recurrent op 'cube'"):
        R.SlotOp("cube", H, 0.01)
    with pytest.raises(ConfigError, match="ops: unknown recurrent op 'cube'"):
        sequence_kernel(["linear", "cube"])
    with pytest.raises(ConfigError, match="architecture.n1/op: unknown recurrent op 'cube'"):
        R.cell_of({"n1/op": "cube", "n1/operand_a": [0], "new_h1": [0]})
    with pytest.raises(ConfigError, match="op: unknown recurrent op 'cube'"):
        FixedCellLayer(make_cell([Node("n", "tanh", ("x",))], {"h1": "n"}), D, H)._op("cube", [torch.zeros(1)])


def compare_fast_and_naive_mixtures(ops: list[str], state_bound: float | None) -> None:
    from nni.nas.strategy import DARTS

    config = R.RecurrentSpaceConfig(input_dim=6, hidden_size=5, nodes=4, ops=ops, dropout=0.0, attention_dim=4,
                                    state_bound=state_bound)
    torch.manual_seed(0)
    fast = DARTS().mutate_model(R.build_oneshot_space(config, 3))
    naive = DARTS().mutate_model(R.build_oneshot_space(config, 3))
    with torch.no_grad():
        for name, p in fast.named_parameters():
            if "_arch_alpha" in name:
                p.normal_()
    naive.load_state_dict(fast.state_dict())
    batch = {"frames": torch.randn(3, 9, 6), "mask": torch.arange(9)[None] < torch.tensor([[9], [6], [3]])}
    out_fast = fast(batch)
    with mock.patch.object(R, "layer_mixture", return_value=None):  # the reference: NNI's mixtures call by call
        out_naive = naive(batch)
    torch.testing.assert_close(out_fast, out_naive, rtol=1e-4, atol=1e-5)
    out_fast.square().sum().backward()
    out_naive.square().sum().backward()
    grads = dict(naive.named_parameters())
    assert any("_arch_alpha" in name for name in grads)
    for name, p in fast.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fast_mixture_reuses_its_buffers_and_a_retained_graph_keeps_its_own():
    """Each step reuses the sequence buffers of the step before (no fresh pages per step) and gives what a fresh
    network gives; a graph kept with retain_graph keeps its buffers until autograd frees it, so a second
    backward through it after another step still gives the first gradients."""
    import copy

    from nni.nas.strategy import DARTS

    from nni_emotionnas.spaces.kernels.recurrent_sequence import step_buffers

    config = R.RecurrentSpaceConfig(input_dim=6, hidden_size=5, nodes=4, dropout=0.0, attention_dim=4)
    torch.manual_seed(0)
    net = DARTS().mutate_model(R.build_oneshot_space(config, 3))
    fresh = copy.deepcopy(net)
    every_frame = torch.ones(3, 9, dtype=torch.bool)
    first, second = ({"frames": torch.randn(3, 9, 6), "mask": every_frame} for _ in range(2))

    def gradients(model: torch.nn.Module, loss: torch.Tensor, retain: bool = False) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain)
        return [p.grad.clone() for p in model.parameters()]

    retained = net(first).square().sum()
    first_gradients = gradients(net, retained, retain=True)
    gradients(net, net(second).square().sum())  # takes the pool's scratch, not the retained graph's buffers
    for a, b in zip(gradients(net, retained), first_gradients):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    del retained  # its forward buffers go back to the pool
    buffers = step_buffers(net.recurrent[0])
    kept = {t.data_ptr() for t in buffers.kept()}
    assert len(kept) >= 5  # per row block: values, states, two linear-op buffers, the inputs' gradient
    reused = gradients(net, net(second).square().sum())
    assert {t.data_ptr() for t in buffers.kept()} == kept
    for a, b in zip(reused, gradients(fresh, fresh(second).square().sum())):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
