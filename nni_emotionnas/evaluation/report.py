"""Cross-validated results: per-variant mean ± std tables (Markdown, CSV, JSON) and confusion matrices."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from nni_emotionnas.config.experiment import BASELINES, FUSION_VARIANTS
from nni_emotionnas.features.store import atomic_write_bytes

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
    best_step: Optional[str] = None  # fusions from streams: `start`, `head:<epoch>` or `finetune:<epoch>`
    refit_epochs: Optional[int] = None  # `train.refit`: epochs trained on training + validation speakers

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, lambda handle: handle.write(json.dumps(asdict(self), indent=1).encode()))

    @classmethod
    def load(cls, path: Path) -> FoldResult:
        return cls(**json.loads(Path(path).read_text()))


def write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda handle: handle.write(text.encode()))


def delta_to_dominant(rows: Sequence[FoldResult], results: Sequence[FoldResult]) -> Optional[np.ndarray]:
    """Test UA (points) of each fusion row minus its dominant stream's on the same fold and seed."""
    streams = {(r.fold, r.seed, r.variant): r.test_ua for r in results}
    keys = [(r.fold, r.seed, r.dominant) for r in rows]
    deltas = [r.test_ua - streams[key] for r, key in zip(rows, keys) if key in streams]
    return np.array(deltas) * 100 if deltas and len(deltas) == len(rows) else None


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
        delta = delta_to_dominant(rows, results) if variant in FUSION_VARIANTS else None
        summary[variant] = {
            "baseline": rows[0].baseline,
            "folds": [r.fold for r in rows],
            "seeds": [r.seed for r in rows],
            "dominant": [r.dominant for r in rows],
            "best_step": [r.best_step for r in rows],
            "delta_ua": None if delta is None else delta.round(2).tolist(),
            "delta_ua_mean": None if delta is None else float(delta.mean()),
            "delta_ua_std": None if delta is None else float(delta.std()),
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
    per fusion, ΔUA against its dominant stream; then per-fold detail."""

    def table(title: str, variants: Sequence[str]) -> list[str]:
        present = [v for v in variants if v in summary]
        if not present:
            return []
        columns = [
            "model", "UA %", "WA %", "pooled UA / WA %", "ΔUA vs dominant stream", "params", "paper UA / WA (IEMOCAP)"
        ]
        lines = [f"### {title}", "", *_header(columns)]
        for v in present:
            s = summary[v]
            paper = " / ".join(f"{x:.1f}" for x in PAPER[v]) if v in PAPER else ""
            ua, wa = f"{s['ua_mean']:.2f} ± {s['ua_std']:.2f}", f"{s['wa_mean']:.2f} ± {s['wa_std']:.2f}"
            delta = "" if s["delta_ua_mean"] is None else f"{s['delta_ua_mean']:+.2f} ± {s['delta_ua_std']:.2f}"
            pooled = f"{s['ua_pooled']:.2f} / {s['wa_pooled']:.2f}"
            name = f"{v} (baseline)" if s["baseline"] else v
            lines.append(_row([name, ua, wa, pooled, delta, f"{s['params']:,}", paper]))
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
        "model", "baseline", "ua_mean", "ua_std", "wa_mean", "wa_std", "ua_pooled", "wa_pooled", "delta_ua_mean",
        "delta_ua_std", "params", "folds", "seeds", "test_ua", "test_wa",
    ])
    for v, s in summary.items():
        delta = ["", ""] if s["delta_ua_mean"] is None else [f"{s['delta_ua_mean']:.2f}", f"{s['delta_ua_std']:.2f}"]
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
    paths = {"markdown": run_dir / "results.md", "csv": run_dir / "results.csv", "json": run_dir / "results.json"}
    write_text(paths["markdown"], markdown_tables(summary, classes, notes) + sections)
    write_text(paths["csv"], csv_table(summary))
    payload = {"classes": list(classes), "notes": list(notes), "models": summary, **(extra or {})}
    write_text(paths["json"], json.dumps(payload, indent=1))
    for variant, s in summary.items():
        paths[f"confusion_{variant}"] = run_dir / f"confusion_{variant}.png"
        png = paths[f"confusion_{variant}"]
        plot_confusion(np.array(s["confusion"]), list(classes), png, title=f"{variant} (all folds)")
    return paths
