"""Action prediction on graded feedback: the split, the targets, the models' P(action), and how well a value
function orders what users liked above what they disliked. Pure functions over ratings; no files.

Targets are defined on the raw rating whatever the action mapping: `like_or_better` (rating >= 4) and
`dislike` (rating <= 2). A model that predicts action tokens scores a target by
`P(target) = sum_a P(a | history, item) * P(target | a)`, with `P(target | a)` the share of the training
ratings mapped to `a` that meet the target (0 or 1 under the default mapping, where each action is a rating
range).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from catalogue.datasets import Rating

TARGETS: dict[str, Callable[[int], bool]] = {
    "like_or_better": lambda rating: rating >= 4,
    "dislike": lambda rating: rating <= 2,
}


@dataclass
class GradedSplit:
    """Per-user chronological split: each user's last `test_share` of events are test; of the earlier ones,
    the last `validation_share` are validation (early stopping) and the rest fit the models. A test event is
    scored with that user's whole true past (fit, validation and earlier test events, with their actions)."""
    fit: dict[str, list[Rating]]
    validation: dict[str, list[Rating]]
    test: dict[str, list[Rating]]

    def past(self, user: str) -> list[Rating]:
        """Everything before the user's first test event."""
        return self.fit.get(user, []) + self.validation.get(user, [])

    def train_ratings(self) -> list[Rating]:
        return [r for rs in self.fit.values() for r in rs]


def chronological_split(ratings: Mapping[str, Sequence[Rating]], test_share: float = 0.2,
                        validation_share: float = 0.1) -> GradedSplit:
    if not 0 < test_share < 1 or not 0 <= validation_share < 1:
        raise ValueError(f"shares must be in (0, 1): test {test_share}, validation {validation_share}")
    fit, validation, test = {}, {}, {}
    for user, rs in ratings.items():
        rs = list(rs)
        if len(rs) < 3:
            raise ValueError(f"user {user} has {len(rs)} ratings; the split needs at least 3")
        n_test = max(1, round(len(rs) * test_share))
        past = rs[:-n_test]
        n_val = max(1, round(len(past) * validation_share)) if validation_share else 0
        fit[user], validation[user], test[user] = past[: len(past) - n_val], past[len(past) - n_val :], rs[-n_test:]
    return GradedSplit(fit, validation, test)


def labels(ratings: Sequence[Rating], target: str) -> np.ndarray:
    test = TARGETS[target]
    return np.array([test(r.rating) for r in ratings], dtype=bool)


def target_given_action(train: Sequence[Rating], actions: Sequence[str]) -> dict[str, np.ndarray]:
    """For each target, P(target | action) over the training ratings, in `actions` order ([A])."""
    out = {}
    for target, test in TARGETS.items():
        hits, totals = np.zeros(len(actions)), np.zeros(len(actions))
        index = {a: k for k, a in enumerate(actions)}
        for r in train:
            k = index[r.action]
            totals[k] += 1
            hits[k] += test(r.rating)
        out[target] = np.divide(hits, totals, out=np.zeros(len(actions)), where=totals > 0)
    return out


def target_probs(action_probs: np.ndarray, given_action: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """[N, A] P(action) -> {target: [N] P(target)}."""
    return {target: action_probs @ weights for target, weights in given_action.items()}


def item_prior(train: Sequence[Rating], events: Sequence[Rating], smoothing: float = 5.0) -> dict[str, np.ndarray]:
    """What the item alone says: each item's smoothed share of training ratings meeting each target."""
    out = {}
    for target, test in TARGETS.items():
        hits: dict[str, float] = {}
        counts: dict[str, int] = {}
        for r in train:
            hits[r.item] = hits.get(r.item, 0.0) + test(r.rating)
            counts[r.item] = counts.get(r.item, 0) + 1
        base = sum(hits.values()) / max(sum(counts.values()), 1)
        out[target] = np.array([(hits.get(e.item, 0.0) + smoothing * base) / (counts.get(e.item, 0) + smoothing)
                                for e in events])
    return out


def predicted_action_probs(model, tokenizer, events: Sequence[tuple[str, str]], window_events: int,
                           first: int = 0, chunk_share: float = 0.5) -> np.ndarray:
    """Teacher-forced P(action | history, item) for events[first:] of one user: [n, n_actions].

    The action distribution is read at each item's last SID token. Events are scored in chunks of
    `chunk_share` of a window, each after the rest of a window of true past, so every stream stays within the
    window the model was trained on (a smaller share: more past for each event, more forward passes).
    """
    vocab = tokenizer.vocab
    group = tokenizer.group
    out = []
    actions = vocab.action_range
    step = max(1, int(window_events * chunk_share))
    for start in range(first, len(events), step):
        context = events[max(0, start - (window_events - step)) : start]
        chunk = events[start : start + step]
        tokens = tokenizer.encode(list(context) + list(chunk))
        with torch.no_grad():
            logits = model(torch.tensor([tokens]))[0]
        head = 1 + len(context) * group
        positions = [head + k * group + group - 2 for k in range(len(chunk))]
        probs = torch.softmax(logits[positions, actions.start : actions.stop].float(), dim=-1)
        out.append(probs.numpy())
    return np.concatenate(out) if out else np.zeros((0, len(vocab.actions)))


def exponential_gain(rating: float) -> float:
    """NDCG's gain of a rating: 2^rating - 1 (Järvelin and Kekäläinen's graded relevance, as in most
    rating-based NDCG)."""
    return 2.0 ** rating - 1.0


def ndcg(scores: Sequence[float], ratings: Sequence[float]) -> float:
    """NDCG over one user's whole list ordered by `scores` (descending; ties broken by position), gain
    2^rating - 1, discount 1/log2(rank + 2)."""
    gains = np.array([exponential_gain(r) for r in ratings])
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    discounts = 1.0 / np.log2(np.arange(len(gains)) + 2)
    ideal = float(np.sort(gains)[::-1] @ discounts)
    return float(gains[order] @ discounts) / ideal if ideal > 0 else 0.0


def random_ndcg(ratings: Sequence[float], rng: np.random.Generator, draws: int = 50) -> float:
    """The expected NDCG of a random order (a mean over `draws` shuffles)."""
    return float(np.mean([ndcg(rng.random(len(ratings)), ratings) for _ in range(draws)]))


def mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan
