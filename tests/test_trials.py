"""Searches that rank architectures honestly: one seed repeats every entry point exactly, the recurrent space
refuses cells blind to x_t (NNI's sampling, strategies, trials and `train` alike), and trials show readable,
private parameters in the web UI (real NNI manager, REST API, `emotionnas view`).

Tiny data as in test_nni_integration (synthetic corpus, 16 utterances) with fbank deep frames (8 frames).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_nni_integration import EXPERIMENT, NNICTL, SPACE, free_port, rest, wait_gone

from nni_emotionnas.cli.app import main
from nni_emotionnas.nni_support import trial

DEEP_EXPERIMENT = {
    **EXPERIMENT,
    "features": {**EXPERIMENT["features"], "deep": {"backend": "fbank"}, "sequence": {"target_frames": 8}},
    "deep_space": "deep.yml",
    "train": {"epochs": 2, "batch_size": 8},
    "search": {"epochs": 1, "batch_size": 8, "threads": 1},
}
# One node: unconstrained, more than half of this space's cells never read x_t.
DEEP_SPACE = {"hidden_size": 8, "nodes": 1, "attention_dim": 4}
# n1 = tanh(h1), h1_t = n1: a hand-written cell blind to its input
BLIND = {"n1/op": "tanh", "n1/operand_a": [1], "n1/operand_b": [0], "n1/operand_z": [0], "new_h1": [0],
         "new_h2": [0]}
READABLE = {"n1/op": "blend", "n1/operand_a": "x", "n1/operand_b": "h1", "n1/operand_z": "x", "new_h1": "n1",
            "new_h2": "n1"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Experiment, spectrogram and deep space files, both streams' features in the cache."""
    from nni_emotionnas.config.experiment import load_experiment
    from nni_emotionnas.features.prepared import prepare

    root = tmp_path_factory.mktemp("trials_ws")
    (root / "experiment.yml").write_text(yaml.safe_dump(DEEP_EXPERIMENT))
    (root / "space.yml").write_text(yaml.safe_dump(SPACE))
    (root / "deep.yml").write_text(yaml.safe_dump(DEEP_SPACE))
    prepare(load_experiment(root / "experiment.yml"), streams=["spectrogram", "deep"], progress=False)
    return root


def write_genotype(ws: Path, architecture: dict[str, Any], name: str) -> Path:
    from nni_emotionnas.config.experiment import load_experiment
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.models.networks import space_config_for
    from nni_emotionnas.spaces.genotype import make_record, write_genotype

    experiment = load_experiment(ws / "experiment.yml")
    corpus = prepare(experiment, streams=["deep"], progress=False)
    config = space_config_for(experiment, "deep", None, corpus.deep_dim)[1]
    record = make_record(stream="deep", architecture=architecture, space_config=config, num_classes=4,
                         classes=list(corpus.classes))
    return write_genotype(record, ws / name)


@pytest.mark.slow
def test_the_recurrent_space_refuses_blind_cells_through_nni_sampling() -> None:
    """2,000 samples of the packaged recurrent space drawn by NNI's own sampling (`Mutable.random` over the
    space's mutables, retried on a refused sample by NNI's `RetrySamplingHelper` as its strategies do): none has
    an output that ignores x, and refusals happened (the rule is not vacuous)."""
    from nni.mutable import MutableDict
    from nni.nas.strategy.utils import RetrySamplingHelper
    from numpy.random import RandomState

    from nni_emotionnas.search.space_json import build_space, load_space_config
    from nni_emotionnas.spaces.deep import cell_of

    mutables = MutableDict(build_space("deep", load_space_config("deep"), 4).simplify())
    state, draws = RandomState(0), 0

    def draw() -> dict[str, Any]:
        nonlocal draws
        draws += 1
        sample: dict[str, Any] = {}
        mutables.random(sample, state)
        return sample

    helper = RetrySamplingHelper(raise_last=True)
    samples = [helper.retry(draw) for _ in range(2000)]
    assert all(cell_of(sample).follows_input("h1") for sample in samples)
    valid_share = 2000 / draws
    print(f"valid share of uniform samples: {valid_share:.3f} ({draws} draws for 2000 samples)")
    assert 0.3 < valid_share < 0.9


