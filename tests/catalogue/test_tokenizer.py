import numpy as np
import pytest

from catalogue.tokenizer import (KMeansConfig, ResidualKMeans, TokenizerError, balanced_assign, check_embeddings,
                                 kmeans_plus_plus)


def blobs(n_per=50, centers=8, dim=6, seed=0, spread=0.05):
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)) * 3
    x = np.concatenate([c[i] + spread * rng.standard_normal((n_per, dim)) for i in range(centers)])
    labels = np.repeat(np.arange(centers), n_per)
    return x.astype(np.float32), labels


def test_balanced_assign_respects_capacity_and_prefers_nearest():
    rng = np.random.default_rng(1)
    d = rng.random((100, 10))
    d[:, 0] = 0.0  # every point's nearest code is 0
    a = balanced_assign(d, capacity=10)
    assert np.bincount(a, minlength=10).max() <= 10 and (a >= 0).all()
    assert (a == 0).sum() == 10
    with pytest.raises(TokenizerError):
        balanced_assign(d, capacity=5)


def test_unconstrained_when_capacity_is_ample():
    rng = np.random.default_rng(2)
    d = rng.random((50, 5))
    assert (balanced_assign(d, capacity=50) == d.argmin(1)).all()


def test_kmeans_plus_plus_picks_distinct_blobs():
    x, labels = blobs()
    centers = kmeans_plus_plus(x, 8, np.random.default_rng(0))
    nearest = ((x[:, None, :] - centers[None]) ** 2).sum(-1).argmin(0)  # the data point each center sits on
    assert len(set(labels[nearest])) >= 7


def test_fit_recovers_toy_clusters_and_uses_every_code():
    x, labels = blobs()
    tok, codes = ResidualKMeans.fit(x, KMeansConfig(levels=2, codes_per_level=8, iterations=20, normalize=False),
                                    progress=None)
    assert codes.shape == (400, 2)
    # level 0 separates the blobs: each blob maps to one code and codes differ between blobs
    per_blob = [set(codes[labels == b, 0]) for b in range(8)]
    assert all(len(s) == 1 for s in per_blob) and len(set.union(*per_blob)) == 8
    assert np.bincount(codes[:, 1], minlength=8).min() > 0
    # frozen encode agrees with the balanced fit on well-separated data, and reconstruction is good
    assert (tok.encode(x)[:, 0] == codes[:, 0]).all()
    assert tok.reconstruction_error(x, codes) < 0.01


def test_balanced_fit_prevents_collapse_on_skewed_data():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal((900, 4)) * 0.01, rng.standard_normal((100, 4))]).astype(np.float32)
    _, codes = ResidualKMeans.fit(x, KMeansConfig(levels=1, codes_per_level=10, iterations=15, normalize=False),
                                  progress=None)
    counts = np.bincount(codes[:, 0], minlength=10)
    assert counts.max() <= 100 and (counts > 0).all()


def test_save_load_round_trip(tmp_path):
    x, _ = blobs(n_per=20)
    tok, codes = ResidualKMeans.fit(x, KMeansConfig(levels=2, codes_per_level=8, iterations=5), progress=None)
    tok.save(tmp_path / "codebooks.safetensors")
    back = ResidualKMeans.load(tmp_path / "codebooks.safetensors")
    assert back.levels == 2 and back.normalize is True
    assert back.content_hash() == tok.content_hash()
    assert (back.encode(x) == tok.encode(x)).all()


def test_nan_and_shape_errors():
    with pytest.raises(TokenizerError, match="NaN"):
        check_embeddings(np.array([[0.1, np.nan], [1.0, 2.0]]))
    x, _ = blobs(n_per=10)
    tok, _ = ResidualKMeans.fit(x, KMeansConfig(levels=1, codes_per_level=4, iterations=3), progress=None)
    with pytest.raises(TokenizerError, match="NaN"):
        tok.encode(np.full((1, x.shape[1]), np.nan))
    with pytest.raises(TokenizerError, match="dimension"):
        tok.encode(np.ones((1, x.shape[1] + 1)))
    with pytest.raises(TokenizerError, match="at least"):
        ResidualKMeans.fit(x[:3], KMeansConfig(levels=1, codes_per_level=4), progress=None)


def test_spread_within_prefixes_gives_distinct_codes_per_group():
    from catalogue.tokenizer import spread_within_prefixes

    rng = np.random.default_rng(0)
    d = rng.random((9, 4))
    d[:, 2] = 0.0  # everyone prefers code 2
    keys = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3])
    out = spread_within_prefixes(d, keys, d.argmin(1))
    for g in (0, 1, 3):
        assert len(set(out[keys == g])) == (keys == g).sum()
    assert out[5] == 2  # a singleton keeps its nearest code
    # a group larger than K: no code holds more than ceil(m / K) of it
    big = spread_within_prefixes(np.zeros((9, 4)), np.zeros(9, dtype=np.int64), np.zeros(9, dtype=np.int64))
    assert np.bincount(big, minlength=4).max() == 3


def test_duplicates_get_distinct_last_codes_when_spreading():
    x = np.repeat(np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32), 6, axis=0)  # 6 copies each
    _, spread = ResidualKMeans.fit(x, KMeansConfig(levels=2, codes_per_level=8, iterations=5), progress=None)
    _, plain = ResidualKMeans.fit(x, KMeansConfig(levels=2, codes_per_level=8, iterations=5, spread_last_level=False),
                                  progress=None)
    n_spread = np.unique(spread[:, 0] * 8 + spread[:, 1]).size
    n_plain = np.unique(plain[:, 0] * 8 + plain[:, 1]).size
    assert n_spread == 30 and n_plain <= n_spread
