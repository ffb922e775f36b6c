import pytest
import torch

from trainer.model import ModelConfig, Transformer


EVENT_ENDS = (2, 5, 11, 17, 30)  # random streams of 37 tokens hit these often: events of a few tokens


def tiny(**kw):
    torch.manual_seed(0)
    kw.setdefault("event_ends", EVENT_ENDS)
    cfg = ModelConfig(vocab_size=37, max_len=40, d_model=32, n_layers=2, n_heads=4, dropout=0.0, **kw)
    return Transformer(cfg).eval()


def test_shapes_and_backward():
    model = tiny()
    model.train()
    tokens = torch.randint(0, 37, (3, 11))
    logits = model(tokens)
    assert logits.shape == (3, 11, 37)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 37), tokens.roll(-1, 1).reshape(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert model.tok_emb.weight.grad.abs().sum() > 0


def test_head_is_tied():
    model = tiny()
    assert model.head.weight.data_ptr() == model.tok_emb.weight.data_ptr()


def test_causal_future_tokens_do_not_change_past():
    model = tiny()
    a = torch.randint(0, 37, (1, 10))
    b = a.clone()
    b[0, 7:] = (b[0, 7:] + 1) % 37
    la, lb = model(a), model(b)
    assert torch.allclose(la[0, :7], lb[0, :7], atol=1e-5)
    assert not torch.allclose(la[0, 7:], lb[0, 7:], atol=1e-3)


def test_kv_cached_decoding_equals_uncached():
    model = tiny()
    tokens = torch.randint(0, 37, (2, 12))
    full = model(tokens)
    cache = model.new_cache()
    prefix = model(tokens[:, :5], cache=cache)
    steps = [prefix] + [model(tokens[:, t : t + 1], cache=cache) for t in range(5, 12)]
    cached = torch.cat(steps, dim=1)
    assert cache.length == 12
    assert torch.allclose(full, cached, atol=1e-5)


def test_left_padding_matches_unpadded_rows_and_cache_select():
    model = tiny()
    short = torch.randint(1, 37, (1, 6))
    long = torch.randint(1, 37, (1, 9))
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0, 3:] = short
    batch[1] = long
    valid = batch != 0
    valid[1] = True
    cache = model.new_cache()
    out = model(batch, valid=valid, cache=cache)
    assert torch.allclose(out[0, 3:], model(short)[0], atol=1e-5)
    assert torch.allclose(out[1], model(long)[0], atol=1e-5)
    # one step after duplicating row 0 (as beam expansion does) equals decoding the short row alone
    nxt = torch.tensor([[5], [7], [9]])
    beams = cache.select(torch.tensor([0, 0, 1]))
    step = model(nxt, cache=beams)
    assert torch.allclose(step[0, 0], model(torch.cat([short, nxt[:1]], 1))[0, -1], atol=1e-5)
    assert torch.allclose(step[1, 0], model(torch.cat([short, nxt[1:2]], 1))[0, -1], atol=1e-5)
    assert torch.allclose(step[2, 0], model(torch.cat([long, nxt[2:]], 1))[0, -1], atol=1e-5)


def test_last_only_equals_the_last_position_and_fills_the_same_cache():
    model = tiny()
    tokens = torch.randint(1, 37, (3, 10))
    # training path (no cache, no padding)
    assert torch.allclose(model.hidden(tokens, last_only=True), model.hidden(tokens)[:, -1:], atol=1e-5)
    # left-padded rows with a cache, as the engine encodes histories
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[0, :4] = False
    full_cache, last_cache = model.new_cache(), model.new_cache()
    full = model.hidden(tokens, valid, full_cache)
    last = model.hidden(tokens, valid, last_cache, last_only=True)
    assert last.shape == (3, 1, 32)
    assert torch.allclose(last, full[:, -1:], atol=1e-5)
    for a, b in zip(full_cache.keys + full_cache.values, last_cache.keys + last_cache.values):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.equal(full_cache.next_position, last_cache.next_position)
    assert torch.allclose(full_cache.event_sum, last_cache.event_sum, atol=1e-6)
    # padding-free rows with a cache take the unmasked branch for the last query
    valid_all = torch.ones(3, 10, dtype=torch.bool)
    assert torch.allclose(model.hidden(tokens, valid_all, last_only=True), model.hidden(tokens, valid_all)[:, -1:],
                          atol=1e-5)


