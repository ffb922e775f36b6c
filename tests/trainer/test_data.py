import numpy as np
import pytest
import torch

from catalogue.vocab import Vocabulary
from trainer.data import (
    DataError,
    TokenWindows,
    Tokenizer,
    as_events,
    leave_one_out,
    load_split,
    weighted_cross_entropy,
)

VOCAB = Vocabulary(levels=2, codes_per_level=4, suffix_size=2, actions=("click", "like", "purchase"))
# tokens: specials 0-3, L0 4-7, L1 8-11, suffix 12-13, actions 14-16
ITEMS = {"a": (0, 1, 0), "b": (0, 1, 1), "c": (3, 2, 0)}


def tokenizer():
    return Tokenizer(VOCAB, {i: VOCAB.sid_to_tokens(c) for i, c in ITEMS.items()})


def test_encode_token_format():
    tok = tokenizer()
    assert tok.encode([("a", "click"), ("c", "purchase")]) == [1, 4, 9, 12, 14, 7, 10, 12, 16]
    assert tok.encode([("a", "click"), ("c", "purchase")], window_events=1) == [1, 7, 10, 12, 16]
    with pytest.raises(DataError, match="no SID"):
        tok.encode([("zzz", "click")])
    with pytest.raises(DataError, match="unknown action"):
        tok.encode([("a", "dance")])


def test_leave_one_out_split():
    split = leave_one_out({"u1": as_events(["a", "b", "c", "a"]), "u2": as_events(["c", "b", "a"])})
    assert split.train["u1"] == [("a", "purchase"), ("b", "purchase")]
    assert split.validation[0].target == "c" and split.validation[0].history == (("a", "purchase"), ("b", "purchase"))
    assert split.test[0].target == "a" and len(split.test[0].history) == 3
    assert split.test[1].target == "a" and split.validation[1].target == "b"
    with pytest.raises(DataError):
        leave_one_out({"u": as_events(["a", "b"])})


def test_windows_batches_and_weights():
    tok = tokenizer()
    seqs = {"u1": [("a", "click"), ("b", "like"), ("c", "click")], "u2": [("c", "like")]}
    data = TokenWindows(seqs, tok, window_events=2, sid_weight=1.0, action_weight=0.25)
    batches = list(data.batches(batch_size=8, rng=np.random.default_rng(0)))
    assert len(batches) == 1
    b = batches[0]
    assert b.inputs.shape == (2, 8)
    rows = {int(r[1]): r for r in torch.cat([b.inputs, b.targets], 1)}
    # shift by one: targets are inputs moved left
    for i in range(2):
        n = int((b.weights[i] > 0).sum())
        assert torch.equal(b.inputs[i, 1:n], b.targets[i, : n - 1])
        assert b.inputs[i, 0] == VOCAB.BOS
    short = b.inputs[:, 5] == VOCAB.PAD
    assert short.sum() == 1  # u2's one event is 4 input tokens, padded to 8
    w = b.weights[short.nonzero()[0, 0]]
    assert w.tolist() == [1, 1, 1, 0.25, 0, 0, 0, 0]
    assert b.num_tokens == 12
    logits = torch.zeros(2, 8, VOCAB.size, requires_grad=True)
    loss = weighted_cross_entropy(logits, b)
    assert loss.item() == pytest.approx(np.log(VOCAB.size), rel=1e-5)
    assert rows  # non-empty


def test_long_history_windows_vary_and_keep_group_alignment():
    tok = tokenizer()
    seqs = {"u": [("abc"[i % 3], "click") for i in range(10)]}
    data = TokenWindows(seqs, tok, window_events=3)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(30):
        (w,) = data.windows(rng)
        assert len(w) == 1 + 3 * 4
        assert all(VOCAB.is_action(t) for t in w[4::4])
        seen.add(tuple(w))
    assert len(seen) > 1


def test_load_split(tmp_path):
    (tmp_path / "sequences.txt").write_text("1 5 6 7 8\n2 9 5 6\n")
    raw, split = load_split(tmp_path)
    assert raw == {"1": ["5", "6", "7", "8"], "2": ["9", "5", "6"]}
    assert [c.target for c in split.test] == ["8", "6"]
    with pytest.raises(DataError):
        load_split(tmp_path / "missing")


def test_level_cross_entropy_normalises_within_the_target_type():
    from trainer.data import level_cross_entropy, token_spans
    from trainer.model import ModelConfig, Transformer

    tok = tokenizer()
    data = TokenWindows({"u": [("a", "click"), ("c", "like")]}, tok, window_events=2, action_weight=0.5)
    (batch,) = list(data.batches(4, np.random.default_rng(0)))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=16, d_model=8, n_layers=1, n_heads=2,
                                    dropout=0.0))
    hidden = model.hidden(batch.inputs)
    loss = level_cross_entropy(model, hidden, batch, token_spans(VOCAB))
    logits = model.logits(hidden)[0]
    expected, wsum = 0.0, 0.0
    for pos, target in enumerate(batch.targets[0].tolist()):
        w = float(batch.weights[0, pos])
        if w == 0:
            continue
        span = next(s for s in token_spans(VOCAB) if target in s)
        logp = torch.log_softmax(logits[pos, span.start:span.stop], -1)[target - span.start]
        expected += -float(logp.detach()) * w
        wsum += w
    assert loss.item() == pytest.approx(expected / wsum, rel=1e-5)
    loss.backward()
    assert model.tok_emb.weight.grad.abs().sum() > 0
