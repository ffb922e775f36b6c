"""Trainer commands: `sidstream train pretrain`, `sidstream bench quality|generate|actions` (adapters only)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(commands, bench) -> None:
    from catalogue.encoder import EMBEDDING_SOURCES as SID_SOURCES
    from trainer.settings import DEFAULT_SID_SOURCE, TrainerSettings

    settings = TrainerSettings()
    train = commands.add_parser("train", help="train the generative model")
    train_sub = train.add_subparsers(dest="train_command", metavar="STEP")
    train.set_defaults(func=lambda args: (train.print_help(), 2)[1])

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
    p.set_defaults(func=_pretrain)

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
    q.add_argument("--model", type=Path, help="evaluate this sidstream model dir instead of training one")
    q.set_defaults(func=_bench_quality)

    g = bench.add_parser("generate", help="ms per user for beam search vs SASRec full scoring")
    g.add_argument("--out", required=True, type=Path)
    g.add_argument("--model", type=Path, help="model dir (default: untrained weights of the default size)")
    g.add_argument("--catalogue", type=Path, help="catalogue dir for the real-size case")
    g.add_argument("--dataset", type=Path, help="dataset whose catalogue to use when --catalogue is absent")
    g.add_argument("--large-items", type=int, default=1_000_000, help="synthetic catalogue size (0 to skip)")
    g.add_argument("--history", type=int, default=50, help="events per history")
    g.add_argument("--repeats", type=int, default=5)
    g.add_argument("--threads", type=int, default=settings.torch_threads)
    g.set_defaults(func=_bench_generate)

    a = bench.add_parser("actions", help="action ranking AUC on the synthetic world vs the ground-truth ceiling")
    a.add_argument("--out", required=True, type=Path)
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--quick", action="store_true")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="training setting")
    a.add_argument("--world", action="append", default=[], metavar="KEY=VALUE",
                   help="synthetic world setting: users, items, drift, events_per_user=LO-HI, ... (WorldConfig)")
    a.set_defaults(func=_bench_actions)


def parse_overrides(pairs: list[str]) -> dict:
    """KEY=VALUE strings -> dict with int/float/bool values where they parse."""
    from deploy.cli import CommandError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"setting {pair!r} is not KEY=VALUE")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def sid_source(args: argparse.Namespace) -> str:
    """--sids, refused next to --catalogue (whose SIDs are already fixed)."""
    from deploy.cli import CommandError
    from trainer.settings import DEFAULT_SID_SOURCE

    if args.sids is not None and args.catalogue is not None:
        raise CommandError("--sids chooses how to build a catalogue; --catalogue already gives one: pass only one")
    return args.sids or DEFAULT_SID_SOURCE


def _pretrain(args: argparse.Namespace) -> int:
    from deploy.cli import CommandError
    from trainer.bench_quality import prepare_catalogue
    from trainer.data import DataError, Tokenizer, load_amazon_split
    from trainer.pretrain import TrainConfig, pretrain

    sids = sid_source(args)
    try:
        config = TrainConfig.from_overrides(**parse_overrides(args.set))
        raw, split = load_amazon_split(args.dataset)
        catalogue = prepare_catalogue(args.dataset, raw, split, args.catalogue, args.work_dir / "catalogues",
                                      sid_source=sids)
        result = pretrain(split, Tokenizer(catalogue.vocab, catalogue.tokens_of), catalogue.trie, config, args.out,
                          resume=not args.no_resume)
    except (DataError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(f"best validation: {result.best_metrics}; model in {args.out / 'model'}")
    return 0


def _bench_quality(args: argparse.Namespace) -> int:
    from deploy.cli import CommandError
    from trainer.bench_quality import run_quality

    sids = sid_source(args)
    train = parse_overrides(args.set)
    sasrec = parse_overrides(args.sasrec_set)
    if args.time_budget is not None:
        train.setdefault("time_budget_s", args.time_budget)
        sasrec.setdefault("time_budget_s", args.time_budget)
    if not (args.dataset / "sequences.txt").exists():
        raise CommandError(f"{args.dataset} has no sequences.txt")
    try:
        run_quality(args.dataset, args.out, args.predictions, quick=args.quick, catalogue_dir=args.catalogue,
                    work_dir=args.work_dir, train_overrides=train, sasrec_overrides=sasrec,
                    skip_sasrec=args.skip_sasrec, model_dir=args.model, sid_source=sids)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _bench_generate(args: argparse.Namespace) -> int:
    from deploy.cli import CommandError
    from trainer.bench_generate import run_generate

    try:
        run_generate(args.out, model_dir=args.model, catalogue_dir=args.catalogue, dataset=args.dataset,
                     large_items=args.large_items, history=args.history, repeats=args.repeats, threads=args.threads)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def _bench_actions(args: argparse.Namespace) -> int:
    from deploy.cli import CommandError
    from trainer.synthetic import check_action_bench_settings, run_action_bench

    train, world = parse_overrides(args.set), parse_overrides(args.world)
    try:  # settings are checked here, before minutes of simulation and training
        check_action_bench_settings(args.seed, args.quick, train, world)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    run_action_bench(args.out, seed=args.seed, quick=args.quick, overrides=train, world_overrides=world)
    return 0
