"""Ranking and classification metrics (pure functions, one target item per case as in leave-one-out)."""
from __future__ import annotations

import math
from typing import Collection, Sequence

import numpy as np


def rank_of(ranked: Sequence[str], target: str) -> int | None:
    """0-based position of `target` in `ranked`, or None when it is absent."""
    for position, item in enumerate(ranked):
        if item == target:
            return position
    return None


def recall_at_k(ranked_lists: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Share of cases whose single target is in the top k (hit rate; equals recall with one relevant item)."""
    _check(ranked_lists, targets, k)
    if not targets:
        return 0.0
    hits = sum(1 for ranked, target in zip(ranked_lists, targets) if target in list(ranked)[:k])
    return hits / len(targets)


def ndcg_at_k(ranked_lists: Sequence[Sequence[str]], targets: Sequence[str], k: int) -> float:
    """Mean NDCG@k with one relevant item: 1/log2(rank+2) when it is in the top k, else 0 (ideal DCG is 1)."""
    _check(ranked_lists, targets, k)
    if not targets:
        return 0.0
    total = 0.0
    for ranked, target in zip(ranked_lists, targets):
        position = rank_of(list(ranked)[:k], target)
        if position is not None:
            total += 1.0 / math.log2(position + 2)
    return total / len(targets)


def ranking_report(ranked_lists: Sequence[Sequence[str]], targets: Sequence[str], ks=(5, 10)) -> dict[str, float]:
    out = {}
    for k in ks:
        out[f"recall@{k}"] = recall_at_k(ranked_lists, targets, k)
    for k in ks:
        out[f"ndcg@{k}"] = ndcg_at_k(ranked_lists, targets, k)
    return out


def auc(scores: Sequence[float], labels: Sequence[int | bool]) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative label")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    # average 1-based ranks over runs of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _check(ranked_lists, targets, k) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ranked_lists) != len(targets):
        raise ValueError(f"{len(ranked_lists)} ranked lists for {len(targets)} targets")


def coverage_at_k(ranked_lists: Sequence[Sequence[str]], catalogue_size: int, k: int = 10) -> float:
    """Share of the catalogue that appears in at least one top k."""
    if catalogue_size < 1:
        raise ValueError(f"catalogue_size must be >= 1, got {catalogue_size}")
    return len({item for ranked in ranked_lists for item in list(ranked)[:k]}) / catalogue_size


def popular_items(sequences: Sequence[Sequence[str]], share: float = 0.2) -> set[str]:
    """The `share` most frequent items of training sequences (ties broken by item id, so the set is stable)."""
    counts: dict[str, int] = {}
    for items in sequences:
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    ordered = sorted(counts, key=lambda i: (-counts[i], i))
    return set(ordered[: int(round(share * len(ordered)))])


def tail_recall_at_k(ranked_lists: Sequence[Sequence[str]], targets: Sequence[str], head: Collection[str],
                     k: int = 10) -> tuple[float, int]:
    """(Recall@k over the cases whose target is not in `head`, how many such cases)."""
    _check(ranked_lists, targets, k)
    tail = [(ranked, target) for ranked, target in zip(ranked_lists, targets) if target not in head]
    if not tail:
        return 0.0, 0
    return recall_at_k([r for r, _ in tail], [t for _, t in tail], k), len(tail)
