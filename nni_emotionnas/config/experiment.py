"""The experiment file: one YAML that names the corpus, protocol, features and later stages."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from nni_emotionnas.config.parse import load_yaml, parse
from nni_emotionnas.config.training import ModelConfig, SearchConfig, TrainConfig
from nni_emotionnas.errors import ConfigError

SEED_RANGE = (0, 2**32 - 1)  # what numpy's, torch's and Python's seeding all accept


def check_seed(seed: int, key: str) -> None:
    """A seed every library seeds with, else a ValueError naming `key` (`seed`, `seeds`, ...)."""
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(f"{key}: a seed must be between {SEED_RANGE[0]} and 2**32 - 1, got {seed}")


@dataclass
class DeepSequenceConfig:
    """Knobs of the length unification (the `features.sequence` section of the experiment file).

    `target_frames`: frames every utterance ends with (727 in the paper). `max_frames`: length every
    utterance is zero-padded (or cropped) to before pooling; `None` means the corpus maximum, which the
    data layer passes in. `min_valid_fraction`: a pooled frame is valid when more than this fraction of
    the frames averaged into it are real (0 = any real frame makes it valid).
    """

    target_frames: int = 727
    max_frames: Optional[int] = None
    min_valid_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.target_frames < 1:
            raise ValueError(f"target_frames must be at least 1, got {self.target_frames}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {self.max_frames}")
        if not 0.0 <= self.min_valid_fraction < 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1), got {self.min_valid_fraction}")


@dataclass
class LabelConfig:
    """Which labels a run uses: `map` renames/merges raw labels, `keep` selects classes (in this order)."""

    keep: Optional[list[str]] = None
    map: dict[str, str] = field(default_factory=dict)
    drop_unknown: bool = False


CORPUS_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # prefixes speakers (`emodb/03`) and names folds and folders


@dataclass
class CorpusConfig:
    """Where a corpus is and how to read it: `reader` picks the layout, `path` is its folder (or the manifest
    CSV), `options` go to the reader (`subset` for iemocap, `speech_only` for ravdess, `speaker_pattern` for
    folders). `on_bad_audio: skip` leaves out unusable or missing files and lists them in the run's report.
    `name` (required in `corpora:`) prefixes its speakers, sessions and utterance ids (`emodb/03`): a speaker
    id is only unique within its corpus."""

    reader: Literal["iemocap", "emodb", "ravdess", "cremad", "manifest", "folders", "synthetic"]
    name: Optional[str] = None
    path: Optional[str] = None
    options: dict[str, Any] = field(default_factory=dict)
    labels: LabelConfig = field(default_factory=LabelConfig)
    on_bad_audio: Literal["error", "skip"] = "error"
    # a row listed twice (same audio, label, speaker): an error, or `drop` to keep one with a warning
    on_duplicate: Literal["error", "drop"] = "error"

    def __post_init__(self) -> None:
        import re

        if self.name is not None and not re.match(CORPUS_NAME, self.name):
            raise ValueError(f"name: {self.name!r} must be letters, digits, '_', '.' or '-' (it names folders)")


@dataclass
class SharedLabels:
    """`labels` beside `corpora:`: the classes every corpus is reduced to (in this order); utterances outside
    them are dropped and counted per corpus. Unset: the classes every corpus has."""

    keep: Optional[list[str]] = None


ACROSS_CORPORA = ("cross_corpus", "leave_one_corpus_out")


@dataclass
class ProtocolConfig:
    """How utterances split into speaker-independent folds.

    `auto` picks leave-one-session-out when sessions hold several speakers (IEMOCAP), else
    leave-one-speaker-out. `folds` restricts a run to some fold names. `require_all_classes` refuses
    folds whose validation or test speakers lack a class (training splits must always have every class).
    `validation_speakers` (leave-one-speaker-out): how many speakers validate each fold; with one, the epoch
    chosen (and with `train.refit`, the epochs refitted) rest on one speaker's few dozen utterances.

    With several `corpora`: `cross_corpus` trains on the corpora named in `train` (default: all but `test`)
    and tests on the `test` corpus; `leave_one_corpus_out` tests every corpus in turn on a model of the
    others. Both validate on `validation_speakers` held-out speakers per training corpus (more when needed to
    show every class), so no utterance of the test corpus is read before testing. `pooled` runs the
    within-corpus protocol `within` over the union of the corpora (speakers are per corpus).
    """

    kind: Literal[
        "auto", "leave_one_session_out", "leave_one_speaker_out", "group_kfold", "pooled", "cross_corpus",
        "leave_one_corpus_out",
    ] = "auto"
    train: Optional[list[str]] = None
    test: Optional[str] = None
    within: Literal["auto", "leave_one_session_out", "leave_one_speaker_out", "group_kfold"] = "auto"
    swap_val_test: bool = False
    validation_speakers: int = 1
    k: int = 5
    seed: int = 0
    folds: Optional[list[str]] = None
    require_all_classes: bool = False

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")
        if self.k < 2:
            raise ValueError(f"k must be at least 2 (one group tests, another validates), got {self.k}")
        if self.validation_speakers < 1:
            raise ValueError(f"validation_speakers must be at least 1, got {self.validation_speakers}")
        if self.folds is not None and not self.folds:
            raise ValueError("folds: an empty list runs nothing; leave it out to run every fold")
        if self.kind != "cross_corpus" and (self.train is not None or self.test is not None):
            raise ValueError(f"train/test: name corpora for kind cross_corpus only (kind is {self.kind})")
        if self.kind == "cross_corpus" and self.test is None:
            raise ValueError("test: cross_corpus needs the name of the corpus it tests on")
        if self.kind != "pooled" and self.within != "auto":
            raise ValueError(f"within: applies to kind pooled only (kind is {self.kind})")


def scipy_window_works(window: Union[str, tuple]) -> bool:
    """Whether scipy (and so librosa) builds `window`: a name, or (name, parameter...)."""
    from scipy.signal import get_window

    try:
        get_window(window, 8)
    except (ValueError, TypeError):
        return False
    return True


@dataclass
class SpectrogramConfig:
    """The paper's spectrogram: fixed length, Hamming window, overlap, average-pooled to `size`.

    `scale`: `log` = natural log of magnitude + `eps` (default; keeps loudness, which carries arousal),
    `db` = 20 log10 relative to 1.0, `magnitude` = linear magnitude. No per-utterance normalisation:
    the network's batch norm standardises. `mel_bands`: unset keeps the paper's linear-frequency STFT rows;
    a number first sums the magnitudes into that many mel bands (librosa's Slaney filters up to Nyquist),
    which weights the low frequencies where pitch and formants live, as most SER front ends do.
    `padding`: how an utterance shorter than `duration` is filled: `zeros` (the paper's fixed length: silence
    after the speech) or `repeat` (the utterance looped until `duration`, a common SER choice: every column is
    speech, so per-row statistics are the utterance's own whatever its length). Longer ones are cut.
    `window`: a scipy window name, or for a window with parameters scipy's (name, parameter...) form as a list,
    e.g. `[kaiser, 8.0]`.
    """

    sample_rate: int = 16000
    duration: float = 8.0
    window_ms: float = 25.0
    overlap_ms: float = 14.0
    window: Union[str, list[Union[str, float]]] = "hamming"
    size: list[int] = field(default_factory=lambda: [140, 140])
    scale: Literal["log", "db", "magnitude"] = "log"
    eps: float = 1e-5
    mel_bands: Optional[int] = None
    padding: Literal["zeros", "repeat"] = "zeros"

    def __post_init__(self) -> None:
        if self.sample_rate != 16000:
            raise ValueError(f"sample_rate must be 16000 (audio is loaded as 16 kHz mono), got {self.sample_rate}")
        for name in ("duration", "window_ms", "eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        window = round(self.window_ms * self.sample_rate / 1000)
        overlap = round(self.overlap_ms * self.sample_rate / 1000)
        if self.overlap_ms < 0 or overlap >= window:
            raise ValueError(
                f"overlap_ms must be at least 0 and smaller than window_ms ({self.overlap_ms:g} ms = {overlap} "
                f"samples against a {self.window_ms:g} ms = {window} sample window)"
            )
        if len(self.size) != 2 or any(n < 1 for n in self.size):
            raise ValueError(f"size must be two positive integers [frequency rows, time columns], got {self.size}")
        if self.mel_bands is not None and not 1 <= self.mel_bands <= window // 2 + 1:
            raise ValueError(
                f"mel_bands must be between 1 and the window's {window // 2 + 1} frequency bins, got {self.mel_bands}"
            )
        if not scipy_window_works(self.scipy_window):
            if isinstance(self.window, str) and any(scipy_window_works((self.window, *[1.0] * n)) for n in (1, 2)):
                raise ValueError(f"window: {self.window!r} needs a parameter: give it as a list, e.g. "
                                 f"[{self.window}, 8.0] (scipy's (name, parameter) form)")
            raise ValueError(f"window: {self.window!r} is not a scipy window name (e.g. hamming, hann) nor "
                             "[name, parameter...] (e.g. [kaiser, 8.0])")

    @property
    def scipy_window(self) -> Union[str, tuple]:
        """`window` as scipy and librosa take it: a name, or a (name, parameter...) tuple."""
        return tuple(self.window) if isinstance(self.window, list) else self.window


@dataclass
class FeaturesConfig:
    """`standardize: train_speakers` standardises each fold's inputs (spectrogram per frequency row, deep
    frames per dimension) with statistics of that fold's training speakers only; `speaker` with each
    speaker's own statistics (transductive: a test speaker's come from their unlabelled test utterances;
    refused when the median speaker shows fewer than half the classes unless `standardize_force: true`);
    `none` feeds raw features. The stream networks, the probes and the `classic` baseline all follow it."""

    cache_dir: Optional[str] = None
    standardize: Literal["train_speakers", "speaker", "none"] = "train_speakers"
    standardize_force: bool = False
    n_jobs: int = 2
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    deep: dict[str, Any] = field(default_factory=lambda: {"backend": "fbank"})
    sequence: DeepSequenceConfig = field(default_factory=DeepSequenceConfig)

    def __post_init__(self) -> None:
        if self.n_jobs < 1:
            raise ValueError(f"n_jobs must be at least 1, got {self.n_jobs}")


SINGLE_STREAMS = ("spectrogram", "deep")
FUSION_VARIANTS = ("ism", "concat", "sum", "max", "min")
PROBE_VARIANTS = {"probe_spectrogram": "spectrogram", "probe_deep": "deep"}  # baseline -> stream it reads
CLASSIC, PROBE_FUSION = "classic", "probe_fusion"
BASELINES = (*PROBE_VARIANTS, CLASSIC, PROBE_FUSION)  # rows that train no network: reference points
VARIANTS = SINGLE_STREAMS + FUSION_VARIANTS + BASELINES
OpenSmileSet = Literal["ComParE_2016", "eGeMAPSv02", "GeMAPSv01b"]


@dataclass
class ClassicConfig:
    """The `classic` baseline (`run.classic`): openSMILE functionals of `feature_set` (ComParE_2016: 6373
    per utterance, eGeMAPSv02: 88) and a logistic regression with inverse regularisation `C`;
    `class_weight: balanced` weighs classes alike. The defaults are the usual SER reference setting."""

    feature_set: OpenSmileSet = "ComParE_2016"
    C: float = 0.01
    class_weight: Literal["none", "balanced"] = "none"

    def __post_init__(self) -> None:
        if self.C <= 0:
            raise ValueError(f"classic.C must be positive, got {self.C}")


@dataclass
class RunConfig:
    """What `emotionnas run` trains per fold.

    `variants`: any of spectrogram, deep (single streams) and ism, concat, sum, max, min (fusions);
    `ablations: true` adds the four comparison fusions. `search`: `per_fold` searches on each fold's
    training speakers (no test speaker ever influences its own architecture); `once` searches on the first
    fold's training speakers and reuses the cells everywhere (faster, but later folds' test speakers then
    took part in the search). `main` is the variant `emotionnas predict` uses.

    `probes: true` adds, per stream in use, the `probe_<stream>` baseline (logistic regression on mean+std
    statistics of that stream's input, `nni_emotionnas.evaluation.probe`). `seeds` trains every variant once
    per seed (search runs once per fold with the experiment's seed); results are mean ± std over folds and
    seeds. `dominant`: the stream a fusion keeps intact; `auto` picks, per fold, the stream whose probe scores
    the better UA leave-one-speaker-out over the fold's non-test speakers (`evaluation.dominance`).
    `ism_gate`: `zero` fuses F = X_dom + g * A * H with a learned gate g starting at 0 (so ISM starts as its
    dominant stream), `paper` is the paper's F = X_dom + A * H. `jobs`: folds trained at once, each in its own
    worker process (`evaluation.fold_workers`; same results as one at a time). Give each worker its cores
    (`train.threads` x `jobs` at most the machine's) and memory; it changes no result, so a run resumes
    under another value.

    `crossfit_folds`: speaker groups of a fold's non-test speakers whose held-out stream outputs train the
    fusion heads under `train.fusion_init: crossfit`; `supplementary`: linear baselines (`classic`,
    `probe_spectrogram`, `probe_deep`) whose held-out outputs join every fusion as further streams. With
    `crossfit`, every stream is calibrated by a temperature and `dominant: auto` starts the head as the mean of
    all streams (a named `dominant` starts it as that stream alone). `fusion_margin` (a UA gain, e.g. 0.05)
    lets the head leave its start when the cross-validation over those groups gains that much; null keeps the
    start (`evaluation.stacking`). `stream_held_out` says where a stream network's held-out outputs come from:
    `crossfit` trains a copy of it per speaker group, `validation` takes the network chosen on the validation
    speakers and its outputs for them, at no extra training (the head then only calibrates its start, so
    `fusion_margin` needs `crossfit`; a refitted network keeps the temperature of the one it was chosen as).

    `classic` adds the `classic` baseline (openSMILE functionals + logistic regression, see `ClassicConfig`;
    `classic: null` drops it). With two or more of these baselines, `probe_fusion` is added: the mean of
    their class probabilities, the obvious fusion a fused searched model must beat.
    """

    variants: list[str] = field(default_factory=lambda: ["spectrogram", "deep", "ism"])
    ablations: bool = False
    probes: bool = True
    seeds: Optional[list[int]] = None  # None: the experiment's `seed` only
    jobs: int = 1
    dominant: Literal["auto", "deep", "spectrogram"] = "auto"
    ism_gate: Literal["zero", "paper"] = "zero"
    search: Literal["per_fold", "once"] = "per_fold"
    fusion_dropout: float = 0.0
    main: str = "ism"
    classic: Optional[ClassicConfig] = field(default_factory=ClassicConfig)
    crossfit_folds: int = 4
    supplementary: list[Literal["classic", "probe_spectrogram", "probe_deep"]] = field(default_factory=list)
    fusion_margin: Optional[float] = None
    stream_held_out: Literal["crossfit", "validation"] = "crossfit"
    # several corpora: per corpus name, a within-corpus run folder whose results.json is the in-domain reference
    in_domain: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"variants: unknown {unknown} (known: {', '.join(VARIANTS)})")
        if not 0 <= self.fusion_dropout < 1:
            raise ValueError(f"fusion_dropout must be in [0, 1), got {self.fusion_dropout}")
        if self.jobs < 1:
            raise ValueError(f"jobs must be at least 1, got {self.jobs}")
        if self.fusion_margin is not None and not 0 <= self.fusion_margin <= 1:
            raise ValueError(f"fusion_margin must be between 0 and 1 (a UA gain), got {self.fusion_margin}")
        if self.fusion_margin is not None and self.stream_held_out != "crossfit":
            raise ValueError("fusion_margin needs stream_held_out: crossfit (the head's cross-validation needs every "
                             "stream's held-out outputs for the same speakers)")
        if len(set(self.supplementary)) != len(self.supplementary):
            raise ValueError(f"supplementary: each stream once, got {self.supplementary}")
        if self.crossfit_folds < 2:
            raise ValueError(f"crossfit_folds must be at least 2, got {self.crossfit_folds}")
        if CLASSIC in self.supplementary and self.classic is None:
            raise ValueError("supplementary: 'classic' needs run.classic settings (it is null)")
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"seeds: needs at least one seed and no repeats, got {self.seeds}")
        for seed in self.seeds or ():
            check_seed(seed, "seeds")
        if self.ablations:
            self.variants = list(dict.fromkeys([*self.variants, *FUSION_VARIANTS]))
        if self.probes:
            used = {s for v in self.variants for s in ((v,) if v in SINGLE_STREAMS else SINGLE_STREAMS)
                    if v not in PROBE_VARIANTS}
            self.variants = list(dict.fromkeys([*self.variants, *(p for p, s in PROBE_VARIANTS.items() if s in used)]))
        if self.classic is not None:
            self.variants = list(dict.fromkeys([*self.variants, CLASSIC]))
        elif CLASSIC in self.variants:
            raise ValueError("variants: 'classic' needs run.classic settings (it is null)")
        if len(self.fused_baselines) >= 2:
            self.variants = list(dict.fromkeys([*self.variants, PROBE_FUSION]))
        if self.main not in self.variants:
            raise ValueError(f"main: {self.main!r} is not among the variants {self.variants}")
        if self.main in BASELINES:
            raise ValueError(f"main: {self.main!r} is a baseline; `predict` needs a trained network")

    @property
    def fused_baselines(self) -> list[str]:
        """The baselines `probe_fusion` averages: every probe in the run and `classic`."""
        return [v for v in self.variants if v in PROBE_VARIANTS or v == CLASSIC]


@dataclass
class ExperimentConfig:
    """The whole experiment. `seed` is its one seed: weight initialisation, data order and the search's data
    split of every stage (search, trials, training) follow it; `search.seed` and `train.seed` are set from it."""

    corpus: Optional[CorpusConfig] = None
    corpora: Optional[list[CorpusConfig]] = None
    labels: Optional[SharedLabels] = None  # with `corpora`: the shared class set
    name: str = "experiment"
    seed: int = 0
    output_dir: str = "emotionnas_runs"
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # search / train stages (nni_emotionnas.cli.search_train); None = the packaged default file
    spectrogram_space: Optional[str] = None
    deep_space: Optional[str] = None
    strategy: Optional[str] = None
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)
    base_dir: Path = field(default_factory=Path.cwd)

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")
        self.search = dataclasses.replace(self.search, seed=self.seed)
        self.train = dataclasses.replace(self.train, seed=self.seed)
        check_corpora(self)
        if self.run.stream_held_out != "crossfit" and self.train.fusion_init != "crossfit":
            raise ValueError("run.stream_held_out: validation needs train.fusion_init: crossfit (the other fusions "
                             "read no held-out outputs)")

    @property
    def corpus_blocks(self) -> list[CorpusConfig]:
        """Every corpus the experiment reads: `corpora`, or the one `corpus`."""
        return list(self.corpora) if self.corpora is not None else [self.corpus]

    @property
    def multi_corpus(self) -> bool:
        return self.corpora is not None

    def resolve(self, path: Optional[str]) -> Optional[Path]:
        """Paths in an experiment file are relative to the file itself."""
        if path is None:
            return None
        p = Path(os.path.expanduser(path))
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def cache_dir(self) -> Path:
        chosen = self.resolve(self.features.cache_dir)
        return chosen or Path(os.environ.get("EMOTIONNAS_CACHE", Path.home() / ".cache" / "nni_emotionnas"))


def check_corpora(experiment: ExperimentConfig) -> None:
    """`corpus` or `corpora` (named, distinct), and protocol/run keys that name corpora name known ones."""
    if (experiment.corpus is None) == (experiment.corpora is None):
        raise ValueError("give either corpus (one corpus) or corpora (a list of named corpora)")
    protocol, names = experiment.protocol, [c.name for c in experiment.corpus_blocks]
    if experiment.corpora is not None:
        if not experiment.corpora:
            raise ValueError("corpora: an empty list reads nothing")
        unnamed = [str(i) for i, name in enumerate(names) if name is None]
        if unnamed:
            raise ValueError(f"corpora[{unnamed[0]}].name: required (it prefixes the corpus' speakers)")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"corpora: name {repeated[0]!r} is used twice")
    elif experiment.labels is not None:
        raise ValueError("labels: the shared class set goes with corpora; use corpus.labels for one corpus")
    named = [*(protocol.train or []), *([protocol.test] if protocol.test else []), *experiment.run.in_domain]
    unknown = [n for n in named if n not in names]
    if unknown:
        raise ValueError(f"protocol/run.in_domain: unknown corpus {unknown[0]!r} (corpora: "
                         f"{', '.join(str(n) for n in names)})")
    if protocol.kind in ACROSS_CORPORA and len(names) < 2:
        raise ValueError(f"protocol.kind {protocol.kind}: needs at least two corpora")
    if protocol.test is not None and protocol.test in (protocol.train or []):
        raise ValueError(f"protocol: corpus {protocol.test!r} cannot both train and test")
    if protocol.kind == "leave_one_corpus_out" and experiment.run.search == "once":
        raise ValueError("run.search: once would search on the first fold's corpora, which later folds test; "
                         "use per_fold with leave_one_corpus_out")


def load_experiment(path: Path) -> ExperimentConfig:
    path = Path(path)
    data = load_yaml(path)
    for section in ("search", "train"):
        if isinstance(data.get(section), dict) and "seed" in data[section]:
            raise ConfigError(f"{path.name}.{section}.seed: set the experiment's top-level `seed` instead (one "
                              "seed for every stage; `--seed` overrides it on the command line)")
    data.setdefault("base_dir", str(path.resolve().parent))
    data["base_dir"] = Path(data["base_dir"])
    return parse(ExperimentConfig, data, path.name)


def with_seed(experiment: ExperimentConfig, seed: Optional[int]) -> ExperimentConfig:
    """The experiment with `--seed` applied (None keeps the file's seed)."""
    if seed is None:
        return experiment
    try:
        check_seed(seed, "--seed")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return dataclasses.replace(experiment, seed=seed)


def with_jobs(experiment: ExperimentConfig, jobs: Optional[int]) -> ExperimentConfig:
    """The experiment with `--jobs` applied (None keeps the file's `run.jobs`; no result depends on it)."""
    if jobs is None:
        return experiment
    return dataclasses.replace(experiment, run=dataclasses.replace(experiment.run, jobs=jobs))


def experiment_from_dict(data: dict[str, Any], base_dir: Path) -> ExperimentConfig:
    return parse(ExperimentConfig, {**data, "base_dir": Path(base_dir)}, "experiment")
