import json

import math

import numpy as np

from catalogue import bench

KEYS = ("items", "unique_sids", "collision_rate_before_suffix", "max_suffix", "utilisation_per_level",
        "largest_prefix_share", "build_seconds", "assign_us_p50", "trie_insert_us_p50", "mask_ms_p50",
        "trie_bytes_per_item_1m")


def test_bench_writes_every_issue_key(tmp_path):
    rng = np.random.default_rng(0)
    ds = tmp_path / "tiny"
    ds.mkdir()
    lines = [" ".join(map(str, [u + 1, *rng.choice(np.arange(1, 601), size=8, replace=False)])) for u in range(900)]
    (ds / "sequences.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "bench.json"
    bench.run(ds, out, quick=True, workdir=tmp_path / "work", log=lambda m: None, synthetic_items=50_000)
    result = json.loads(out.read_text())
    for key in KEYS:
        assert key in result, key
    assert result["items"] == 600 and result["unique_sids"] is True
    assert set(result["mask_ms_p50"]) == {"12k", "1m"}
    assert set(result["mask_ms_p50"]["1m"]) == {"1", "20", "64"}
    assert all(0 <= u <= 1 for u in result["utilisation_per_level"])
    assert result["synthetic_items"] == 50_000 and result["trie_bytes_per_item_1m"] > 0


def test_synthetic_sids_are_unique():
    from catalogue.vocab import Vocabulary

    codes = bench.synthetic_sids(20_000, Vocabulary())
    assert np.unique(codes, axis=0).shape[0] == 20_000


def test_percentile_interpolates_linearly_between_ranks():
    values = list(range(1, 101))
    assert bench.percentile(values, 50) == 50.5 and bench.percentile(values, 100) == 100
    assert math.isclose(bench.percentile(values, 99), 99.01)
    assert bench.percentile([30.0, 10.0, 20.0], 99) == float(np.percentile([10, 20, 30], 99))
    assert bench.percentile([5.0], 99) == 5.0 and math.isnan(bench.percentile([], 99))


def test_machine_info_names_the_machine():
    info = bench.machine_info()
    assert info["cpu"] == bench.cpu_model() and info["cores"] >= 1 and len(info["load_average"]) == 3
    assert {"torch", "torch_threads", "numpy", "python", "platform"} <= set(info)
