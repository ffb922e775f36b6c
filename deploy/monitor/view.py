"""The monitor's terminal view of one snapshot."""
from __future__ import annotations

import time

def _fmt(value, unit: str = "", digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if unit == "s" and value >= 120:
            return f"{value / 60:.1f} min"
        return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"
    return f"{value}{(' ' + unit) if unit else ''}"


def render(snap: dict, header: list[str] | None = None) -> str:
    """The terminal view of one snapshot."""
    lines = list(header or [])
    t = snap["throughput"]
    rates = ", ".join(f"{k[:-6]} {_fmt(v, digits=0)}/s" for k, v in t.items() if k.endswith("_per_s"))
    lines.append(f"status {snap['status'].upper()}   {time.strftime('%H:%M:%S', time.localtime(snap['time']))}   "
                 f"{rates or 'rates: first interval'}")
    lag = snap["lag"]
    groups = "; ".join(f"{g}: " + ", ".join(f"{tp} {n}" for tp, n in sorted(ts.items()))
                       for g, ts in sorted(lag["groups"].items()))
    lines.append(f"consumer lag  {groups or '-'}")
    f = snap["freshness"]
    hops = []
    for hop in ("event_to_feast_s", "item_to_catalogue_s", "item_to_trie_s", "event_to_trained_s",
                "publish_to_serve_s"):
        h = f.get(hop)
        hops.append(f"{hop[:-2].replace('_', ' ')} p50 {_fmt(h and h['p50'], 's')} p99 {_fmt(h and h['p99'], 's')}")
    lines.append("freshness     " + " | ".join(hops[:2]))
    lines.append("              " + " | ".join(hops[2:]))
    served = f.get("event_to_served_s")
    lines.append(f"              event to served (in serving weights) p50 {_fmt(served and served['p50'], 's', 1)} "
                 f"max {_fmt(served and served['max'], 's', 1)}")
    lines.append(f"model         newest {f.get('model_version') or '-'} age {_fmt(f.get('model_age_s'), 's', 0)}; "
                 f"served {', '.join(f.get('served_versions') or []) or '-'}; {f.get('models_announced', 0)} announced")
    c = snap["catalogue"]
    dead = ", ".join(f"{lvl} {u['dead']}/{u['overloaded']}" for lvl, u in c["code_usage"].items())
    lines.append(f"catalogue     {c['items']} items, {c['new_items']} new; dead/overloaded codes {dead or '-'}")
    d = snap["drift"]
    signals = " ".join(f"{s} {v['psi']:.3f}/{v['noise']:.3f}" for s, v in d["signals"].items())
    lines.append(f"drift         PSI/noise floor {signals or '-'} | score {_fmt(snap['score']['psi'], digits=3)}   "
                 f"[{d['reference_events']} reference vs {d['recent_events']} recent events"
                 f"{'' if d['ready'] else ', warming up'}]")
    q = snap["quality"]
    trend = " ".join(f"{r:.3f}" for r in q["trend"][-6:])
    lines.append(f"quality       prequential recall@10 {_fmt(q['recall@10'], digits=4)} over {q['events']} events "
                 f"(baseline {_fmt(q['baseline_recall@10'], digits=4)}); per version: {trend or '-'}")
    firing = [a for a in snap["alerts"] if a["state"] in ("warn", "alert")]
    lines.append("alerts        " + (", ".join(f"{a['name']}={a['state']} ({_fmt(a['value'], a['unit'], 3)})"
                                              for a in firing) or "none"))
    pending = [a for a in snap["alerts"] if a.get("raw") and a["raw"] != a["state"] and a["raw"] != "unknown"]
    if pending:  # readings that differ from the shown state, not yet for their hold time
        lines.append("pending       " + ", ".join(f"{a['name']}: {a['state']} -> {a['raw']}" for a in pending))
    errors = [f"{n}: {s}" for n, s in snap.get("sources", {}).items() if s != "ok"]
    if errors:
        lines.append("unreachable   " + "; ".join(errors))
    return "\n".join(lines)
