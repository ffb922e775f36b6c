"""The pointwise ranker a team migrating to a generative model would compare with: gradient-boosted trees
(LightGBM) on hand-built features, one binary model per target, trained on the same events.

Why trees and not a DLRM: with 943 users and ~70k training ratings, learned user embeddings are data-starved,
while target-encoded statistics (a user's mean rating so far, an item's mean rating, the user's mean in the
item's genres, an item-kNN score over the user's past) carry most of what is knowable, and boosted trees are
the standard strong learner on such tabular features.

Every feature of an event is computed from what was known before it: the user's earlier events (with their
true ratings) and the items' statistics over the training ratings, leaving a training event's own rating
out of its item's statistics (so the trees never see their target through a feature).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import lightgbm
import numpy as np

from catalogue.datasets import MOVIELENS_GENRES, Rating
from trainer.actions import TARGETS, GradedSplit

FEATURES = (
    "past_count", "past_mean", "past_like_share", "past_dislike_share", "recent_mean", "past_residual",
    "genre_mean", "knn_score", "knn_weight", "gap_log_seconds", "item_count", "item_mean", "item_like_share",
    "item_dislike_share", "item_year", "age", "gender_f", "occupation",
    *(f"genre_{g}" for g in MOVIELENS_GENRES if g != "unknown"),
)
CATEGORICAL = ("occupation",)


@dataclass
class PointwiseConfig:
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_rounds: int = 3000
    early_stopping_rounds: int = 100
    time_budget_s: float = 1800.0
    smoothing: float = 5.0  # prior weight of the smoothed means
    recent: int = 10  # events in recent_mean
    knn_neighbours: int = 30  # past items with the largest similarity that vote in knn_score
    threads: int = 2
    seed: int = 0


@dataclass
class PointwiseModel:
    boosters: dict  # target -> lightgbm.Booster
    train_seconds: float
    rounds: dict[str, int] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)


class FeatureBuilder:
    """Features of every event of every user, in the split's order: rows for fit, validation and test."""
    def __init__(self, split: GradedSplit, items: Sequence[dict], users: Mapping[str, dict],
                 config: PointwiseConfig):
        self.config = config
        self.split = split
        train = split.train_ratings()
        ids = sorted({r.item for rs in (split.fit, split.validation, split.test) for u in rs.values() for r in u}
                     | {str(i["item_id"]) for i in items}, key=int)
        self.row = {item: k for k, item in enumerate(ids)}
        n = len(ids)
        self.count = np.zeros(n)
        self.total = np.zeros(n)
        self.likes = np.zeros(n)
        self.dislikes = np.zeros(n)
        for r in train:
            k = self.row[r.item]
            self.count[k] += 1
            self.total[k] += r.rating
            self.likes[k] += TARGETS["like_or_better"](r.rating)
            self.dislikes[k] += TARGETS["dislike"](r.rating)
        self.global_mean = self.total.sum() / max(self.count.sum(), 1)
        self.global_like = self.likes.sum() / max(self.count.sum(), 1)
        self.global_dislike = self.dislikes.sum() / max(self.count.sum(), 1)
        meta = {str(i["item_id"]): i for i in items}
        self.genres = np.zeros((n, len(MOVIELENS_GENRES) - 1), dtype=np.float32)
        self.year = np.full(n, np.nan)
        for item, k in self.row.items():
            m = meta.get(item, {})
            for g in m.get("categories") or ():
                if g in MOVIELENS_GENRES[1:]:
                    self.genres[k, MOVIELENS_GENRES.index(g) - 1] = 1
            if m.get("year"):
                self.year[k] = m["year"]
        self.users = users
        self.occupations = {o: k for k, o in enumerate(sorted({u.get("occupation", "") for u in users.values()}))}
        self._item_similarity(train, n)

    def _item_similarity(self, train: Sequence[Rating], n: int) -> None:
        """Adjusted cosine (ratings centred on each user's mean) between items over the training ratings, kept as
        dot products and squared norms so that each user's own column can be left out (`similarity`)."""
        users = sorted({r.user for r in train}, key=int)
        self.column = {u: k for k, u in enumerate(users)}
        sums: dict[str, list[float]] = {}
        for r in train:
            sums.setdefault(r.user, []).append(r.rating)
        mean = {u: float(np.mean(v)) for u, v in sums.items()}
        self.centred = np.zeros((n, len(users)), dtype=np.float64)
        for r in train:
            self.centred[self.row[r.item], self.column[r.user]] = r.rating - mean[r.user]
        self.dots = self.centred @ self.centred.T
        self.squares = np.einsum("ij,ij->i", self.centred, self.centred)

    def similarity(self, user: str, item_row: int, past_rows: Sequence[int]) -> np.ndarray:
        """Similarity of one item to the user's past items without the user's own ratings: otherwise a training
        event's rating would reach its own feature through the similarity."""
        own = self.centred[:, self.column[user]] if user in self.column else np.zeros(len(self.squares))
        past = np.asarray(past_rows)
        dots = self.dots[item_row, past] - own[item_row] * own[past]
        norms = np.sqrt(np.maximum(self.squares[item_row] - own[item_row] ** 2, 0)
                        * np.maximum(self.squares[past] - own[past] ** 2, 0))
        sims = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 1e-12)
        sims[past == item_row] = 0.0
        return sims

    def _item_stats(self, k: int, own: Rating | None) -> tuple[float, float, float, float]:
        """(count, smoothed mean, like share, dislike share) of item row k, without `own` (a training rating)."""
        count, total, likes, dislikes = self.count[k], self.total[k], self.likes[k], self.dislikes[k]
        if own is not None:
            count, total = count - 1, total - own.rating
            likes -= TARGETS["like_or_better"](own.rating)
            dislikes -= TARGETS["dislike"](own.rating)
        s = self.config.smoothing
        return (count, (total + s * self.global_mean) / (count + s), (likes + s * self.global_like) / (count + s),
                (dislikes + s * self.global_dislike) / (count + s))

    def user_rows(self, user: str) -> tuple[np.ndarray, list[Rating], list[str]]:
        """[n_events, F] features of each of the user's events from its past; the events; each one's part."""
        fit, val, test = self.split.fit.get(user, []), self.split.validation.get(user, []), self.split.test.get(user, [])
        events = fit + val + test
        parts = ["fit"] * len(fit) + ["validation"] * len(val) + ["test"] * len(test)
        profile = self.users.get(user, {})
        s = self.config.smoothing
        rows = np.zeros((len(events), len(FEATURES)), dtype=np.float64)
        past_rows: list[int] = []
        past_ratings: list[float] = []
        residuals: list[float] = []
        genre_sum = np.zeros(self.genres.shape[1])
        genre_count = np.zeros(self.genres.shape[1])
        likes = dislikes = 0
        last_time = None
        for t, (event, part) in enumerate(zip(events, parts)):
            k = self.row[event.item]
            n_past = len(past_ratings)
            mean = (sum(past_ratings) + s * self.global_mean) / (n_past + s)
            item_count, item_mean, item_like, item_dislike = self._item_stats(k, event if part == "fit" else None)
            flags = self.genres[k]
            genre_mean = ((flags @ genre_sum + s * mean) / (flags @ genre_count + s)) if flags.any() else mean
            knn_score = knn_weight = 0.0
            if past_rows:
                sims = self.similarity(user, k, past_rows)
                top = np.argsort(-np.abs(sims))[: self.config.knn_neighbours]
                weight = float(np.abs(sims[top]).sum())
                if weight > 0:
                    deviations = np.asarray(past_ratings)[top] - mean
                    knn_score, knn_weight = float(sims[top] @ deviations) / weight, weight
            recent = past_ratings[-self.config.recent :]
            rows[t] = [
                n_past, mean, (likes + s * self.global_like) / (n_past + s),
                (dislikes + s * self.global_dislike) / (n_past + s),
                float(np.mean(recent)) if recent else self.global_mean,
                float(np.mean(residuals)) if residuals else 0.0,
                genre_mean, knn_score, knn_weight,
                math.log1p(max(event.timestamp - last_time, 0)) if last_time is not None else np.nan,
                item_count, item_mean, item_like, item_dislike, self.year[k],
                profile.get("age", np.nan), 1.0 if profile.get("gender") == "F" else 0.0,
                self.occupations.get(profile.get("occupation", ""), -1), *flags,
            ]
            # then the event joins the past, with its true rating
            past_rows.append(k)
            past_ratings.append(event.rating)
            residuals.append(event.rating - item_mean)
            genre_sum += flags * event.rating
            genre_count += flags
            likes += TARGETS["like_or_better"](event.rating)
            dislikes += TARGETS["dislike"](event.rating)
            last_time = event.timestamp
        return rows, events, parts

    def table(self) -> dict[str, tuple[np.ndarray, list[Rating]]]:
        """{part: (features [N, F], events)} over all users."""
        chunks: dict[str, tuple[list, list]] = {p: ([], []) for p in ("fit", "validation", "test")}
        for user in self.split.fit:
            rows, events, parts = self.user_rows(user)
            for row, event, part in zip(rows, events, parts):
                chunks[part][0].append(row)
                chunks[part][1].append(event)
        return {p: (np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES)), ev) for p, (x, ev) in chunks.items()}


