"""Cross-validated results: per-variant mean ± std tables (Markdown, CSV, JSON) and confusion matrices."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from nni_emotionnas.config.experiment import BASELINES, FUSION_VARIANTS, PROBE_FUSION, ExperimentConfig, RunConfig
from nni_emotionnas.config.parse import clip
from nni_emotionnas.errors import RunFolderError
from nni_emotionnas.evaluation.run_folder import RunFolder
from nni_emotionnas.features.store import atomic_write_bytes

if TYPE_CHECKING:
    from nni_emotionnas.features.prepared import PreparedCorpus

_logger = logging.getLogger(__name__)

STREAM_VARIANTS = ("spectrogram", "deep", "ism")
# Paper (IEMOCAP improvised, leave-one-session-out) figures, for orientation beside ours.
PAPER = {"spectrogram": (57.3, 63.2), "deep": (66.2, 70.3), "ism": (69.1, 72.1)}


@dataclass
class FoldResult:
    """One variant trained and tested on one fold (checkpoint with the best validation UA)."""

    fold: str
    variant: str
    val_ua: Optional[float]  # None for baselines, which learn from the validation speakers too
    val_wa: Optional[float]
    test_ua: float
    test_wa: float
    best_epoch: int
    params: int
    confusion: list[list[int]]
    test_uids: list[str]
    test_true: list[int]
    test_pred: list[int]
    test_probs: list[list[float]]
    seed: int = 0
    baseline: bool = False  # a probe: a reference point, not a searched model
    dominant: Optional[str] = None  # fusions: the stream kept intact on this fold and seed
    best_step: Optional[str] = None  # fusions: `start`, `head:<epoch>`, `finetune:<epoch>` or `penalty <p>`
    left_start: Optional[bool] = None  # fusions: whether the kept head differs from its start
    head_cv_ua: Optional[float] = None  # `crossfit` fusions: the chosen head's UA over the held-out groups
    refit_epochs: Optional[int] = None  # `train.refit`: epochs trained on training + validation speakers

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, lambda handle: handle.write(json.dumps(asdict(self), indent=1).encode()))

    @classmethod
    def load(cls, path: Path) -> FoldResult:
        """A saved result; a damaged one (cut short by a crash or a full disk, edited) is a `RunFolderError`."""
        try:
            return cls(**json.loads(Path(path).read_bytes()))
        except (ValueError, TypeError) as exc:  # bad bytes, bad JSON, not this record's keys
            raise RunFolderError(f"{path}: damaged, not a saved result ({clip(str(exc), 120)})") from exc

    @classmethod
    def load_finished(cls, path: Path) -> Optional[FoldResult]:
        """The result a resumed run keeps, None when the step must run (again): no file, or a damaged one,
        which a warning names before the step is redone."""
        if not Path(path).is_file():
            return None
        try:
            return cls.load(path)
        except RunFolderError as exc:
            _logger.warning("%s; training this variant again", exc)
            return None


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def deltas(rows: Sequence[FoldResult], results: Sequence[FoldResult], reference: str) -> Optional[np.ndarray]:
    """Test UA (points) of each fusion row minus a reference's on the same fold and seed: `dominant` (the
    stream it kept intact), `better` (the better of the two streams) or a variant's name (`probe_fusion`).
    None unless every row has its reference."""
    ua = {(r.fold, r.seed, r.variant): r.test_ua for r in results}

    def of(row: FoldResult) -> Optional[float]:
        if reference == "better":
            streams = [ua.get((row.fold, row.seed, s)) for s in ("spectrogram", "deep")]
            return None if None in streams else max(streams)
        return ua.get((row.fold, row.seed, row.dominant if reference == "dominant" else reference))

    values = [of(r) for r in rows]
    if not rows or None in values:
        return None
    return (np.array([r.test_ua for r in rows]) - np.array(values)) * 100


DELTAS = {"delta_ua": "dominant", "delta_better": "better", "delta_probe_fusion": "probe_fusion"}


def summarize(results: Sequence[FoldResult], classes: Sequence[str]) -> dict[str, dict]:
    """Per variant: test UA/WA per fold and seed, mean and std over both (percent), pooled confusion,
    per-class recall and UA/WA of all test predictions pooled (the figure SER papers usually quote for
    leave-one-speaker-out); fusions also their dominant stream per row and ΔUA against it."""
    summary: dict[str, dict] = {}
    for variant in dict.fromkeys(r.variant for r in results):
        rows = [r for r in results if r.variant == variant]
        ua = np.array([r.test_ua for r in rows]) * 100
        wa = np.array([r.test_wa for r in rows]) * 100
        confusion = np.sum([np.array(r.confusion) for r in rows], axis=0)
        support = confusion.sum(axis=1)
        recall = np.divide(np.diag(confusion), support, out=np.full(len(classes), np.nan), where=support > 0)
        fusion = variant in FUSION_VARIANTS
        delta = {key: deltas(rows, results, ref) if fusion else None for key, ref in DELTAS.items()}
        summary[variant] = {
            "baseline": rows[0].baseline,
            "folds": [r.fold for r in rows],
            "seeds": [r.seed for r in rows],
            "dominant": [r.dominant for r in rows],
            "best_step": [r.best_step for r in rows],
            **{f"{key}{part}": None if d is None else value(d) for key, d in delta.items() for part, value in (
                ("", lambda d: d.round(2).tolist()), ("_mean", lambda d: float(d.mean())),
                ("_std", lambda d: float(d.std())))},
            "left_start": [r.left_start for r in rows],
            "test_ua": ua.round(2).tolist(),
            "test_wa": wa.round(2).tolist(),
            "ua_mean": float(ua.mean()),
            "ua_std": float(ua.std()),
            "wa_mean": float(wa.mean()),
            "wa_std": float(wa.std()),
            "ua_pooled": float(np.nanmean(recall) * 100),
            "wa_pooled": float(np.trace(confusion) / confusion.sum() * 100),
            "val_ua_mean": None if rows[0].val_ua is None else float(np.mean([r.val_ua for r in rows]) * 100),
            "params": rows[0].params,
            "recall": {c: (None if np.isnan(v) else round(float(v) * 100, 2)) for c, v in zip(classes, recall)},
            "confusion": confusion.tolist(),
        }
    return summary


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _header(cells: Sequence[str]) -> list[str]:
    return [_row(cells), _row(["---"] * len(cells))]


def markdown_tables(summary: dict[str, dict], classes: Sequence[str], notes: Sequence[str] = ()) -> str:
    """Tables shaped like the paper's Table 4 (streams) and Table 5 (fusions) with the probe baselines and,
    per fusion, ΔUA against its dominant stream, the better stream of each fold and `probe_fusion`, and on
    how many folds its head left its start; then per-fold detail."""

    def table(title: str, variants: Sequence[str]) -> list[str]:
        present = [v for v in variants if v in summary]
        if not present:
            return []
        columns = [
            "model", "UA %", "WA %", "pooled UA / WA %", "ΔUA vs dominant stream", "ΔUA vs better stream",
            "ΔUA vs probe_fusion", "left start", "params", "paper UA / WA (IEMOCAP)",
        ]
        lines = [f"### {title}", "", *_header(columns)]
        for v in present:
            s = summary[v]
            paper = " / ".join(f"{x:.1f}" for x in PAPER[v]) if v in PAPER else ""
            ua, wa = f"{s['ua_mean']:.2f} ± {s['ua_std']:.2f}", f"{s['wa_mean']:.2f} ± {s['wa_std']:.2f}"
            delta = ["" if s[f"{k}_mean"] is None else f"{s[f'{k}_mean']:+.2f} ± {s[f'{k}_std']:.2f}" for k in DELTAS]
            pooled = f"{s['ua_pooled']:.2f} / {s['wa_pooled']:.2f}"
            name = f"{v} (baseline)" if s["baseline"] else v
            moved = [m for m in s["left_start"] if m is not None]
            left = f"{sum(moved)}/{len(moved)}" if moved else ""
            lines.append(_row([name, ua, wa, pooled, *delta, left, f"{s['params']:,}", paper]))
        return lines + [""]

    first = next(iter(summary.values()))
    several_seeds = len(set(first["seeds"])) > 1
    columns = [f"{f} s{seed}" if several_seeds else f for f, seed in zip(first["folds"], first["seeds"])]
    spread = "folds and seeds" if several_seeds else "folds"
    out = [f"## Results (test split of every fold, mean ± std over {spread})", "", *notes, ""]
    out += table("Streams and fusion (cf. paper Table 4), baselines", [*STREAM_VARIANTS, *BASELINES])
    if any(v in summary for v in FUSION_VARIANTS[1:]):
        out += table("Fusion methods (cf. paper Table 5)", FUSION_VARIANTS)
    known = (*STREAM_VARIANTS, *FUSION_VARIANTS, *BASELINES)
    out += table("Other models", [v for v in summary if v not in known])
    fusions = [v for v in FUSION_VARIANTS if v in summary and any(summary[v]["dominant"])]
    if fusions:
        out += ["### Dominant stream and kept weights per fold (fusions)", "", *_header(["model", *columns])]
        for v in fusions:
            cells = zip(summary[v]["dominant"], summary[v]["best_step"])
            out.append(_row([v, *(f"{d} ({step})" if step else str(d) for d, step in cells)]))
        out.append("")
    out += ["### Per fold (test UA / WA %)", "", *_header(["model", *columns])]
    for v, s in summary.items():
        out.append(_row([v, *(f"{u:.1f} / {w:.1f}" for u, w in zip(s["test_ua"], s["test_wa"]))]))
    out += ["", f"### Per-class recall % (pooled over {spread})", "", *_header(["model", *classes])]
    for v, s in summary.items():
        out.append(_row([v, *("-" if s["recall"][c] is None else f"{s['recall'][c]:.1f}" for c in classes)]))
    return "\n".join(out) + "\n"


def csv_table(summary: dict[str, dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([
        "model", "baseline", "ua_mean", "ua_std", "wa_mean", "wa_std", "ua_pooled", "wa_pooled",
        *(f"{k}{part}" for k in DELTAS for part in ("_mean", "_std")), "params", "folds", "seeds", "test_ua", "test_wa",
    ])
    for v, s in summary.items():
        keys = [f"{k}{part}" for k in DELTAS for part in ("_mean", "_std")]
        delta = ["" if s[key] is None else f"{s[key]:.2f}" for key in keys]
        writer.writerow([
            v, int(s["baseline"]), f"{s['ua_mean']:.2f}", f"{s['ua_std']:.2f}", f"{s['wa_mean']:.2f}",
            f"{s['wa_std']:.2f}", f"{s['ua_pooled']:.2f}", f"{s['wa_pooled']:.2f}", *delta, s["params"],
            ";".join(s["folds"]), ";".join(map(str, s["seeds"])),
            ";".join(map(str, s["test_ua"])), ";".join(map(str, s["test_wa"])),
        ])
    return buffer.getvalue()


def write_report(
    results: Sequence[FoldResult], classes: Sequence[str], run_dir: Path, notes: Sequence[str] = (),
    extra: Optional[dict] = None, sections: str = "",
) -> dict[str, Path]:
    """Writes results.md/.csv/.json and one confusion-matrix PNG per variant; returns their paths.
    `sections`: Markdown appended to results.md (the per-corpus tables of a several-corpora run)."""
    from nni_emotionnas.evaluation.plots import plot_confusion

    summary = summarize(results, classes)
    paths = RunFolder(run_dir).report_paths()
    write_text(paths["markdown"], markdown_tables(summary, classes, notes) + sections)
    write_text(paths["csv"], csv_table(summary))
    payload = {"classes": list(classes), "notes": list(notes), "models": summary, **(extra or {})}
    write_text(paths["json"], json.dumps(payload, indent=1))
    for variant, s in summary.items():
        png = paths[f"confusion_{variant}"] = run_dir / f"confusion_{variant}.png"
        plot_confusion(np.array(s["confusion"]), list(classes), png, title=f"{variant} (all folds)")
    return paths


def describe_streams(corpus: PreparedCorpus, experiment: ExperimentConfig) -> list[str]:
    """Lines for the report saying which features and models each stream used."""
    deep: dict[str, Any] = dict(corpus.deep_backend or {})
    backend = deep.pop("backend", "?")
    options = ", ".join(f"{k}={v}" for k, v in deep.items()) or "defaults"
    spec = experiment.features.spectrogram
    names = " + ".join(c.name or c.reader for c in experiment.corpus_blocks)  # `emodb`, or `emodb + urdu`
    return [
        f"- corpus: {names}, {len(corpus.utterances)} utterances, classes {corpus.classes}, "
        f"{len(corpus.folds)} folds ({experiment.protocol.kind})",
        f"- spectrogram stream: {spec.duration:g} s, {spec.window_ms:g} ms {spec.window} window, "
        f"{spec.overlap_ms:g} ms overlap, {spec.scale} scale, pooled to {spec.size[0]}x{spec.size[1]}; "
        f"model {experiment.model.spectrogram}",
        f"- deep stream: backend `{backend}` ({options}), {experiment.features.sequence.target_frames} frames; "
        f"model {experiment.model.deep}",
        f"- search: {experiment.run.search}, {experiment.search.epochs} epochs; "
        f"training: {experiment.train.epochs} epochs, best validation UA checkpoint tested",
        f"- standardisation: {STANDARDIZATION[experiment.features.standardize]}",
        *describe_fusion(experiment),
        *describe_baselines(experiment.run),
        f"- models: {', '.join(experiment.run.variants)} (`run.variants` with what `ablations`, `probes` and "
        "`classic` add)",
    ] + ([f"- skipped audio: {len(corpus.skipped)} files (see results.json)"] if corpus.skipped else [])


STANDARDIZATION = {
    "train_speakers": "`train_speakers` (statistics of each fold's training speakers)",
    "speaker": "`speaker` (each speaker's own statistics, test speakers' from their unlabelled test utterances: "
    "transductive)",
    "none": "`none` (raw features; the linear baselines still standardise on the speakers they learn from)",
}


def describe_fusion(experiment: ExperimentConfig) -> list[str]:
    """A report line saying how the fusion heads learnt."""
    run = experiment.run
    if not any(v in FUSION_VARIANTS for v in run.variants):
        return []
    if experiment.train.fusion_init != "crossfit":
        return [f"- fusion: `{experiment.train.fusion_init}`, dominant stream `{run.dominant}`"]
    extra = f", plus {', '.join(run.supplementary)} as supplementary streams" if run.supplementary else ""
    start = "the mean of all streams" if run.dominant == "auto" else f"the `{run.dominant}` stream alone"
    moves = ("kept" if run.fusion_margin is None
             else f"left when the cross-validation over the groups gains {run.fusion_margin * 100:g} UA points")
    groups = f"{run.crossfit_folds} speaker groups of each fold's non-test speakers"
    source = (f"the streams ({groups})" if run.stream_held_out == "crossfit" else
              "the stream networks for their validation speakers" + (f", of the others over {groups}" if extra else ""))
    return [f"- fusion: heads learn from held-out outputs of {source}{extra}, each calibrated by a temperature; "
            f"start: {start}, {moves}"]


def describe_baselines(run: RunConfig) -> list[str]:
    """Report lines saying what the baseline rows are."""
    lines = []
    if run.classic is not None:
        c = run.classic
        lines.append(
            f"- classic (baseline): openSMILE {c.feature_set} functionals, logistic regression C={c.C:g}"
            + (", balanced class weights" if c.class_weight == "balanced" else "")
        )
    if PROBE_FUSION in run.variants:
        lines.append(f"- probe_fusion (baseline): mean of the class probabilities of {', '.join(run.fused_baselines)}")
    if any(v in BASELINES for v in run.variants):
        lines.append("- baselines learn from every speaker a fold does not test (training and validation speakers)")
    return lines
