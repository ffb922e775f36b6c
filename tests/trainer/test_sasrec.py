import numpy as np

from trainer.data import as_events, leave_one_out
from trainer.sasrec import Sasrec, SasrecConfig, evaluate, train_sasrec


def clustered(n_items=40, n_users=200, seed=0):
    rng = np.random.default_rng(seed)
    seqs = {}
    for u in range(n_users):
        c = int(rng.integers(5))
        members = [k for k in range(n_items) if k % 5 == c]
        seqs[str(u)] = [str(k) for k in rng.choice(members, size=int(rng.integers(5, 8)), replace=False)]
    return leave_one_out({u: as_events(s) for u, s in seqs.items()}), [str(k) for k in range(n_items)]


def test_rank_excludes_seen_and_returns_real_items():
    rec = Sasrec([str(k) for k in range(15)], SasrecConfig(d_model=16, n_layers=1, n_heads=1, max_len=8))
    ranked = rec.rank([["1", "2", "3"], []], k=10)
    assert len(ranked[0]) == 10 and not {"1", "2", "3"} & set(ranked[0])
    assert all(i in rec.index for row in ranked for i in row)
    assert len(set(ranked[0])) == 10


def test_sasrec_learns_clusters():
    split, items = clustered()
    cfg = SasrecConfig(d_model=32, n_layers=1, n_heads=1, dropout=0.0, max_len=8, batch_size=16, lr=5e-3,
                       warmup_steps=5, max_epochs=8, threads=1)
    rec, best, seconds = train_sasrec(split.train, split.validation, items, cfg, progress=False, log=lambda s: None)
    assert best["recall@10"] > 0.6  # chance is 0.25
    metrics, ranked = evaluate(rec, split.test)
    assert metrics["recall@10"] > 0.6 and len(ranked) == len(split.test)
    assert seconds > 0
