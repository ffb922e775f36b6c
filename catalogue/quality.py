"""SID quality metrics: small pure functions over a codes matrix [N, L] (one column per level)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def _column(codes, level: int) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be [N, L], got shape {codes.shape}")
    return codes[:, level]


def code_counts(codes, level: int, k: int) -> np.ndarray:
    return np.bincount(_column(codes, level), minlength=k)[:k]


def utilisation(codes, level: int, k: int) -> float:
    """Fraction of the K codes of a level used by at least one item."""
    return float((code_counts(codes, level, k) > 0).mean())


def dead_codes(codes, level: int, k: int) -> list[int]:
    """Codes of a level that no item uses."""
    return np.flatnonzero(code_counts(codes, level, k) == 0).tolist()


def perplexity(codes, level: int, k: int) -> float:
    """exp(entropy) of a level's code distribution: K when perfectly uniform, 1 when collapsed."""
    counts = code_counts(codes, level, k).astype(np.float64)
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def prefix_keys(codes, depth: int) -> np.ndarray:
    """One int64 key per item for its first `depth` codes (radix 2**16 per level)."""
    codes = np.asarray(codes, dtype=np.int64)
    if depth > codes.shape[1]:
        raise ValueError(f"depth {depth} exceeds SID length {codes.shape[1]}")
    keys = np.zeros(codes.shape[0], dtype=np.int64)
    for level in range(depth):
        keys = (keys << 16) | codes[:, level]
    return keys


def collision_rate(codes, depth: int | None = None) -> float:
    """Fraction of items whose first `depth` codes (default all) also name an earlier item."""
    codes = np.asarray(codes)
    n = codes.shape[0]
    if n == 0:
        return 0.0
    depth = codes.shape[1] if depth is None else depth
    return float(1.0 - np.unique(prefix_keys(codes, depth)).size / n)


def largest_prefix_share(codes, depth: int | None = None) -> float:
    """Largest share of items that fall under one prefix of `depth` codes (default all)."""
    codes = np.asarray(codes)
    n = codes.shape[0]
    if n == 0:
        return 0.0
    depth = codes.shape[1] if depth is None else depth
    _, counts = np.unique(prefix_keys(codes, depth), return_counts=True)
    return float(counts.max() / n)


def max_group_size(codes, depth: int | None = None) -> int:
    codes = np.asarray(codes)
    if codes.shape[0] == 0:
        return 0
    depth = codes.shape[1] if depth is None else depth
    _, counts = np.unique(prefix_keys(codes, depth), return_counts=True)
    return int(counts.max())


def same_group_prefix_ratio(codes, groups, depth: int = 1, pairs: int = 200_000, seed: int = 0) -> dict:
    """How much more often two items of one group (e.g. leaf category) share their first `depth` codes
    than two random items. Returns both rates and their ratio."""
    codes = np.asarray(codes)
    keys = prefix_keys(codes, depth)
    rng = np.random.default_rng(seed)
    members = defaultdict(list)
    for i, g in enumerate(groups):
        if g is not None and g != "":
            members[g].append(i)
    multi = [np.array(m) for m in members.values() if len(m) >= 2]
    if not multi:
        raise ValueError("no group has two or more items")
    sizes = np.array([m.size for m in multi], dtype=np.float64)
    weight = sizes * (sizes - 1)  # pick groups in proportion to their number of pairs
    g = rng.choice(len(multi), size=pairs, p=weight / weight.sum())
    a = np.empty(pairs, dtype=np.int64)
    b = np.empty(pairs, dtype=np.int64)
    for gi in np.unique(g):
        sel = np.flatnonzero(g == gi)
        m = multi[gi]
        first = rng.integers(0, m.size, sel.size)
        second = (first + rng.integers(1, m.size, sel.size)) % m.size
        a[sel], b[sel] = m[first], m[second]
    same = float((keys[a] == keys[b]).mean())
    n = codes.shape[0]
    x = rng.integers(0, n, pairs)
    y = (x + rng.integers(1, n, pairs)) % n
    rand = float((keys[x] == keys[y]).mean())
    return {"same_group": same, "random": rand, "ratio": same / rand if rand > 0 else float("inf")}


def sid_report(codes, k: int, suffix_size: int | None = None, reconstruction_error: float | None = None) -> dict:
    """The quality report: codes is [N, L] (semantic levels) or [N, L+1] (with suffix; give suffix_size)."""
    codes = np.asarray(codes, dtype=np.int64)
    levels = codes.shape[1] - (1 if suffix_size else 0)
    sem = codes[:, :levels]
    report = {
        "items": int(codes.shape[0]),
        "levels": levels,
        "codes_per_level": k,
        "utilisation_per_level": [utilisation(sem, l, k) for l in range(levels)],
        "perplexity_per_level": [perplexity(sem, l, k) for l in range(levels)],
        "dead_codes_per_level": [len(dead_codes(sem, l, k)) for l in range(levels)],
        "collision_rate_before_suffix": collision_rate(sem),
        "largest_prefix_share": largest_prefix_share(sem),
        "largest_prefix_share_per_depth": [largest_prefix_share(sem, d) for d in range(1, levels + 1)],
        "max_items_per_prefix": max_group_size(sem),
    }
    if suffix_size:
        report["max_suffix"] = int(codes[:, levels].max()) if codes.shape[0] else 0
        report["suffix_size"] = suffix_size
        report["unique_sids"] = bool(collision_rate(codes) == 0.0)
    if reconstruction_error is not None:
        report["reconstruction_error"] = reconstruction_error
    return report


def format_report(report: dict) -> str:
    lines = [f"items: {report['items']}  levels: {report['levels']} x {report['codes_per_level']} codes"]
    for l in range(report["levels"]):
        lines.append(f"  level {l}: utilisation {report['utilisation_per_level'][l]:.3f}  "
                     f"perplexity {report['perplexity_per_level'][l]:.1f}  dead codes {report['dead_codes_per_level'][l]}")
    lines.append(f"collision rate before suffix: {report['collision_rate_before_suffix']:.4f} "
                 f"(max {report['max_items_per_prefix']} items on one {report['levels']}-code prefix)")
    lines.append("largest prefix share by depth: " + ", ".join(f"{s:.4f}" for s in report["largest_prefix_share_per_depth"]))
    if "max_suffix" in report:
        lines.append(f"max suffix used: {report['max_suffix']} of {report['suffix_size']}; unique SIDs: {report['unique_sids']}")
    if "reconstruction_error" in report:
        lines.append(f"reconstruction error (relative MSE): {report['reconstruction_error']:.4f}")
    for key in ("category_first_code_sharing",):
        if key in report:
            r = report[key]
            lines.append(f"same leaf category share first code: {r['same_group']:.4f} vs random {r['random']:.4f} "
                         f"-> ratio {r['ratio']:.1f}")
    return "\n".join(lines)
