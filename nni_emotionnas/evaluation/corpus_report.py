"""Results of a several-corpora run per target corpus: the usual tables restricted to each corpus' test
utterances, beside an in-domain reference (a within-corpus run of that corpus), so the transfer gap is one
subtraction."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from nni_emotionnas.config.experiment import ExperimentConfig
from nni_emotionnas.errors import ConfigError
from nni_emotionnas.evaluation.report import FoldResult, markdown_tables, summarize
from nni_emotionnas.features.prepared import PreparedCorpus
from nni_emotionnas.training.metrics import score


def restricted(result: FoldResult, keep: Sequence[bool], num_classes: int) -> Optional[FoldResult]:
    """`result` scored on the test utterances `keep` marks (None when it marks none)."""
    rows = [i for i, k in enumerate(keep) if k]
    if not rows:
        return None
    true = [result.test_true[i] for i in rows]
    pred = [result.test_pred[i] for i in rows]
    scores = score(true, pred, num_classes)
    return dataclasses.replace(
        result, test_ua=scores.ua, test_wa=scores.wa, confusion=scores.confusion,
        test_uids=[result.test_uids[i] for i in rows], test_true=true, test_pred=pred,
        test_probs=[result.test_probs[i] for i in rows],
    )


def by_target_corpus(
    results: Sequence[FoldResult], corpus_of: dict[str, str], classes: Sequence[str]
) -> dict[str, list[FoldResult]]:
    """Per corpus, every fold's result on that corpus' test utterances (folds testing none of it left out)."""
    corpora = list(dict.fromkeys(corpus_of.values()))
    grouped: dict[str, list[FoldResult]] = {c: [] for c in corpora}
    for result in results:
        owners = [corpus_of[uid] for uid in result.test_uids]
        for corpus in corpora:
            part = restricted(result, [o == corpus for o in owners], len(classes))
            if part is not None:
                grouped[corpus].append(part)
    return {c: rows for c, rows in grouped.items() if rows}


def in_domain_reference(run_dir: Path, classes: Sequence[str], key: str) -> Optional[dict[str, dict[str, Any]]]:
    """The `models` of a within-corpus run's results.json (`run.in_domain.<corpus>`), on the same classes;
    None while that run has not finished (the report says so)."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key}: cannot read {path} ({exc}); point it at a finished run folder") from exc
    if list(payload.get("classes", [])) != list(classes):
        raise ConfigError(f"{key}: {path} has classes {payload.get('classes')}, this run {list(classes)}; an "
                          "in-domain reference must be a run on the same classes")
    return payload["models"]


def in_domain_table(summary: dict[str, dict], reference: dict[str, dict], source: str) -> list[str]:
    """Per model in both runs: cross-corpus and in-domain UA / WA and the gap (cross minus in-domain)."""
    lines = [f"#### In-domain reference ({source})", "",
             "| model | cross-corpus UA / WA % | in-domain UA / WA % | gap UA / WA (points) |",
             "| --- | --- | --- | --- |"]
    for variant, s in summary.items():
        if variant not in reference:
            continue
        r = reference[variant]
        lines.append(f"| {variant} | {s['ua_mean']:.2f} / {s['wa_mean']:.2f} | {r['ua_mean']:.2f} / "
                     f"{r['wa_mean']:.2f} | {s['ua_mean'] - r['ua_mean']:+.2f} / {s['wa_mean'] - r['wa_mean']:+.2f} |")
    return lines + [""]


def corpus_sections(
    results: Sequence[FoldResult], corpus: PreparedCorpus, experiment: ExperimentConfig
) -> tuple[str, dict[str, Any]]:
    """Markdown (one section per target corpus) and the JSON for results.json's `corpora` key."""
    classes = corpus.classes
    corpus_of = {u.uid: u.corpus for u in corpus.utterances}
    counts = {c.name: dataclasses.asdict(c) for c in corpus.corpus_counts}
    out, payload = [], {}
    for target, rows in by_target_corpus(results, corpus_of, classes).items():
        summary = summarize(rows, classes)
        text = markdown_tables(summary, classes)
        out += [f"## Target corpus: {target}", "", *("#" + line if line.startswith("#") else line
                                                       for line in text.splitlines()), ""]
        reference = None
        if target in experiment.run.in_domain:
            source = str(experiment.resolve(experiment.run.in_domain[target]))
            reference = in_domain_reference(Path(source), classes, f"run.in_domain.{target}")
            out += (in_domain_table(summary, reference, source) if reference is not None else
                    [f"In-domain reference: {source} has no results.json yet (run that experiment first).", ""])
        payload[target] = {"counts": counts.get(target), "models": summary, "in_domain": reference}
    return "\n".join(out) + "\n", payload


def describe_corpora(corpus: PreparedCorpus, experiment: ExperimentConfig) -> list[str]:
    """Report lines: each corpus' utterances read and kept in the shared classes, what was dropped, and the
    protocol across them."""
    lines = [f"- shared classes: {', '.join(corpus.classes)}"]
    for c in corpus.corpus_counts:
        dropped = ", ".join(f"{label} {n}" for label, n in c.dropped.items())
        lines.append(f"- corpus {c.name}: {c.read} utterances read, {c.kept} kept"
                     + (f" (dropped outside the shared classes: {dropped})" if dropped else "")
                     + (f"; has no {', '.join(c.missing)}" if c.missing else ""))
    for fold in corpus.folds:
        sizes = {s: len(fold.split(s)) for s in ("train", "val", "test")}
        lines.append(f"- fold {fold.name}: {sizes['train']} training, {sizes['val']} validation "
                     f"(held-out speakers of the training corpora), {sizes['test']} test utterances")
    return lines
