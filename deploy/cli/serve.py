"""`sidstream serve`, `sidstream bench serving` and `sidstream bench analysis` (handlers: deploy/serve.py,
deploy/bench/serving.py, deploy/bench/analysis.py)."""
from __future__ import annotations

from pathlib import Path


def register(commands, bench) -> None:
    serve = commands.add_parser("serve", help="serve recommendations over HTTP (Ray Serve on a local Ray)")
    serve.add_argument("--model", type=Path, help="a model directory, or a registry folder (serves its pinned, else "
                                                  "latest version) (default: SIDSTREAM_MODEL_DIR)")
    serve.add_argument("--catalogue", type=Path, help="catalogue folder (default: SIDSTREAM_CATALOGUE_DIR)")
    serve.add_argument("--replicas", type=int, help="replicas (default: SIDSTREAM_REPLICAS or 1)")
    serve.add_argument("--cpus-per-replica", type=float, help="Ray CPUs per replica (default 1)")
    serve.add_argument("--torch-threads", type=int, help="torch threads per replica (default 1)")
    serve.add_argument("--host", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8000)")
    serve.add_argument("--no-follow", action="store_true", help="do not follow model-updates / catalogue topics")
    serve.add_argument("--ingress", choices=("haproxy", "proxy"),
                       help="HAProxy straight to the replicas, or Ray's Python proxy (default: SIDSTREAM_INGRESS "
                            "or haproxy)")
    serve.set_defaults(handler="deploy.serve:cmd_serve")

    b = bench.add_parser("serving", help="HTTP latency/throughput of the Ray Serve app at concurrency 1, 8, 32")
    b.add_argument("--out", required=True, type=Path, help="JSON report")
    b.add_argument("--quick", action="store_true", help="short runs (under 2 minutes in all)")
    b.add_argument("--model", type=Path, help="registry model (default: untrained d=64, 2 layers, 50-event window; "
                                              "weights do not change the cost)")
    b.add_argument("--catalogue", type=Path, help="catalogue folder (default: the Beauty catalogue, built if needed)")
    b.add_argument("--dataset", type=Path, help="dataset folder (default: <data_dir>/amazon_beauty_2014)")
    b.add_argument("--users", type=int, default=2000, help="users with 50-event histories in the online store")
    b.add_argument("--seconds", type=float, help="measured seconds per concurrency (default 20, quick 6)")
    b.add_argument("--replicas", type=int, default=2, help="replicas (each: 1 Ray CPU, its own batch queue)")
    b.add_argument("--torch-threads", type=int, default=1)
    b.add_argument("--batch-wait-ms", type=float, default=5.0, help="@serve.batch wait for more requests")
    b.add_argument("--batch-size", type=int, default=32, help="@serve.batch max batch size")
    b.add_argument("--generation-thread", action="store_true",
                   help="run batches on a generation thread instead of the replica's event loop")
    b.add_argument("--ingress", choices=("haproxy", "proxy"),
                   help="HAProxy straight to the replicas, or Ray's Python proxy (default: SIDSTREAM_INGRESS or "
                        "haproxy)")
    b.add_argument("--work-dir", type=Path, default=Path("var/bench/serving"))
    b.set_defaults(handler="deploy.bench.serving:cmd_bench_serving")

    a = bench.add_parser("analysis", help="what-if and attribution on the synthetic world with a planted trigger: "
                                          "how often /explain finds it, what /whatif shows, and their cost")
    a.add_argument("--out", required=True, type=Path, help="JSON report")
    a.add_argument("--quick", action="store_true", help="a small world and 150 s of training (about 4 minutes)")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(handler="deploy.bench.analysis:cmd_bench_analysis")
