import dataclasses

import numpy as np

from catalogue.datasets import load_movielens
from trainer.actions import chronological_split, labels
from trainer.metrics import auc
from trainer.pointwise import FEATURES, FeatureBuilder, PointwiseConfig, predict_pointwise, train_pointwise
from tests.movielens_fixture import write_movielens


def _split(tmp_path, **kw):
    ml = load_movielens(write_movielens(tmp_path / "ml", **kw))
    return ml, chronological_split(ml.ratings)


def test_features_read_only_the_past(tmp_path):
    ml, split = _split(tmp_path, users=12, items=20, per_user=15)
    builder = FeatureBuilder(split, ml.items, ml.users, PointwiseConfig())
    rows, events, parts = builder.user_rows("1")
    # changing the user's last test rating changes no feature of any of that user's events
    last = events[-1]
    split.test["1"][-1] = dataclasses.replace(last, rating=1 if last.rating > 3 else 5)
    changed, _, _ = FeatureBuilder(split, ml.items, ml.users, PointwiseConfig()).user_rows("1")
    np.testing.assert_allclose(np.nan_to_num(rows), np.nan_to_num(changed))
    # a fit event's own rating is left out of its item's statistics
    k = FEATURES.index("item_count")
    first_fit = events[0]
    assert parts[0] == "fit" and rows[0, k] == builder.count[builder.row[first_fit.item]] - 1


def test_pointwise_ranker_learns_the_graded_signal(tmp_path):
    ml, split = _split(tmp_path, users=150, items=40, per_user=30)
    tables = FeatureBuilder(split, ml.items, ml.users, PointwiseConfig()).table()
    model = train_pointwise(tables, PointwiseConfig(min_data_in_leaf=20, time_budget_s=60), log=lambda *_: None)
    x, events = tables["test"]
    probs = predict_pointwise(model, x)
    assert set(probs) == {"like_or_better", "dislike"}
    assert auc(probs["like_or_better"], labels(events, "like_or_better")) > 0.75
    assert auc(probs["dislike"], labels(events, "dislike")) > 0.75
