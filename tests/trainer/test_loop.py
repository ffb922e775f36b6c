import pytest
import torch

from trainer.loop import EarlyStopping, TimeBudget, WarmupCosine, adamw, train
from trainer.model import ModelConfig, Transformer
from trainer.pretrain import TrainConfig, make_optimizer


def tiny():
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=11, max_len=8, d_model=8, n_layers=1, n_heads=2, dropout=0.0))


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert schedule(0, 0.0) == pytest.approx(0.1)
    assert schedule(9, 0.0) == pytest.approx(1.0)
    assert schedule(50, 0.5) == pytest.approx(0.55)
    assert schedule(50, 1.0) == pytest.approx(0.1)
    assert schedule(50, 2.0) == pytest.approx(0.1)  # past the end: the floor


def test_adamw_decays_matrices_only_unless_one_group():
    model = tiny()
    decay, no_decay = adamw(model, 1e-3, 0.05).param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied head once
    (group,) = adamw(model, 1e-3, 0.01, one_group=True).param_groups
    assert group["weight_decay"] == 0.01 and group["betas"] == (0.9, 0.98)
    assert len(make_optimizer(model, TrainConfig()).param_groups) == 2


def test_early_stopping_and_time_budget():
    stopping = EarlyStopping(patience=2)
    assert stopping.update(0.3) and not stopping.should_stop
    assert not stopping.update(0.3) and not stopping.should_stop  # equal is not better
    assert stopping.update(0.4) and stopping.bad == 0
    assert not stopping.update(0.1) and not stopping.update(0.2) and stopping.should_stop
    # with min_delta, a noise-sized gain is a new best (kept) but does not reset the patience
    noisy = EarlyStopping(patience=2, min_delta=0.1)
    assert noisy.update(0.50) and noisy.update(0.52) and noisy.bad == 1  # 0.52 < 0.50 * 1.1
    assert not noisy.update(0.51) and noisy.should_stop and noisy.best == 0.52
    real = EarlyStopping(patience=2, min_delta=0.1)
    assert real.update(0.50) and real.update(0.56) and real.bad == 0  # 0.56 > 0.55: a real improvement
    now = [100.0]
    budget = TimeBudget(10.0, spent=4.0, clock=lambda: now[0])
    budget.start()
    now[0] += 5.0
    assert budget.elapsed() == 9.0 and not budget.exhausted()
    assert budget.stop() == 5.0 and budget.spent == 9.0
    now[0] += 100.0  # time outside an epoch (evaluation) does not count
    assert budget.elapsed() == 9.0


class Batch:
    def __init__(self, inputs):
        self.inputs = inputs


def run(epochs=5, scores=(0.1, 0.2, 0.2, 0.2, 0.2), patience=2, budget_s=1e9, **kw):
    model = tiny()
    optimizer = adamw(model, 1e-2, 0.0)
    data = [Batch(torch.randint(0, 11, (2, 6))) for _ in range(3)]
    evaluations = iter(scores)
    seen = []
    outcome = train(model, optimizer, lambda: iter(data), lambda b: model(b.inputs).logsumexp(-1).mean(),
                    schedule=WarmupCosine(1e-2, 2, 0.1), budget=TimeBudget(budget_s),
                    stopping=EarlyStopping(patience), evaluate=lambda: {"recall@10": next(evaluations)},
                    after_epoch=lambda record, improved: seen.append((record, improved)), max_epochs=epochs,
                    steps_per_epoch=len(data), grad_clip=1.0, **kw)
    return outcome, seen


def test_train_stops_for_each_reason_and_reports_every_epoch():
    outcome, seen = run()
    assert outcome.stop_reason == "early_stopping" and outcome.epoch == 4 and outcome.step == 12
    assert [improved for _, improved in seen] == [True, True, False, False]
    assert [r["epoch"] for r, _ in seen] == [1, 2, 3, 4] and all("val" in r and "eval_seconds" in r for r, _ in seen)
    outcome, seen = run(epochs=3, patience=9)
    assert outcome.stop_reason == "max_epochs" and outcome.epoch == 3
    outcome, seen = run(epochs=5, eval_every=2, patience=9)
    assert [("val" in r) for r, _ in seen] == [False, True, False, True, True]  # every 2nd and the last
    outcome, seen = run(stop_after_epoch=2, patience=9)
    assert outcome.stop_reason == "stop_after_epoch=2" and outcome.step == 6
    outcome, seen = run(budget_s=0.0)
    assert outcome.stop_reason == "time_budget" and outcome.epoch == 0 and seen == []
    outcome, seen = run(epoch=4, step=12, patience=9)  # resumed counters
    assert outcome.epoch == 5 and outcome.step == 15 and outcome.records[0]["epoch"] == 5