def test_expanded_cache_select_can_keep_fewer_beams_per_user():
    model = tiny()
    prefix = torch.randint(1, 37, (2, 6))
    cache = model.new_cache()
    model.hidden(prefix, cache=cache)
    beams = cache.expand(3)
    beam_tokens = torch.randint(1, 37, (6, 1))  # rows: user 0 beams 0-2, user 1 beams 0-2
    model.hidden(beam_tokens, cache=beams)
    kept_rows = [1, 2, 3, 5]  # user 0: beams 1, 2; user 1: beams 0, 2
    kept = beams.select(torch.tensor(kept_rows), group=2)
    nxt = torch.randint(1, 37, (4, 1))
    step = model.hidden(nxt, cache=kept)
    for row, source in enumerate(kept_rows):  # equals the same three tokens decoded alone
        user = source // 3
        alone = torch.cat([prefix[user], beam_tokens[source], nxt[row]])[None]
        assert torch.allclose(step[row, 0], model.hidden(alone)[0, -1], atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        beams.select(torch.tensor([1, 2, 3]), group=2)
    with pytest.raises(ValueError, match="expanded"):
        cache.select(torch.tensor([0, 1]), group=1)  # the unexpanded prefix cache has no beam groups
    with pytest.raises(ValueError, match="last_only"):
        model.hidden(nxt, cache=kept, last_only=True)


def test_too_long_stream_is_rejected():
    model = tiny()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 41, dtype=torch.long))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=10, d_model=30, n_heads=4)


def test_expanded_beam_cache_equals_uncached_decoding():
    model = tiny()
    short = torch.randint(1, 37, (1, 4))
    long = torch.randint(1, 37, (1, 7))
    batch = torch.zeros(2, 7, dtype=torch.long)
    batch[0, 3:] = short
    batch[1] = long
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[0, :3] = False
    cache = model.new_cache()
    model(batch, valid=valid, cache=cache)
    beams = cache.expand(3)  # rows: user0 x3, user1 x3
    first = torch.tensor([[5], [6], [7], [8], [9], [10]])
    model(first, cache=beams)
    # reorder within each user's group, then decode two more tokens
    parents = torch.tensor([2, 2, 0, 4, 3, 3])
    beams = beams.select(parents)
    second = torch.tensor([[11], [12], [13], [14], [15], [16]])
    model(second, cache=beams)
    third = torch.tensor([[17], [18], [19], [20], [21], [22]])
    out = model(third, cache=beams)[:, -1]
    assert beams.beam_length == 3 and beams.length == 7
    histories = [short, short, short, long, long, long]
    for row in range(6):
        seq = torch.cat([histories[row], first[parents[row]][None], second[row][None], third[row][None]], 1)
        assert torch.allclose(out[row], model(seq)[0, -1], atol=1e-5), row


def naive_event_context(model, tokens):
    """The event-context sums by a plain loop over one row."""
    out, running = [], torch.zeros(model.config.d_model)
    for t in tokens.tolist():
        running = running + model.event_emb.weight[t]
        out.append(running)
        if t in model.config.event_ends:
            running = torch.zeros(model.config.d_model)
    return torch.stack(out)


def test_event_context_sums_each_event_up_to_its_end_token():
    model = tiny()
    tokens = torch.tensor([[3, 4, 5, 6, 7, 2, 2, 8, 9, 10]])
    context = model._event_context(tokens)
    assert torch.allclose(context[0], naive_event_context(model, tokens[0]), atol=1e-6)
    # an earlier token of the same event changes a later token's input; a token of a closed event does not
    changed = tokens.clone()
    changed[0, 7] = 12
    assert not torch.allclose(model._event_context(changed)[0, 8], context[0, 8])
    changed = tokens.clone()
    changed[0, 3] = 12
    assert torch.allclose(model._event_context(changed)[0, 6:], context[0, 6:])


def test_event_context_is_carried_across_cached_calls_mid_event():
    model = tiny()
    tokens = torch.tensor([[1, 3, 4, 5, 6, 7, 8, 9, 2, 10, 12]])
    full = model(tokens)
    for cut in (3, 6, 8, 9):  # inside an event, right after an end, ...
        cache = model.new_cache()
        head = model(tokens[:, :cut], cache=cache)
        tail = torch.cat([model(tokens[:, t : t + 1], cache=cache) for t in range(cut, tokens.shape[1])], 1)
        assert torch.allclose(full, torch.cat([head, tail], 1), atol=1e-5), cut


def test_models_saved_without_event_context_still_load():
    data = tiny().config.to_json()
    assert data["event_ends"] == list(EVENT_ENDS)
    del data["event_ends"]
    model = Transformer(ModelConfig.from_json(data))
    assert not hasattr(model, "event_emb")
    assert model(torch.randint(0, 37, (1, 5))).shape == (1, 5, 37)
