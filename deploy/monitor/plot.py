"""Freshness, drift, lag and quality over time, drawn from a monitor history file (`sidstream monitor --plot`)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only: no display, and before pyplot picks a backend
import matplotlib.pyplot as plt  # noqa: E402

def plot_history(history_file: Path, out_png: Path, psi_alert: float = 0.25, psi_warn: float = 0.1) -> dict:
    """Freshness, drift, lag/throughput and quality over time from a monitor history file -> PNG."""
    snaps = [json.loads(line) for line in Path(history_file).read_text().splitlines() if line.strip()]
    if not snaps:
        raise ValueError(f"{history_file} holds no snapshots: run `sidstream monitor` (or the demo) first")
    t0 = snaps[0]["time"]
    x = [(s["time"] - t0) / 60 for s in snaps]

    def series(get):
        out = []
        for s in snaps:
            try:
                v = get(s)
            except (KeyError, TypeError):
                v = None
            out.append(np.nan if v is None else float(v))
        return out

    fig, axes = plt.subplots(4, 1, figsize=(11, 12), sharex=True)
    ax = axes[0]
    for hop in ("event_to_feast_s", "item_to_trie_s", "event_to_trained_s", "publish_to_serve_s"):
        ax.plot(x, series(lambda s, h=hop: s["freshness"][h]["p99"]), label=f"{hop[:-2]} p99")
    ax.plot(x, series(lambda s: s["freshness"]["model_age_s"]), label="model age", linestyle="--")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylabel("seconds")
    ax.set_title("freshness along the chain")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    signals = sorted({k for s in snaps for k in s["drift"]["signals"]})
    for signal in signals:
        ax.plot(x, series(lambda s, g=signal: s["drift"]["signals"][g]["excess"] if s["drift"]["ready"] else None),
                label=signal)
    ax.plot(x, series(lambda s: s["score"]["excess"]), label="score")
    ax.plot(x, series(lambda s: s["catalogue"]["new_item_codes"]["levels"]["level_1"]["excess"]
                      if s["catalogue"]["new_items"] >= 20 else None), label="new items L1", linestyle=":")
    ax.axhline(psi_warn, color="orange", linewidth=0.8)
    ax.axhline(psi_alert, color="red", linewidth=0.8)
    ax.set_ylabel("PSI - noise floor")
    ax.set_title("drift: recent stream vs reference window, PSI above sampling noise (orange warn, red alert)")
    ax.legend(fontsize=8, loc="upper left", ncol=3)
    ax = axes[2]
    ax.plot(x, series(lambda s: s["lag"]["max"]), label="max consumer lag (messages)")
    rate_keys = sorted({k for s in snaps for k in s["throughput"] if k.endswith("_per_s")})
    ax2 = ax.twinx()
    for key in rate_keys:
        ax2.plot(x, series(lambda s, k=key: s["throughput"].get(k)), linestyle="--", label=key.replace("_per_s", "/s"))
    ax.set_ylabel("lag")
    ax2.set_ylabel("messages/s")
    ax.set_title("consumer lag and topic rates")
    ax.legend(fontsize=8, loc="upper left")
    ax2.legend(fontsize=8, loc="upper right")
    ax = axes[3]
    ax.plot(x, series(lambda s: s["quality"]["recall@10"]), label="prequential recall@10")
    ax.set_ylabel("recall@10")
    ax.set_xlabel("minutes")
    ax.set_title("prequential quality")
    alert_x = [xi for xi, s in zip(x, snaps) if s.get("status") == "alert"]
    for a in axes:
        for xi in alert_x:
            a.axvline(xi, color="red", alpha=0.08, linewidth=4)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return {"snapshots": len(snaps), "minutes": x[-1], "alert_snapshots": len(alert_x), "out": str(out_png)}
