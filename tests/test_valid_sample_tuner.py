"""The nnictl tuner wrapper (`nni_support.tuner.ValidSampleTuner`) around real NNI tuners, driven as NNI's
dispatcher drives a tuner: no sample the deep space refuses is handed out, and the inner tuner is told that each
refused sample scored the worst."""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from nni.algorithms.hpo.random_tuner import RandomTuner

from nni_emotionnas.errors import ConfigError
from nni_emotionnas.nni_support.tuner import ValidSampleTuner, code_directory

REPO = Path(__file__).resolve().parent.parent
DEEP_SPACE = {"hidden_size": 8, "nodes": 3, "attention_dim": 4}


def write_experiment(root: Path, nodes: int) -> Path:
    (root / "deep.yml").write_text(yaml.safe_dump({**DEEP_SPACE, "nodes": nodes}))
    (root / "experiment.yml").write_text(yaml.safe_dump(
        {"name": "tuner", "corpus": {"reader": "synthetic"}, "deep_space": "deep.yml"}
    ))
    return root / "experiment.yml"


def built_space(experiment: Path) -> Any:
    """The deep space as the nnictl trial builds it (its own `split_parameters` refuses invalid samples)."""
    from nni_emotionnas.config.experiment import load_experiment
    from nni_emotionnas.models.networks import space_config_for
    from nni_emotionnas.search.space_json import build_space

    _, config = space_config_for(load_experiment(experiment), "deep", None)
    return build_space("deep", config, 4)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_experiment(tmp_path_factory.mktemp("tuner"), DEEP_SPACE["nodes"])


@pytest.fixture(scope="module")
def one_node_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GridSearch walks the grid in order: in a one-node space, cells whose n1 skips x_t come early."""
    return write_experiment(tmp_path_factory.mktemp("tuner1"), 1)


@pytest.fixture(scope="module")
def trial_space(experiment: Path) -> Any:
    return built_space(experiment)


@pytest.fixture(scope="module")
def search_space(trial_space: Any) -> dict[str, Any]:
    from nni_emotionnas.search.space_json import legacy_space

    return legacy_space(trial_space)


def refused_by_trial(space: Any, sample: dict[str, Any]) -> bool:
    from nni_emotionnas.search.space_json import InvalidSample, split_parameters

    try:
        split_parameters(space, sample)
    except InvalidSample:
        return True
    return False


class Dispatcher:
    """What NNI's manager and MsgDispatcher do with a tuner, in process: ask for `concurrency` trials, then one more
    per ended trial; pair the samples with the first ids asked for (late ones come through `st_callback`); report
    each trial's score, then its end."""

    def __init__(self, tuner: Any) -> None:
        self.tuner, self.next_id = tuner, 0
        self.handed: dict[int, dict[str, Any]] = {}
        self.running: list[int] = []
        self.late_count = 0

    def late(self, parameter_id: int, sample: dict[str, Any]) -> None:
        self.late_count += 1
        self.hand(parameter_id, sample)

    def hand(self, parameter_id: int, sample: dict[str, Any]) -> None:
        assert parameter_id not in self.handed, "an id handed out twice"
        self.handed[parameter_id] = sample
        self.running.append(parameter_id)

    def request(self, count: int) -> None:
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        for parameter_id, sample in zip(ids, self.tuner.generate_multiple_parameters(ids, st_callback=self.late)):
            self.hand(parameter_id, sample)

    def run(self, trials: int, concurrency: int) -> None:
        self.request(concurrency)
        while len(self.handed) < trials:
            assert self.running, "no trial running and none to come"
            finished = self.running.pop(0)
            sample = self.handed[finished]
            score = 0.3 + 0.05 * (len(json.dumps(sample, sort_keys=True)) % 9)  # some spread, deterministic
            self.tuner.receive_trial_result(finished, sample, {"default": score})
            self.tuner.trial_end(finished, True)
            self.request(1)


def spy_results(tuner: ValidSampleTuner) -> list[tuple[Any, Any]]:
    """Records what the inner tuner is told about each sample (its real method still runs)."""
    told: list[tuple[Any, Any]] = []
    real = tuner.inner.receive_trial_result

    def receive(parameter_id: Any, parameters: Any, value: Any, **kwargs: Any) -> None:
        told.append((parameters, value))
        real(parameter_id, parameters, value, **kwargs)

    tuner.inner.receive_trial_result = receive
    return told


TUNERS = [
    ("Evolution", {"optimize_mode": "maximize", "population_size": 6}, 2),
    ("TPE", {"optimize_mode": "maximize", "seed": 0}, 2),
    ("TPE", {"seed": 1}, 1),  # TPE minimizes by default: refused samples score 1
    ("Random", {"seed": 0}, 2),
    ("GridSearch", {}, 1),  # in the one-node space
    pytest.param("Anneal", {"optimize_mode": "maximize"}, 2, marks=pytest.mark.skipif(
        importlib.util.find_spec("hyperopt") is None, reason="NNI's Anneal tuner needs hyperopt")),
]