def test_the_experiment_seed_is_the_one_seed_of_every_stage(tmp_path: Path) -> None:
    from nni_emotionnas.config.experiment import load_experiment, with_seed
    from nni_emotionnas.errors import ConfigError

    path = tmp_path / "experiment.yml"
    path.write_text(yaml.safe_dump({**DEEP_EXPERIMENT, "seed": 5}))
    experiment = load_experiment(path)
    assert experiment.search.seed == experiment.train.seed == 5
    reseeded = with_seed(experiment, 7)
    assert (reseeded.seed, reseeded.search.seed, reseeded.train.seed) == (7, 7, 7)
    assert with_seed(experiment, None) is experiment
    path.write_text(yaml.safe_dump({**DEEP_EXPERIMENT, "train": {"epochs": 1, "seed": 1}}))
    with pytest.raises(ConfigError, match=r"experiment.yml.train.seed: set the experiment's top-level `seed`"):
        load_experiment(path)


def test_train_refuses_a_blind_genotype(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    genotype = write_genotype(ws, BLIND, "blind.json")
    assert main(["train", str(ws / "experiment.yml"), "--stream", "deep", "--genotype", str(genotype),
                 "--out", str(ws / "blind_run")]) == 2
    err = capsys.readouterr().err
    assert "never depends on x_t" in err and "h1_t = n1 reads h1" in err and str(genotype) in err
    assert not (ws / "blind_run" / "results.json").exists()


def test_train_twice_gives_the_same_numbers_and_another_seed_others(ws: Path) -> None:
    genotype = write_genotype(ws, {**BLIND, "n1/op": "blend", "n1/operand_a": [0]}, "deep_genotype.json")

    def train(out: str, *seed: str) -> tuple[dict[str, Any], str]:
        assert main(["train", str(ws / "experiment.yml"), "--stream", "deep", "--genotype", str(genotype),
                     "--out", str(ws / out), *seed]) == 0
        log = (ws / out / "logs" / "version_0" / "metrics.csv").read_text()
        return json.loads((ws / out / "results.json").read_text()), log

    first, first_log = train("train_1")
    second, second_log = train("train_2")
    other, other_log = train("train_seed1", "--seed", "1")
    assert first["seed"] == second["seed"] == 0 and other["seed"] == 1
    assert first_log == second_log and first["val"] == second["val"] and first["test"] == second["test"]
    assert other_log != first_log  # per-epoch train/val losses: other weights, other data order


def test_trial_entry_twice_gives_the_same_metrics_and_refuses_blind_samples(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m nni_emotionnas.nni_support.trial`, the command nnictl runs, in fresh interpreters (an
    in-process search earlier in a session leaves NNI's trial record set); the refusal comes before NNI is
    touched, so it runs in-process."""

    def run(out: str, parameters: dict[str, Any], *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nni_emotionnas.nni_support.trial", "--experiment",
                               str(ws / "experiment.yml"), "--stream", "deep", "--parameters", json.dumps(parameters),
                               "--out", str(ws / out), *extra], capture_output=True, text=True, timeout=300)

    finals = []
    for out, extra in (("trial_1", ()), ("trial_2", ()), ("trial_seed1", ("--seed", "1"))):
        done = run(out, READABLE, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        finals.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert finals[0] == finals[1] and finals[0]["seed"] == 0 and finals[2]["seed"] == 1
    assert finals[2]["val_loss"] != finals[0]["val_loss"]
    assert set(finals[0]) == {"default", "wa", "val_loss", "best_epoch", "last_ua", "last_wa", "params", "seed"}
    assert finals[0]["default"] >= finals[0]["last_ua"]  # the best epoch, as `train` keeps it
    record = json.loads((ws / "trial_1" / "genotype.json").read_text())
    assert record["architecture"]["n1/operand_b"] == [1] and record["seed"] == 0  # names mapped back to indices

    blind = {**READABLE, "n1/op": "tanh", "n1/operand_a": "h2"}
    capsys.readouterr()
    assert trial.main(["--experiment", str(ws / "experiment.yml"), "--branch", "deep", "--parameters",  # old flag
                       json.dumps(blind), "--out", str(ws / "trial_blind")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("trial: error: trial parameters: ")
    assert "sample refused" in err and "never depends on x_t" in err
    assert not (ws / "trial_blind" / "genotype.json").exists()


def search(ws: Path, name: str, strategy: dict[str, Any]) -> tuple[Path, list[Any]]:
    """`emotionnas search` of the deep stream with a multi-trial strategy; (experiment folder, final results)."""
    from nni_emotionnas.search.export import final_results

    (ws / f"{name}.yml").write_text(yaml.safe_dump(strategy))
    out = ws / name
    assert main(["search", "experiment.yml", "--stream", "deep", "--strategy", f"{name}.yml", "--out", name]) == 0
    [folder] = [p for p in (out / "nni").iterdir() if not p.is_symlink() and (p / "db" / "nni.sqlite").is_file()]
    assert wait_gone(folder.name) == []
    return folder, final_results(folder)


def trial_cells(folder: Path) -> list[Any]:
    from nni_emotionnas.spaces.deep import cell_of

    return [cell_of(json.loads(p.read_text())["architecture"]) for p in folder.glob("**/trials/*/genotype.json")]


@pytest.fixture(scope="module")
def random_searches(ws: Path) -> list[tuple[Path, list[Any]]]:
    mp = pytest.MonkeyPatch()
    mp.chdir(ws)  # NAS trials run in the current directory
    try:
        return [search(ws, f"random_{i}", {"name": "Random", "args": {"seed": 3, "port": free_port(),
                                                                       "max_trials": 2, "concurrency": 1}})
                for i in (1, 2)]
    finally:
        mp.undo()


@pytest.mark.slow
def test_multi_trial_search_twice_gives_the_same_trials_and_no_blind_cell(random_searches) -> None:
    (first, first_results), (second, second_results) = random_searches
    assert len(first_results) == 2
    assert sorted(json.dumps(r.final, sort_keys=True) for r in first_results) == sorted(
        json.dumps(r.final, sort_keys=True) for r in second_results)
    cells = trial_cells(first) + trial_cells(second)
    assert len(cells) == 4 and all(cell.follows_input("h1") for cell in cells)


@pytest.mark.slow
def test_regularized_evolution_trains_no_blind_cell(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ws)
    folder, results = search(ws, "evolution", {"name": "RegularizedEvolution", "args": {
        "population_size": 2, "sample_size": 1, "max_trials": 3, "concurrency": 1, "seed": 0, "port": free_port()}})
    cells = trial_cells(folder)
    assert len(results) == 3 and len(cells) == 3 and all(cell.follows_input("h1") for cell in cells)


@pytest.mark.slow
def test_view_serves_a_finished_search_with_readable_private_trials(random_searches, ws: Path) -> None:
    """`emotionnas view` reopens a NAS experiment that `nnictl view` cannot; its REST API shows each deep trial's
    choices by name, the reference to the setup file, no pickle and no corpus path."""
    folder = random_searches[0][0]
    port = free_port()
    try:  # as a command: the manager it starts outlives it (in-process, it would stay our unreaped child)
        viewed = subprocess.run([str(NNICTL.with_name("emotionnas")), "view", str(folder), "--port", str(port)],
                                capture_output=True, text=True, timeout=120)
        assert viewed.returncode == 0 and f"http://127.0.0.1:{port}" in viewed.stdout, viewed.stderr[-2000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert "<title>Neural Network Intelligence</title>" in response.read().decode()
        jobs = rest(port, "trial-jobs")
        space = rest(port, "experiment")["params"]["searchSpace"]
    finally:
        subprocess.run([str(NNICTL), "stop", folder.name], capture_output=True, timeout=60)
    assert wait_gone(folder.name) == []
    assert space["n1/operand_a"] == {"_type": "choice", "_value": ["x", "h1", "h2"]}
    assert space["new_h1"] == {"_type": "choice", "_value": ["n1"]}
    assert len(jobs) == 2
    for job in jobs:
        raw = job["hyperParameters"][0]
        assert "__nni_obj__" not in raw and str(ws / "corpus") not in raw and len(raw) < 1500
        parameters = json.loads(raw)["parameters"]
        assert parameters["n1/op"] in ("linear", "blend", "product", "sum", "tanh", "sigmoid", "leaky_relu")
        assert {parameters[k] for k in ("n1/operand_a", "n1/operand_b", "n1/operand_z")} <= {"x", "h1", "h2"}
        assert parameters["new_h1"] == "n1" and parameters["trial_setup"] == "random_1/trial_setup.json"


def test_genotypes_with_the_old_choice_labels_still_load(ws: Path) -> None:
    """Files written before the readable labels (`n1/a`, `h1`) read as the same architecture."""
    from nni_emotionnas.spaces.genotype import build_fixed, read_genotype

    indexed = {**BLIND, "n1/op": "blend", "n1/operand_a": [0]}  # old files held candidate indices
    current = write_genotype(ws, indexed, "current.json")
    record = json.loads(current.read_text())
    old = {label.replace("operand_", "").replace("new_", ""): value for label, value in indexed.items()}
    assert "n1/a" in old and "h1" in old
    legacy = ws / "legacy.json"
    legacy.write_text(json.dumps({**record, "architecture": old}))
    assert read_genotype(legacy)["architecture"] == read_genotype(current)["architecture"]
    build_fixed(read_genotype(legacy))
