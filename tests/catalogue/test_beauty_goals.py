"""Checks the issue's Beauty goals on a built catalogue folder (skipped when none has been built).

Build one with `sidstream catalogue build --dataset <data>/amazon_beauty_2014 --out <dir>` (or run
`sidstream bench catalogue`, which writes var/bench/catalogue/amazon_beauty_2014/catalogue) and point
SIDSTREAM_BEAUTY_CATALOGUE at it.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest

from catalogue.catalogue import ItemCatalogue
from catalogue.quality import largest_prefix_share, utilisation

FOLDER = Path(os.environ.get("SIDSTREAM_BEAUTY_CATALOGUE",
                             Path(__file__).resolve().parents[2] / "var/bench/catalogue/amazon_beauty_2014/catalogue"))


@pytest.mark.slow
@pytest.mark.skipif(not (FOLDER / "manifest.json").is_file(), reason=f"no Beauty catalogue built at {FOLDER}")
def test_beauty_catalogue_meets_the_goals():
    cat = ItemCatalogue.load(FOLDER)
    ids, codes = cat.codes_matrix()
    assert len(ids) == 12_101
    assert np.unique(codes, axis=0).shape[0] == len(ids)  # every item has a unique SID
    k = cat.vocab.codes_per_level
    assert all(utilisation(codes, level, k) >= 0.9 for level in range(cat.vocab.levels))
    assert largest_prefix_share(codes[:, : cat.vocab.levels]) <= 0.01
    report = json.loads((FOLDER / "quality.json").read_text())
    assert report["category_first_code_sharing"]["ratio"] > 5
