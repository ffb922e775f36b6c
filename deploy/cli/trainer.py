"""Trainer commands: `sidstream train pretrain`, `sidstream bench quality|generate|actions` (handlers:
deploy/trainer.py)."""
from __future__ import annotations

from pathlib import Path

from catalogue.settings import EMBEDDING_SOURCES as SID_SOURCES
from trainer.settings import DEFAULT_SID_SOURCE, TrainerSettings

HANDLERS = "deploy.trainer"


def register(commands, bench) -> None:
    settings = TrainerSettings()
    train = commands.add_parser("train", help="train the generative model")
    train_sub = train.add_subparsers(dest="train_command", metavar="STEP")
    train.set_defaults(handler=None, usage_of=train)

    p = train_sub.add_parser("pretrain", help="pretrain on logged sequences (leave-one-out split)")
    p.add_argument("--dataset", required=True, type=Path, help="dataset dir with sequences.txt")
    p.add_argument("--out", required=True, type=Path, help="run dir: model/ (best), checkpoint/, train_log.jsonl")
    p.add_argument("--catalogue", type=Path, help="catalogue dir (default: build from the dataset, cached)")
    p.add_argument("--sids", choices=SID_SOURCES, default=None,
                   help=f"SIDs of the catalogue built when --catalogue is absent (default {DEFAULT_SID_SOURCE}): "
                        "collaborative (co-occurrence in the training sequences; the best retrieval on Beauty) "
                        "or text (MiniLM over titles; what cold items need); auto picks text when at least half "
                        "the items have a title")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training setting, e.g. --set d_model=64 --set time_budget_s=600")
    p.add_argument("--no-resume", action="store_true", help="start over even when out/checkpoint exists")
    p.add_argument("--work-dir", type=Path, default=settings.bench_dir, help="cache for built catalogues")
    p.set_defaults(handler=f"{HANDLERS}:pretrain_command")

    q = bench.add_parser("quality", help="leave-one-out quality: sidstream vs SASRec, all users")
    q.add_argument("--dataset", required=True, type=Path)
    q.add_argument("--out", required=True, type=Path, help="JSON report")
    q.add_argument("--predictions", type=Path, help="top-10 per test user: user_id<TAB>item,item,...")
    q.add_argument("--quick", action="store_true", help="smoke run under 5 minutes (short training)")
    q.add_argument("--catalogue", type=Path, help="catalogue dir (default: build from the training sequences, cached)")
    q.add_argument("--sids", choices=SID_SOURCES, default=None,
                   help=f"SIDs of the catalogue built when --catalogue is absent (default {DEFAULT_SID_SOURCE}); "
                        "see `train pretrain --help`")
    q.add_argument("--work-dir", type=Path, default=settings.bench_dir, help="catalogue cache and run folders")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="sidstream training setting")
    q.add_argument("--sasrec-set", action="append", default=[], metavar="KEY=VALUE", help="SASRec setting")
    q.add_argument("--time-budget", type=float, help="training seconds for each model")
    q.add_argument("--skip-sasrec", action="store_true")
    q.add_argument("--test-users", type=int, default=0, metavar="N",
                   help="score a seeded sample of N test users (default 0: all; the headline figures use all)")
    q.add_argument("--model", type=Path, help="evaluate this sidstream model dir instead of training one")
    q.set_defaults(handler=f"{HANDLERS}:bench_quality")

    g = bench.add_parser("generate", help="ms per user for beam search vs SASRec full scoring")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--model", type=Path, help="model dir (default: untrained weights of the default size)")
    g.add_argument("--catalogue", type=Path, help="catalogue dir for the real-size case")
    g.add_argument("--dataset", type=Path, help="dataset whose catalogue to use when --catalogue is absent")
    g.add_argument("--large-items", type=int, default=1_000_000, help="synthetic catalogue size (0 to skip)")
    g.add_argument("--history", type=int, default=50, help="events per history")
    g.add_argument("--repeats", type=int, default=5)
    g.add_argument("--threads", type=int, default=settings.torch_threads)
    g.set_defaults(handler=f"{HANDLERS}:bench_generate")

    a = bench.add_parser("actions", help="action prediction AUC: on real graded feedback (--dataset MovieLens: "
                                         "sidstream vs a LightGBM pointwise ranker), else on the synthetic world "
                                         "vs the ground-truth ceiling")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("--dataset", type=Path, help="a MovieLens-100K folder (u.data): score real ratings")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quick", action="store_true")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training setting")
    a.add_argument("--world", action="append", default=[], metavar="KEY=VALUE",
                   help="synthetic world setting: users, items, drift, events_per_user=LO-HI, ... (WorldConfig)")
    a.add_argument("--pointwise-set", action="append", default=[], metavar="KEY=VALUE",
                   help="pointwise ranker setting with --dataset (trainer.pointwise.PointwiseConfig)")
    a.add_argument("--time-budget", type=float, help="with --dataset: training seconds for sidstream and for the "
                                                     "pointwise ranker each (default 900)")
    a.add_argument("--ratings", default=None, metavar="MAP",
                   help="with --dataset: rating -> action mapping (default 1=dislike,2=dislike,3=neutral,4=like,"
                        "5=love)")
    a.add_argument("--sids", choices=SID_SOURCES, default=DEFAULT_SID_SOURCE,
                   help=f"with --dataset: SIDs of the catalogue built from the fit events (default "
                        f"{DEFAULT_SID_SOURCE})")
    a.add_argument("--work-dir", type=Path, default=settings.bench_dir, help="catalogue cache")
    a.set_defaults(handler=f"{HANDLERS}:bench_actions")