@pytest.mark.parametrize(("name", "args", "concurrency"), TUNERS)
def test_no_refused_sample_is_handed_out_and_the_inner_tuner_learns_it_scored_the_worst(
    experiment: Path, one_node_experiment: Path, name: str, args: dict[str, Any], concurrency: int,
) -> None:
    from nni_emotionnas.search.space_json import legacy_space

    experiment = one_node_experiment if name == "GridSearch" else experiment
    trial_space = built_space(experiment)
    search_space = legacy_space(trial_space)
    tuner = ValidSampleTuner(name, str(experiment), "deep", tuner_args=args)
    tuner.update_search_space(search_space)
    told = spy_results(tuner)
    dispatcher = Dispatcher(tuner)
    dispatcher.run(trials=24, concurrency=concurrency)

    assert len(dispatcher.handed) >= 24
    assert not [s for s in dispatcher.handed.values() if refused_by_trial(trial_space, s)]
    # about 45 % of random cells are refused; Evolution and Anneal are unseeded, so ask for at least one
    assert tuner.refused >= 1, "the inner tuner samples cells the space refuses: the wrapper must have met some"
    worst = 1.0 if args.get("optimize_mode", "minimize" if name == "TPE" else None) == "minimize" else 0.0
    assert tuner.refused_score == worst
    refused = [(sample, value) for sample, value in told if refused_by_trial(trial_space, sample)]
    assert len(refused) == tuner.refused and all(value == worst for _, value in refused)
    accepted = [value for sample, value in told if not refused_by_trial(trial_space, sample)]
    assert accepted and all(isinstance(v, dict) and v["default"] >= 0.3 for v in accepted)  # trials' own scores


class LateRandom(RandomTuner):
    """NNI's Random tuner with at most `cap` samples out at once: asked for more, it owes them and hands them out
    through the dispatcher's callback as trials end, as Evolution (population) and PPO (batch) do."""

    def __init__(self, seed: int = 0, cap: int = 2) -> None:
        super().__init__(seed=seed)
        self.cap, self.out, self.owed, self.send = cap, 0, [], None

    def generate_multiple_parameters(self, parameter_id_list: list[Any], **kwargs: Any) -> list[Any]:
        self.send = kwargs["st_callback"]
        samples = []
        for parameter_id in parameter_id_list:
            if self.out < self.cap:
                self.out += 1
                samples.append(self.generate_parameters(parameter_id))
            else:
                self.owed.append(parameter_id)
        return samples

    def trial_end(self, parameter_id: Any, success: bool, **kwargs: Any) -> None:
        self.out -= 1
        while self.owed and self.out < self.cap:
            self.out += 1
            owed = self.owed.pop(0)
            self.send(owed, self.generate_parameters(owed))


def test_late_samples_are_checked_before_the_callback_passes_them_on(
    experiment: Path, search_space: dict[str, Any], trial_space: Any
) -> None:
    tuner = ValidSampleTuner(f"{__name__}.LateRandom", str(experiment), "deep", {"seed": 3})
    tuner.update_search_space(search_space)
    dispatcher = Dispatcher(tuner)
    dispatcher.run(trials=16, concurrency=3)
    assert len(dispatcher.handed) >= 16 and tuner.refused >= 3 and dispatcher.late_count >= 8
    assert not [s for s in dispatcher.handed.values() if refused_by_trial(trial_space, s)]


def test_a_space_that_seems_to_admit_nothing_stops_with_a_clear_error(
    experiment: Path, search_space: dict[str, Any], trial_space: Any
) -> None:
    seed = next(s for s in range(50) if refused_by_trial(trial_space, _first_sample(RandomTuner(seed=s), search_space)))
    tuner = ValidSampleTuner("Random", str(experiment), "deep", {"seed": seed}, max_refusals=0)
    tuner.update_search_space(search_space)
    with pytest.raises(ConfigError, match=r"tuner.classArgs: Random gave 1 samples in a row that the deep space of "
                                          r"experiment.yml refuses \(max_refusals: 0\); does the space admit any\? "
                                          r"Last: .*never depends on x_t"):
        tuner.generate_multiple_parameters([0])


def _first_sample(tuner: Any, search_space: dict[str, Any]) -> dict[str, Any]:
    tuner.update_search_space(search_space)
    return tuner.generate_parameters(0)