def train_pointwise(tables: Mapping[str, tuple[np.ndarray, list[Rating]]], config: PointwiseConfig,
                    log: Callable[[str], None] = print) -> PointwiseModel:
    """One LightGBM binary model per target on the fit rows, early-stopped on the validation rows' log loss,
    all targets together within `config.time_budget_s`."""
    t0 = time.perf_counter()
    x_fit, fit_events = tables["fit"]
    x_val, val_events = tables["validation"]
    params = {"objective": "binary", "learning_rate": config.learning_rate, "num_leaves": config.num_leaves,
              "min_data_in_leaf": config.min_data_in_leaf, "feature_fraction": config.feature_fraction,
              "bagging_fraction": config.bagging_fraction, "bagging_freq": 1, "lambda_l2": config.lambda_l2,
              "num_threads": config.threads, "seed": config.seed, "verbosity": -1, "metric": "binary_logloss"}
    boosters, rounds, validation = {}, {}, {}
    for n, (target, test) in enumerate(TARGETS.items()):
        left = config.time_budget_s * (n + 1) / len(TARGETS) - (time.perf_counter() - t0)
        started = time.perf_counter()
        y_fit = np.array([test(e.rating) for e in fit_events], dtype=np.float64)
        y_val = np.array([test(e.rating) for e in val_events], dtype=np.float64)
        data = lightgbm.Dataset(x_fit, y_fit, feature_name=list(FEATURES), categorical_feature=list(CATEGORICAL),
                                free_raw_data=False)
        valid = lightgbm.Dataset(x_val, y_val, reference=data)
        callbacks = [lightgbm.early_stopping(config.early_stopping_rounds, verbose=False),
                     _time_limit(started, max(left, 1.0))]
        booster = lightgbm.train(params, data, config.max_rounds, valid_sets=[valid], callbacks=callbacks)
        boosters[target], rounds[target] = booster, booster.best_iteration or booster.current_iteration()
        validation[target] = float(booster.best_score["valid_0"]["binary_logloss"])
        log(f"pointwise {target}: {rounds[target]} rounds, validation log loss {validation[target]:.4f}, "
            f"{time.perf_counter() - started:.1f}s")
    return PointwiseModel(boosters, time.perf_counter() - t0, rounds, validation)


def predict_pointwise(model: PointwiseModel, x: np.ndarray) -> dict[str, np.ndarray]:
    return {target: booster.predict(x, num_iteration=model.rounds[target]) for target, booster in model.boosters.items()}


def _time_limit(started: float, seconds: float):
    """A LightGBM callback that ends training when the budget is spent (the best iteration so far is kept)."""
    def callback(env) -> None:
        if time.perf_counter() - started > seconds:
            raise lightgbm.callback.EarlyStopException(env.iteration, env.evaluation_result_list)
    callback.order = 30
    return callback
