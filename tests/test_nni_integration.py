"""NNI the way its users work, with real NNI: nnictl experiments, the REST API, the web UI, strategy files
swapped under `emotionnas search`, and export of the best trial into `emotionnas train`.

Everything runs on a tiny synthetic corpus (2 sessions, 16 utterances, 24x24 spectrograms) and a one-cell
space, so a trial takes seconds; features are extracted once, before any trial starts.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from nni_emotionnas.cli.app import main
from nni_emotionnas.errors import BackendError, ConfigError

REPO = Path(__file__).resolve().parent.parent
NNICTL = Path(sys.executable).parent / "nnictl"
EXPERIMENT = {
    "name": "tiny",
    "corpus": {
        "reader": "synthetic",
        "path": "corpus",
        "options": {"sessions": 2, "utterances_per_emotion": 2, "min_seconds": 0.8, "max_seconds": 1.0},
    },
    "features": {"cache_dir": "cache", "n_jobs": 1, "spectrogram": {"duration": 1.0, "size": [24, 24]}},
    "spectrogram_space": "space.yml",
    "train": {"epochs": 2, "batch_size": 8},
    "search": {"epochs": 2, "batch_size": 8},
}
SPACE = {"channels": 2, "layers": 1, "nodes": 1, "ops": ["avg_pool_3x3", "skip_connect", "sep_conv_3x3", "none"],
         "stem": {"multiplier": 1}}
ARCH_LABELS = {"reduce/op_2_0", "reduce/op_2_1", "reduce/input_2_0", "reduce/input_2_1"}
FINAL_KEYS = {"default", "wa", "val_loss", "best_epoch", "last_ua", "last_wa", "params", "seed"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rest(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/{path}", timeout=10) as response:
        return json.loads(response.read())


def processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def wait_gone(text: str, seconds: float = 20.0) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = processes_mentioning(text)
        if not left:
            return []
        time.sleep(0.5)
    return processes_mentioning(text)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Experiment + space files and a filled feature cache (trials then only read it)."""
    from nni_emotionnas.config.experiment import load_experiment
    from nni_emotionnas.features.prepared import prepare

    root = tmp_path_factory.mktemp("nni_ws")
    (root / "experiment.yml").write_text(yaml.safe_dump(EXPERIMENT))
    (root / "space.yml").write_text(yaml.safe_dump(SPACE))
    prepare(load_experiment(root / "experiment.yml"), streams=["spectrogram"], progress=False)
    return root


@dataclass
class RunningExperiment:
    id: str
    port: int
    folder: Path


@pytest.fixture(scope="module")
def nnictl_experiment(workspace: Path) -> Iterator[RunningExperiment]:
    """`nnictl create` of a 2-trial TPE experiment over the space-json of the tiny space; stopped at teardown."""
    assert main(["space-json", "--stream", "spectrogram", "--space", str(workspace / "space.yml"),
                 "--out", str(workspace / "search_spaces" / "spectrogram.json")]) == 0
    config = {
        "experimentName": "emotionnas-test",
        "searchSpaceFile": "search_spaces/spectrogram.json",
        "trialCommand": f"{sys.executable} -m nni_emotionnas.nni_support.trial --experiment experiment.yml "
        "--branch spectrogram",  # the old spelling of --stream, as saved nnictl configs carry it
        "trialCodeDirectory": ".",
        "trialConcurrency": 2,
        "maxTrialNumber": 2,
        "tuner": {"name": "TPE", "classArgs": {"optimize_mode": "maximize", "seed": 0}},
        "trainingService": {"platform": "local"},
        "experimentWorkingDirectory": str(workspace / "nni-experiments"),
    }
    (workspace / "nnictl_tiny.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    created = subprocess.run(
        [str(NNICTL), "create", "--config", str(workspace / "nnictl_tiny.yml"), "--port", str(port)],
        capture_output=True, text=True, timeout=120, cwd=workspace,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    experiment_id = _experiment_id(port)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = rest(port, "trial-jobs")
            if len(jobs) == 2 and all(j["status"] in ("SUCCEEDED", "FAILED") for j in jobs):
                break
            time.sleep(2)
        yield RunningExperiment(experiment_id, port, workspace / "nni-experiments" / experiment_id)
    finally:
        subprocess.run([str(NNICTL), "stop", experiment_id], capture_output=True, timeout=60)
    assert wait_gone(experiment_id) == [], "NNI manager still running after nnictl stop"
    assert wait_gone("nni_emotionnas.nni_support.trial") == [], "a trial outlived its experiment"


def nnictl_create(config: Path, cwd: Path) -> tuple[int, str]:
    """`nnictl create` of `config` on a free port (asserting it started); the port and the experiment id."""
    port = free_port()
    created = subprocess.run([str(NNICTL), "create", "--config", str(config), "--port", str(port)],
                             capture_output=True, text=True, timeout=120, cwd=cwd)
    assert created.returncode == 0, created.stdout + created.stderr
    return port, _experiment_id(port)


def _experiment_id(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/experiment", timeout=10) as response:
        return json.loads(response.read())["id"]


def test_space_json_is_derived_from_the_model_space(workspace: Path, tmp_path: Path) -> None:
    from nni_emotionnas.search.space_json import build_space, load_space_config, split_parameters

    out = tmp_path / "s.json"
    assert main(["space-json", "--stream", "spectrogram", "--space", str(workspace / "space.yml"),
                 "--out", str(out), "--hyperparameters"]) == 0
    space_json = json.loads(out.read_text())
    assert set(space_json) == ARCH_LABELS | {"lr", "batch_size"}
    assert space_json["reduce/op_2_0"] == {"_type": "choice", "_value": ["avg_pool_3x3", "skip_connect",
                                                                         "sep_conv_3x3"]}
    assert space_json["reduce/input_2_1"] == {"_type": "choice", "_value": ["c_k-2", "c_k-1"]}  # readable in the UI
    space = build_space("spectrogram", load_space_config("spectrogram", workspace / "space.yml"), 4)
    sample = {k: v["_value"][-1] for k, v in space_json.items()}
    architecture, hyper = split_parameters(space, sample)
    assert architecture["reduce/input_2_0"] == [1] and hyper == {"lr": 1e-2, "batch_size": 64}
    space.freeze(architecture)  # a valid sample of the real space
    with pytest.raises(ConfigError, match="reduce/input_2_0"):
        split_parameters(space, {k: v for k, v in sample.items() if k != "reduce/input_2_0"})


def test_nnictl_two_trials_report_metrics_and_architectures(nnictl_experiment: RunningExperiment) -> None:
    jobs = rest(nnictl_experiment.port, "trial-jobs")
    assert [j["status"] for j in jobs] == ["SUCCEEDED", "SUCCEEDED"], jobs
    metrics = rest(nnictl_experiment.port, "metric-data")
    for job in jobs:
        parameters = json.loads(job["hyperParameters"][0])["parameters"]
        assert set(parameters) == ARCH_LABELS
        assert parameters["reduce/op_2_0"] in SPACE["ops"] and parameters["reduce/input_2_0"] in ("c_k-2", "c_k-1")
        mine = [m for m in metrics if m["trialJobId"] == job["trialJobId"]]
        intermediate = [float(json.loads(m["data"])) for m in mine if m["type"] == "PERIODICAL"]
        final = [json.loads(json.loads(m["data"])) for m in mine if m["type"] == "FINAL"]
        assert len(intermediate) == EXPERIMENT["train"]["epochs"] and all(0 <= v <= 1 for v in intermediate)
        assert len(final) == 1 and set(final[0]) == FINAL_KEYS
        assert final[0]["default"] == pytest.approx(max(intermediate))  # the best epoch, the one `train` keeps
        assert final[0]["last_ua"] == pytest.approx(intermediate[-1])
        assert final[0]["params"] > 0 and final[0]["seed"] == 0


def test_web_ui_serves_its_index(nnictl_experiment: RunningExperiment) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{nnictl_experiment.port}/", timeout=10) as response:
        page = response.read().decode()
    assert response.status == 200
    assert "<title>Neural Network Intelligence</title>" in page and "<script" in page


def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing."""
    found = shutil.which("chromium")
    if found is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True, capture_output=True, timeout=600)
        found = shutil.which("chromium")
    assert found, "chromium is not installable here"
    return found


@pytest.mark.slow
def test_trials_page_in_headless_chromium(nnictl_experiment: RunningExperiment, workspace: Path) -> None:
    browser = chromium()
    url = f"http://127.0.0.1:{nnictl_experiment.port}/detail"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1400,1000", "--virtual-time-budget=15000"]
    dom = subprocess.run(
        [browser, *flags, f"--user-data-dir={workspace / 'chromium-dom'}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    ).stdout
    job_ids = [j["trialJobId"] for j in rest(nnictl_experiment.port, "trial-jobs")]
    assert all(job_id in dom for job_id in job_ids), dom[-2000:]
    screenshot = workspace / "trials_page.png"
    subprocess.run(
        [browser, *flags, f"--user-data-dir={workspace / 'chromium-shot'}", f"--screenshot={screenshot}", url],
        capture_output=True, timeout=120,
    )
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    print(f"screenshot: {screenshot}")


def test_export_best_trial_round_trips_into_train(nnictl_experiment: RunningExperiment, workspace: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from nni_emotionnas.search.export import final_results
    from nni_emotionnas.spaces.genotype import read_genotype

    genotype = workspace / "exported" / "genotype.json"
    assert main(["export", str(nnictl_experiment.folder), "--out", str(genotype)]) == 0
    record = read_genotype(genotype)
    best = final_results(nnictl_experiment.folder)[0]
    assert record["search_metrics"]["nni_trial"] == best.trial_id
    assert record["search_metrics"]["default"] == best.metric
    assert set(record["architecture"]) == ARCH_LABELS and record["num_classes"] == 4
    assert main(["train", str(workspace / "experiment.yml"), "--stream", "spectrogram",
                 "--genotype", str(genotype), "--out", str(workspace / "train_run")]) == 0
    results = json.loads((workspace / "train_run" / "results.json").read_text())
    assert results["parameters"] == best.final["params"]  # the same network the trial trained
    assert main(["export", "no-such-experiment-id"]) == 2
    assert "no-such-experiment-id" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["gumbel_darts.yml", "random_oneshot.yml"])
def test_search_with_packaged_strategy_files(workspace: Path, strategy: str) -> None:
    from nni_emotionnas.spaces.genotype import read_genotype

    out = workspace / f"search_{strategy}"
    assert main(["search", str(workspace / "experiment.yml"), "--stream", "spectrogram",
                 "--strategy", str(REPO / "strategies" / strategy), "--out", str(out)]) == 0
    record = read_genotype(out / "genotype.json")
    assert set(record["architecture"]) == ARCH_LABELS
    assert record["strategy"]["name"] == yaml.safe_load((REPO / "strategies" / strategy).read_text())["name"]


@pytest.mark.slow
def test_multi_trial_strategy_runs_trials_through_the_nni_manager(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from nni_emotionnas.search.export import final_results
    from nni_emotionnas.spaces.genotype import read_genotype

    monkeypatch.chdir(workspace)  # NAS trials run in the current directory
    strategy = workspace / "random_two.yml"
    strategy.write_text(yaml.safe_dump(
        {"name": "Random", "args": {"seed": 1, "port": free_port(), "max_trials": 2, "concurrency": 2}}
    ))
    out = workspace / "search_random"
    assert main(["search", "experiment.yml", "--stream", "spectrogram", "--strategy", str(strategy),
                 "--out", str(out)]) == 0
    [folder] = [p for p in (out / "nni").iterdir() if not p.is_symlink() and (p / "db" / "nni.sqlite").is_file()]
    results = final_results(folder)
    assert len(results) == 2 and all(set(r.final) == FINAL_KEYS for r in results)
    record = read_genotype(out / "genotype.json")
    assert record["search_metrics"]["nni_trial"] == results[0].trial_id
    assert set(record["architecture"]) == ARCH_LABELS and record["strategy"]["name"] == "Random"
    best = f"search: best of 2 trials is {results[0].trial_id}: val UA {100 * results[0].metric:.1f} %"
    assert best in capsys.readouterr().out  # what the search found, not "null (train loss)"
    assert wait_gone(folder.name) == []


@pytest.mark.slow
def test_oneshot_search_inside_an_nnictl_trial_reports_every_epoch(workspace: Path) -> None:
    """examples/demo/nnictl_oneshot.yml's setup on tiny data: the tuner picks the one-shot strategy file."""
    config = yaml.safe_load((REPO / "examples" / "demo" / "nnictl_oneshot.yml").read_text())
    config.update(
        searchSpace={"strategy": {"_type": "choice", "_value": ["gumbel_darts"]}},
        trialCommand=f"{sys.executable} -m nni_emotionnas.nni_support.oneshot_trial --experiment experiment.yml "
        "--branch spectrogram",  # the old spelling of --stream, as saved nnictl configs carry it
        maxTrialNumber=1,
        experimentWorkingDirectory=str(workspace / "nni-oneshot"),
    )
    (workspace / "nnictl_oneshot.yml").write_text(yaml.safe_dump(config))
    port, experiment_id = nnictl_create(workspace / "nnictl_oneshot.yml", workspace)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            jobs = rest(port, "trial-jobs")
            if jobs and jobs[0]["status"] in ("SUCCEEDED", "FAILED"):
                break
            time.sleep(2)
        assert jobs[0]["status"] == "SUCCEEDED"
        metrics = [m for m in rest(port, "metric-data") if m["trialJobId"] == jobs[0]["trialJobId"]]
        epochs = [json.loads(json.loads(m["data"])) for m in metrics if m["type"] == "PERIODICAL"]
        [final] = [json.loads(json.loads(m["data"])) for m in metrics if m["type"] == "FINAL"]
        assert len(epochs) == EXPERIMENT["search"]["epochs"] and all(0 <= e["default"] <= 1 for e in epochs)
        assert final["strategy"] == "GumbelDARTS" and final["default"] == epochs[-1]["default"]
        assert {m["parameterId"] for m in metrics} == {"0"}  # reported for the trial's own parameters
        # the architecture found, readable, on the trial's row; no pickle in what the REST API serves
        assert {k for k in final if k.startswith("arch ")} == {f"arch {label}" for label in ARCH_LABELS}
        assert final["arch reduce/op_2_0"] in SPACE["ops"] and final["arch reduce/input_2_0"] in ("c_k-2", "c_k-1")
        assert final["seed"] == 0 and "__nni_obj__" not in json.dumps(rest(port, "trial-jobs"))
        assert main(["export", str(workspace / "nni-oneshot" / experiment_id),
                     "--out", str(workspace / "oneshot_genotype.json")]) == 0
    finally:
        subprocess.run([str(NNICTL), "stop", experiment_id], capture_output=True, timeout=60)
    assert wait_gone(experiment_id) == []


def test_strategy_file_errors_name_the_key(tmp_path: Path) -> None:
    from nni_emotionnas.search.strategies import build_strategy, load_strategy_spec

    bad = tmp_path / "bad.yml"
    bad.write_text("name: Random\nargs: {max_trails: 3}\n")
    with pytest.raises(ConfigError, match=r"bad.yml.args.max_trails: unknown argument of Random.*max_trials"):
        load_strategy_spec(bad)
    bad.write_text("name: Randum\n")
    with pytest.raises(ConfigError, match=r"bad.yml.name: unknown strategy 'Randum'"):
        load_strategy_spec(bad)
    plan = build_strategy("RegularizedEvolution", {"population_size": 4, "sample_size": 2, "port": 9999})
    assert plan.port == 9999 and plan.max_trials == 10 and type(plan.strategy).__name__ == "RegularizedEvolution"
    for path in sorted((REPO / "strategies").glob("*.yml")):
        load_strategy_spec(path)  # every packaged file is valid


def test_rl_strategies_say_they_need_tianshou() -> None:
    pytest.importorskip("nni")
    try:
        import tianshou  # noqa: F401
    except ImportError:
        from nni_emotionnas.search.strategies import build_strategy

        with pytest.raises(BackendError, match="tianshou"):
            build_strategy("PolicyBasedRL", {"max_trials": 2})
    else:
        pytest.skip("tianshou is installed: PolicyBasedRL builds")


def test_example_nnictl_configs_are_valid(tmp_path: Path) -> None:
    from nni.experiment.config import ExperimentConfig

    configs = sorted((REPO / "examples").glob("*/nnictl_*.yml"))
    assert {p.name for p in configs} >= {"nnictl_spectrogram_tpe.yml", "nnictl_oneshot.yml", "nnictl_remote.yml"}
    key = tmp_path / "id_test"
    key.write_text("not used\n")
    for path in configs:
        data = yaml.safe_load(path.read_text())
        if "searchSpaceFile" in data:
            data["searchSpaceFile"] = str(tmp_path / "space.json")
            (tmp_path / "space.json").write_text("{}")
        data["trialCodeDirectory"] = str(path.parent)
        for machine in data["trainingService"].get("machineList", []):
            machine["sshKeyFile"] = str(key)
        ExperimentConfig(**data).json()  # NNI's own validation
        assert "nni_emotionnas" in data["trialCommand"]


@pytest.fixture
def ssh_localhost(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A throwaway sshd on 127.0.0.1 (Debian's openssh-server, installed when missing) accepting one new key."""
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists():
        install = subprocess.run(["apt-get", "install", "-y", "-q", "openssh-server"], capture_output=True,
                                 text=True, timeout=300)
        if install.returncode != 0:
            pytest.skip(f"openssh-server is not installable here: {install.stderr[-300:]}")
    keys = tmp_path / "ssh"
    keys.mkdir()
    for name, kind in (("host", ["-t", "ed25519"]), ("user", ["-t", "rsa", "-b", "2048", "-m", "PEM"])):
        subprocess.run(["ssh-keygen", "-q", *kind, "-N", "", "-f", str(keys / name)], check=True, timeout=60)
    shutil.copy(keys / "user.pub", keys / "authorized_keys")
    port = free_port()
    (keys / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
        f"PidFile {keys / 'sshd.pid'}\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([str(sshd), "-D", "-f", str(keys / "sshd_config"), "-E", str(keys / "sshd.log")])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield port, keys / "user"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_remote_ssh_training_service_runs_the_example(workspace: Path, ssh_localhost: tuple[int, Path],
                                                       tmp_path: Path) -> None:
    """examples/demo/nnictl_remote.yml with its machine list pointed at an sshd on localhost."""
    import getpass

    port, key = ssh_localhost
    remote = tmp_path / "remote_code"
    remote.mkdir()
    experiment = dict(EXPERIMENT, spectrogram_space="space.yml")  # corpus/cache by absolute path: code is copied
    experiment["corpus"] = dict(EXPERIMENT["corpus"], path=str(workspace / "corpus"))
    experiment["features"] = dict(EXPERIMENT["features"], cache_dir=str(workspace / "cache"))
    (remote / "experiment.yml").write_text(yaml.safe_dump(experiment))
    shutil.copy(workspace / "space.yml", remote / "space.yml")
    assert main(["space-json", "--stream", "spectrogram", "--space", str(remote / "space.yml"),
                 "--out", str(remote / "search_spaces" / "spectrogram.json")]) == 0
    config = yaml.safe_load((REPO / "examples" / "demo" / "nnictl_remote.yml").read_text())
    config.update(maxTrialNumber=1, trialConcurrency=1, experimentWorkingDirectory=str(tmp_path / "exps"))
    machine = {"host": "127.0.0.1", "port": port, "user": getpass.getuser(), "sshKeyFile": str(key),
               "pythonPath": str(Path(sys.executable).parent)}
    config["trainingService"]["machineList"] = [machine]
    (remote / "nnictl_remote.yml").write_text(yaml.safe_dump(config))
    web = free_port()
    created = subprocess.run([str(NNICTL), "create", "--config", str(remote / "nnictl_remote.yml"), "--port", str(web)],
                             capture_output=True, text=True, timeout=120, cwd=remote)
    assert created.returncode == 0, created.stdout + created.stderr
    experiment_id = _experiment_id(web)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            jobs = rest(web, "trial-jobs")
            status = rest(web, "check-status")
            assert status["status"] != "ERROR", status
            if jobs and jobs[0]["status"] in ("SUCCEEDED", "FAILED"):
                break
            time.sleep(2)
        assert jobs[0]["status"] == "SUCCEEDED" and jobs[0]["logPath"].startswith("file://127.0.0.1:")
        final = json.loads(json.loads(jobs[0]["finalMetricData"][0]["data"]))
        assert set(final) == FINAL_KEYS
        genotype = tmp_path / "genotype.json"
        assert main(["export", str(tmp_path / "exps" / experiment_id), "--out", str(genotype)]) == 0
        assert set(json.loads(genotype.read_text())["architecture"]) == ARCH_LABELS
    finally:
        subprocess.run([str(NNICTL), "stop", experiment_id], capture_output=True, timeout=60)
        shutil.rmtree(Path("/tmp/nni-experiments") / experiment_id, ignore_errors=True)  # the "remote" side
    assert wait_gone(experiment_id) == []


def test_deep_trial_reads_frames_as_wide_as_the_corpus_features(tmp_path: Path) -> None:
    """A trial's recurrent space takes the corpus' frame width (fbank: 120), whatever `input_dim` the file says."""
    from nni_emotionnas.nni_support import trial

    deep = {**EXPERIMENT, "features": {**EXPERIMENT["features"], "deep": {"backend": "fbank"},
                                       "sequence": {"target_frames": 8}}, "deep_space": "deep.yml"}
    (tmp_path / "experiment.yml").write_text(yaml.safe_dump(deep))
    (tmp_path / "deep.yml").write_text("input_dim: 512\nhidden_size: 8\nnodes: 2\nattention_dim: 4\n")
    space_json = tmp_path / "deep.json"
    assert main(["space-json", "--stream", "deep", "--space", str(tmp_path / "deep.yml"),
                 "--out", str(space_json)]) == 0
    sample = {label: choice["_value"][0] for label, choice in json.loads(space_json.read_text()).items()}
    args = ["--experiment", str(tmp_path / "experiment.yml"), "--stream", "deep", "--epochs", "1",
            "--parameters", json.dumps(sample), "--out", str(tmp_path / "trial")]
    assert trial.main(args) == 0
    record = json.loads((tmp_path / "trial" / "genotype.json").read_text())
    assert record["space_config"]["input_dim"] == 120


@pytest.mark.slow
def test_nnictl_deep_search_with_the_wrapped_tuner_has_no_failed_trial(tmp_path: Path) -> None:
    """examples/demo/nnictl_deep_evolution.yml on tiny data, its tuner made reproducible (Random, seeded so that
    NNI's own sampling gives refused cells among the first trials): every trial trains, none FAILED."""
    from nni.algorithms.hpo.random_tuner import RandomTuner

    from nni_emotionnas.config.experiment import load_experiment
    from nni_emotionnas.features.prepared import prepare
    from nni_emotionnas.nni_support.sample_rules import SampleRules

    deep = {**EXPERIMENT, "features": {**EXPERIMENT["features"], "deep": {"backend": "fbank"},
                                       "sequence": {"target_frames": 8}}, "deep_space": "deep.yml",
            "train": {"epochs": 1, "batch_size": 8}}
    (tmp_path / "experiment.yml").write_text(yaml.safe_dump(deep))
    (tmp_path / "deep.yml").write_text("hidden_size: 8\nnodes: 2\nattention_dim: 4\n")
    prepare(load_experiment(tmp_path / "experiment.yml"), streams=["deep"], progress=False)
    assert main(["space-json", "--stream", "deep", "--space", str(tmp_path / "deep.yml"),
                 "--out", str(tmp_path / "search_spaces" / "deep.json")]) == 0
    trials, rules = 4, SampleRules(tmp_path / "experiment.yml", "deep")

    def refused_before(seed: int) -> int:
        """How many refused cells NNI's Random tuner samples before its `trials`-th valid one."""
        tuner, refused, valid = RandomTuner(seed=seed), 0, 0
        tuner.update_search_space(json.loads((tmp_path / "search_spaces" / "deep.json").read_text()))
        while valid < trials:
            bad = rules.refusal(tuner.generate_parameters(0)) is not None
            refused, valid = refused + bad, valid + (not bad)
        return refused

    seed = next(s for s in range(100) if refused_before(s) >= 2)
    config = yaml.safe_load((REPO / "examples" / "demo" / "nnictl_deep_evolution.yml").read_text())
    config["tuner"]["classArgs"].update(tuner="Random", tuner_args={"seed": seed})
    config.update(trialCommand=config["trialCommand"].replace("python ", f"{sys.executable} ", 1),
                  maxTrialNumber=trials, trialConcurrency=2, experimentWorkingDirectory=str(tmp_path / "exps"))
    (tmp_path / "nnictl_deep.yml").write_text(yaml.safe_dump(config))
    port, experiment_id = nnictl_create(tmp_path / "nnictl_deep.yml", tmp_path)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            status, jobs = rest(port, "check-status"), rest(port, "trial-jobs")
            assert status["status"] != "ERROR", status
            if len(jobs) == trials and all(j["status"] in ("SUCCEEDED", "FAILED") for j in jobs):
                break
            time.sleep(2)
        assert [j["status"] for j in jobs] == ["SUCCEEDED"] * trials
        for job in jobs:  # what the trials trained: cells the space accepts
            assert rules.refusal(json.loads(job["hyperParameters"][0])["parameters"]) is None
        log = (tmp_path / "exps" / experiment_id / "log" / "dispatcher.log").read_text()
        assert log.count("Random sample refused") == refused_before(seed)  # never a trial
    finally:
        subprocess.run([str(NNICTL), "stop", experiment_id], capture_output=True, timeout=60)
    assert wait_gone(experiment_id) == []