def test_search_space_of_another_space_is_refused_naming_the_choice(
    experiment: Path, search_space: dict[str, Any]
) -> None:
    tuner = ValidSampleTuner("Random", str(experiment), "deep")
    label = next(iter(search_space))
    with pytest.raises(ConfigError, match=rf"lacks the deep space's choice '{label}' \(experiment.yml\); regenerate"):
        tuner.update_search_space({k: v for k, v in search_space.items() if k != label})
    other = {**search_space, "n1/op": {"_type": "choice", "_value": ["tanh"]}}
    with pytest.raises(ConfigError, match=r"has other values for the deep space's choice 'n1/op'"):
        tuner.update_search_space(other)
    tuner.update_search_space({**search_space, "lr": {"_type": "loguniform", "_value": [1e-4, 1e-2]}})  # + hparams


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tuner": "Evolutoin"}, r"tuner.classArgs.tuner: 'Evolutoin' is no NNI builtin tuner \(known: .*Evolution"),
    ({"tuner": "Evolution", "tuner_args": {"optimize_mode": "up"}}, r"tuner.classArgs.tuner_args: Evolution refuses"),
    ({"tuner": "TPE", "tuner_args": {"seeds": 1}}, r"tuner.classArgs.tuner_args: TPE refuses them: .*seeds"),
    ({"tuner": "nni.algorithms.hpo.hyperband_advisor.Hyperband", "tuner_args": {"optimize_mode": "maximize"}},
     r"Hyperband is not an NNI Tuner \(advisors"),
    ({"tuner": "no_such.Tuner"}, r"tuner.classArgs.tuner: cannot load 'no_such.Tuner'"),
    ({"tuner": "Random", "stream": "audio"}, r"tuner.classArgs.stream: 'audio' is not a stream"),
    ({"tuner": "Random", "max_refusals": -1}, r"tuner.classArgs.max_refusals: must be a whole number >= 0"),
    ({"tuner": "Random", "refused_score": "low"}, r"tuner.classArgs.refused_score: must be a number"),
])
def test_bad_class_args_name_the_key(experiment: Path, kwargs: dict[str, Any], message: str) -> None:
    args = {"experiment": str(experiment), "stream": "deep", **kwargs}
    with pytest.raises(ConfigError, match=message):
        ValidSampleTuner(**args)


def test_the_old_branch_class_arg_names_the_stream(experiment: Path) -> None:
    """nnictl configs written before the word `stream` carry `branch:` in classArgs."""
    assert ValidSampleTuner("Random", str(experiment), stream="deep").rules.stream == "deep"
    with pytest.raises(ConfigError, match=r"tuner.classArgs.stream: 'audio' is not a stream"):
        ValidSampleTuner("Random", str(experiment), stream="audio")


def test_the_experiment_is_read_when_the_search_space_comes(tmp_path: Path) -> None:
    """The constructor stays light (NNI's manager waits 10 s for a tuner to connect); the space is built later."""
    tuner = ValidSampleTuner("Random", str(tmp_path / "missing.yml"), "deep")
    with pytest.raises(ConfigError, match=r"tuner.classArgs.experiment: .*missing.yml is not a file"):
        tuner.update_search_space({})


def test_a_tuner_class_by_module_path_is_wrapped(experiment: Path, search_space: dict[str, Any]) -> None:
    tuner = ValidSampleTuner("nni.algorithms.hpo.tpe_tuner.TpeTuner", str(experiment), "deep",
                             {"optimize_mode": "maximize", "seed": 0})
    tuner.update_search_space(search_space)
    Dispatcher(tuner).run(trials=6, concurrency=1)
    assert type(tuner.inner).__name__ == "TpeTuner"


def test_relative_paths_start_at_the_tuners_code_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """NNI starts the tuner in the experiment's log folder with the config as `--exp_params` (base64 JSON)."""
    params = {"tuner": {"className": "x.Y", "codeDirectory": str(tmp_path / "code")}, "trialCommand": "python t.py"}
    encoded = base64.b64encode(json.dumps(params).encode()).decode()
    monkeypatch.setattr(sys, "argv", ["nni/__main__.py", "--exp_params", encoded])
    assert code_directory() == tmp_path / "code"
    monkeypatch.setattr(sys, "argv", ["pytest"])
    assert code_directory() == Path.cwd()


def test_example_configs_name_the_wrapper_and_build_it() -> None:
    """Each architecture search of examples/demo wraps its tuner; the wrapper builds from the example's files."""
    from nni_emotionnas.search.space_json import legacy_space

    demo = REPO / "examples" / "demo"
    wrapped = 0
    for path in sorted(demo.glob("nnictl_*.yml")):
        config = yaml.safe_load(path.read_text())
        if "nni_support.trial " not in config["trialCommand"] + " ":
            continue  # the one-shot trials' space is a strategy choice, not a model space
        tuner = config["tuner"]
        assert tuner["className"] == "nni_emotionnas.nni_support.tuner.ValidSampleTuner", path.name
        args = dict(tuner["classArgs"], experiment=str(demo / tuner["classArgs"]["experiment"]))
        assert f"--stream {args['stream']}" in config["trialCommand"], path.name
        if args["tuner"] == "Anneal" and importlib.util.find_spec("hyperopt") is None:
            with pytest.raises(ConfigError, match="NNI's Anneal tuner cannot load: No module named 'hyperopt'"):
                ValidSampleTuner(**args)
            continue
        wrapper = ValidSampleTuner(**args)
        wrapper.update_search_space(legacy_space(wrapper.rules.space))
        wrapped += 1
    assert wrapped >= 2
