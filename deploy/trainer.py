"""Handlers of `sidstream train pretrain` and `sidstream bench quality|generate|actions` (parsers:
deploy/cli/trainer.py)."""
from __future__ import annotations

import argparse
from dataclasses import asdict

from catalogue.datasets import is_movielens, parse_rating_actions
from deploy.cli import CommandError, parse_overrides
from trainer.bench_actions import run_graded_bench
from trainer.bench_generate import run_generate
from trainer.bench_quality import prepare_catalogue, run_quality
from trainer.data import DataError, Tokenizer, load_split
from trainer.pointwise import PointwiseConfig
from trainer.pretrain import TrainConfig, pretrain
from trainer.settings import DEFAULT_SID_SOURCE
from trainer.synthetic import check_action_bench_settings, run_action_bench


def sid_source(args: argparse.Namespace) -> str:
    """--sids, refused next to --catalogue (whose SIDs are already fixed)."""
    if args.sids is not None and args.catalogue is not None:
        raise CommandError("--sids chooses how to build a catalogue; --catalogue already gives one: pass only one")
    return args.sids or DEFAULT_SID_SOURCE


def pretrain_command(args: argparse.Namespace) -> int:
    sids = sid_source(args)
    try:
        config = TrainConfig.from_overrides(**parse_overrides(args.set))
        raw, split = load_split(args.dataset)
        catalogue = prepare_catalogue(args.dataset, raw, split, args.catalogue, args.work_dir / "catalogues",
                                      sid_source=sids)
        result = pretrain(split, Tokenizer(catalogue.vocab, catalogue.tokens_of), catalogue.trie, config, args.out,
                          resume=not args.no_resume)
    except (DataError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    print(f"best validation: {result.best_metrics}; model in {args.out / 'model'}")
    return 0


def bench_quality(args: argparse.Namespace) -> int:
    sids = sid_source(args)
    train = parse_overrides(args.set)
    sasrec = parse_overrides(args.sasrec_set)
    if args.time_budget is not None:
        train.setdefault("time_budget_s", args.time_budget)
        sasrec.setdefault("time_budget_s", args.time_budget)
    if not ((args.dataset / "sequences.txt").exists() or is_movielens(args.dataset)):
        raise CommandError(f"{args.dataset} has neither sequences.txt (Amazon) nor u.data (MovieLens)")
    try:
        run_quality(args.dataset, args.out, args.predictions, quick=args.quick, catalogue_dir=args.catalogue,
                    work_dir=args.work_dir, train_overrides=train, sasrec_overrides=sasrec,
                    skip_sasrec=args.skip_sasrec, model_dir=args.model, sid_source=sids,
                    test_users=args.test_users)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def bench_generate(args: argparse.Namespace) -> int:
    try:
        run_generate(args.out, model_dir=args.model, catalogue_dir=args.catalogue, dataset=args.dataset,
                     large_items=args.large_items, history=args.history, repeats=args.repeats, threads=args.threads)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return 0


def bench_actions(args: argparse.Namespace) -> int:
    train, world = parse_overrides(args.set), parse_overrides(args.world)
    if args.dataset is not None:
        return _bench_actions_dataset(args, train)
    if args.pointwise_set or args.time_budget is not None or args.ratings is not None:
        raise CommandError("--pointwise-set, --time-budget and --ratings need --dataset")
    try:  # settings are checked here, before minutes of simulation and training
        check_action_bench_settings(args.seed, args.quick, train, world)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    run_action_bench(args.out, seed=args.seed, quick=args.quick, overrides=train, world_overrides=world)
    return 0


def _bench_actions_dataset(args: argparse.Namespace, train: dict) -> int:
    if args.world:
        raise CommandError("--world sets the synthetic world; --dataset scores real ratings: pass only one")
    if not is_movielens(args.dataset):
        raise CommandError(f"{args.dataset} is not a MovieLens-100K folder (no u.data); graded feedback needs ratings")
    pointwise = parse_overrides(args.pointwise_set)
    try:
        unknown = set(pointwise) - set(asdict(PointwiseConfig()))
        if unknown:
            raise ValueError(f"unknown pointwise settings {sorted(unknown)}; known: {sorted(asdict(PointwiseConfig()))}")
        TrainConfig.from_overrides(**train)  # settings are checked before minutes of work
        parse_rating_actions(args.ratings)
        run_graded_bench(args.dataset, args.out, quick=args.quick, train_overrides={"seed": args.seed, **train},
                         pointwise_overrides=pointwise, time_budget_s=args.time_budget, rating_actions=args.ratings,
                         sid_source=args.sids, work_dir=args.work_dir)
    except (DataError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    return 0
