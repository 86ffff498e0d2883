"""What a run's results depend on in the corpus: every utterance (path, label, speaker, session, file
identity) and every fold's splits. A run folder keeps it, so a resumed run can tell that the corpus
changed under it instead of reporting results of the old one."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nni_emotionnas.corpora.folds import Fold
from nni_emotionnas.corpora.integrity import file_identity
from nni_emotionnas.corpora.records import Utterance


def utterance_record(u: Utterance) -> dict[str, Any]:
    size, digest = file_identity(Path(u.path))
    return {"uid": u.uid, "label": u.label, "speaker": u.speaker, "session": u.session, "size": size, "sha1": digest}


def corpus_fingerprint(utterances: Sequence[Utterance], folds: Sequence[Fold]) -> dict[str, Any]:
    """JSON-ready: utterances keyed by resolved path; per fold, each split's speakers and a digest of its uids;
    utterances per corpus."""
    records = {str(Path(u.path).resolve()): utterance_record(u) for u in utterances}
    fold_records = {}
    for fold in folds:
        fold_records[fold.name] = {}
        for split in ("train", "val", "test"):
            indices = fold.split(split)
            uids = "\n".join(utterances[i].uid for i in indices)
            fold_records[fold.name][split] = {
                "speakers": sorted({utterances[i].speaker for i in indices}),
                "size": len(indices),
                "digest": hashlib.sha1(uids.encode()).hexdigest(),
            }
    corpora = dict(Counter(u.corpus for u in utterances))
    return {"utterances": records, "folds": fold_records, "corpora": corpora}


def _examples(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One phrase per kind of change between two fingerprints (empty when they are equal)."""
    changes = []
    old_corpora, new_corpora = old.get("corpora"), new.get("corpora", {})
    if old_corpora is not None and set(old_corpora) != set(new_corpora):
        changes.append(f"corpora {sorted(old_corpora)} are now {sorted(new_corpora)}")
    before, after = old.get("utterances", {}), new.get("utterances", {})
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    if added:
        changes.append(f"{len(added)} utterance(s) added ({_examples(added)})")
    if removed:
        changes.append(f"{len(removed)} utterance(s) removed ({_examples(removed)})")
    common = sorted(set(before) & set(after))
    for name in ("label", "speaker", "session"):
        differing = [f"{p}: {before[p][name]} -> {after[p][name]}" for p in common if before[p][name] != after[p][name]]
        if differing:
            changes.append(f"{len(differing)} {name}(s) changed ({_examples(differing)})")
    # run folders written before content digests recorded mtime_ns: those compare by size only
    modified = [p for p in common if any(before[p].get(k, after[p][k]) != after[p][k] for k in ("size", "sha1"))]
    if modified:
        changes.append(f"{len(modified)} audio file(s) modified since ({_examples(modified)})")
    old_folds, new_folds = old.get("folds", {}), new.get("folds", {})
    if set(old_folds) != set(new_folds):
        changes.append(f"folds {sorted(old_folds)} are now {sorted(new_folds)}")
    else:
        moved = [name for name in new_folds if new_folds[name] != old_folds[name]]
        if moved:
            changes.append(f"the splits of fold(s) {_examples(moved)} changed")
    return changes
