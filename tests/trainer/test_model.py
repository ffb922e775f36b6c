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
    full = model.hidden(tokens)
    last, cache = model.prefill(tokens[:, :5])
    assert cache.length == 5
    beams = cache.expand(1)  # one beam per row: plain incremental decoding
    steps = torch.cat([model.decode(tokens[:, t : t + 1], beams) for t in range(5, 12)], dim=1)
    assert beams.beam_length == 7
    assert torch.allclose(last, full[:, 4], atol=1e-5)
    assert torch.allclose(steps, full[:, 5:], atol=1e-5)
    several = model.decode(tokens[:, 5:8], cache.expand(1))  # several tokens in one call, causal among them
    assert torch.allclose(several, full[:, 5:8], atol=1e-5)


def test_left_padding_matches_unpadded_rows_and_beams():
    model = tiny()
    short = torch.randint(1, 37, (1, 6))
    long = torch.randint(1, 37, (1, 9))
    batch = torch.zeros(2, 9, dtype=torch.long)
    batch[0, 3:] = short
    batch[1] = long
    valid = batch != 0
    valid[1] = True
    last, cache = model.prefill(batch, valid)
    assert torch.allclose(last[0], model.hidden(short)[0, -1], atol=1e-5)
    assert torch.allclose(last[1], model.hidden(long)[0, -1], atol=1e-5)
    # one step of two beams per row equals decoding each row alone
    nxt = torch.tensor([[5], [7], [9], [11]])
    step = model.decode(nxt, cache.expand(2))
    for row, history in enumerate([short, short, long, long]):
        alone = model.hidden(torch.cat([history, nxt[row : row + 1]], 1))[0, -1]
        assert torch.allclose(step[row, 0], alone, atol=1e-5), row


def test_prefill_runs_the_last_block_for_the_last_position_alone_and_caches_every_position():
    model = tiny()
    tokens = torch.randint(1, 37, (3, 10))
    valid = torch.ones(3, 10, dtype=torch.bool)
    valid[0, :4] = False
    seen = []
    hook = model.blocks[-1].mlp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    last, cache = model.prefill(tokens, valid)
    hook.remove()
    assert seen == [(3, 1, 32)] and last.shape == (3, 32)
    # the padded batch caches exactly what each row alone caches, at its real positions
    for row in range(3):
        real = tokens[row : row + 1][:, valid[row]]
        alone_last, alone = model.prefill(real)
        assert torch.allclose(last[row], alone_last[0], atol=1e-5)
        assert torch.allclose(last[row], model.hidden(real)[0, -1], atol=1e-5)
        for a, b in zip(cache.keys + cache.values, alone.keys + alone.values):
            assert torch.allclose(a[row][:, valid[row]], b[0], atol=1e-5)
        assert int(cache.next_position[row]) == int(alone.next_position[0]) == int(valid[row].sum())
        assert torch.allclose(cache.event_sum[row], alone.event_sum[0], atol=1e-6)


def test_expanded_cache_select_can_keep_fewer_beams_per_user():
    model = tiny()
    prefix = torch.randint(1, 37, (2, 6))
    _, cache = model.prefill(prefix)
    beams = cache.expand(3)
    beam_tokens = torch.randint(1, 37, (6, 1))  # rows: user 0 beams 0-2, user 1 beams 0-2
    model.decode(beam_tokens, beams)
    kept_rows = [1, 2, 3, 5]  # user 0: beams 1, 2; user 1: beams 0, 2
    kept = beams.select(torch.tensor(kept_rows), group=2)
    nxt = torch.randint(1, 37, (4, 1))
    step = model.decode(nxt, kept)
    for row, source in enumerate(kept_rows):  # equals the same three tokens decoded alone
        user = source // 3
        alone = torch.cat([prefix[user], beam_tokens[source], nxt[row]])[None]
        assert torch.allclose(step[row, 0], model.hidden(alone)[0, -1], atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        beams.select(torch.tensor([1, 2, 3]), group=2)
    with pytest.raises(ValueError, match="expand"):
        cache.select(torch.tensor([0, 1]), group=1)  # the unexpanded prefix cache has no beam groups
    with pytest.raises(ValueError, match="expand"):
        model.decode(nxt[:2], cache)  # decoding extends beams, never the prefill's prefix
    with pytest.raises(ValueError, match="already expanded"):
        beams.expand(2)


def test_too_long_stream_is_rejected():
    model = tiny()
    with pytest.raises(ValueError, match="max_len"):
        model(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        model.prefill(torch.ones(1, 41, dtype=torch.long))
    _, cache = model.prefill(torch.ones(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        model.decode(torch.ones(1, 1, dtype=torch.long), cache.expand(1))


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
    _, cache = model.prefill(batch, valid)
    beams = cache.expand(3)  # rows: user0 x3, user1 x3
    first = torch.tensor([[5], [6], [7], [8], [9], [10]])
    model.decode(first, beams)
    # reorder within each user's group, then decode two more tokens
    parents = torch.tensor([2, 2, 0, 4, 3, 3])
    beams = beams.select(parents)
    second = torch.tensor([[11], [12], [13], [14], [15], [16]])
    model.decode(second, beams)
    third = torch.tensor([[17], [18], [19], [20], [21], [22]])
    out = model.logits(model.decode(third, beams))[:, -1]
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
    full = model.hidden(tokens)
    for cut in (3, 6, 8, 9):  # inside an event, right after an end, ...
        last, cache = model.prefill(tokens[:, :cut])
        beams = cache.expand(1)
        tail = torch.cat([model.decode(tokens[:, t : t + 1], beams) for t in range(cut, tokens.shape[1])], 1)
        assert torch.allclose(full[:, cut - 1], last, atol=1e-5), cut
        assert torch.allclose(full[:, cut:], tail, atol=1e-5), cut


def test_parameter_names_are_those_of_saved_models():
    names = set(tiny().state_dict())
    block = {"norm1.weight", "attn.qkv.weight", "attn.proj.weight", "norm2.weight", "mlp.up.weight", "mlp.down.weight"}
    expected = {"tok_emb.weight", "pos_emb.weight", "event_emb.weight", "norm.weight", "head.weight"}
    expected |= {f"blocks.{i}.{name}" for i in range(2) for name in block}
    assert names == expected


def test_models_saved_without_event_context_still_load():
    data = tiny().config.to_json()
    assert data["event_ends"] == list(EVENT_ENDS)
    del data["event_ends"]
    model = Transformer(ModelConfig.from_json(data))
    assert not hasattr(model, "event_emb")
    assert model(torch.randint(0, 37, (1, 5))).shape == (1, 5, 37)


ITEM_SIDS = torch.tensor([[3, 4], [6, 7], [8, 9]])  # three trained items of two SID tokens each


def with_items(**kw):
    model = tiny(dense_items=3, sid_length=2, item_input=True, **kw)
    model.item_sid_tokens.copy_(ITEM_SIDS)
    torch.nn.init.normal_(model.item_residual.weight)  # trained rows (a fresh model's are zero)
    return model


def test_item_input_adds_each_closed_items_residual_row_at_its_end_token():
    model = with_items()
    # items 0, 1, an unknown SID (a new item), item 2; the event ends are 2 and 5
    tokens = torch.tensor([[1, 3, 4, 2, 6, 7, 5, 12, 13, 2, 8, 9, 5]])
    added = model._item_input(tokens)[0]
    expected = torch.zeros_like(added)
    expected[3], expected[6], expected[12] = model.item_residual.weight[[0, 1, 2]]
    assert torch.allclose(added, expected)
    # an item's row changes what the model reads from its end token on, and nothing before it
    before = model.hidden(tokens)
    with torch.no_grad():
        model.item_residual.weight[1] += 1.0
    after = model.hidden(tokens)
    assert torch.allclose(before[0, :6], after[0, :6], atol=1e-6)
    assert not torch.allclose(before[0, 6:], after[0, 6:], atol=1e-4)


def test_item_input_follows_a_changed_item_table():
    model = with_items()
    tokens = torch.tensor([[1, 12, 13, 2]])
    assert not model._item_input(tokens).abs().sum()
    model.item_sid_tokens[0] = torch.tensor([12, 13])  # the row now names another item: looked up afresh
    assert torch.allclose(model._item_input(tokens)[0, 3], model.item_residual.weight[0])


def test_item_input_in_padded_prefill_equals_each_row_alone_and_decode_takes_sid_tokens_only():
    model = with_items()
    short = torch.tensor([[1, 6, 7, 5]])
    long = torch.tensor([[1, 3, 4, 2, 8, 9, 2]])
    batch = torch.zeros(2, 7, dtype=torch.long)
    batch[0, 3:], batch[1] = short, long
    valid = torch.ones(2, 7, dtype=torch.bool)
    valid[0, :3] = False
    last, cache = model.prefill(batch, valid)
    assert torch.allclose(last[0], model.hidden(short)[0, -1], atol=1e-5)
    assert torch.allclose(last[1], model.hidden(long)[0, -1], atol=1e-5)
    beams = cache.expand(1)
    model.decode(torch.tensor([[3], [6]]), beams)
    with pytest.raises(ValueError, match="SID tokens"):
        model.decode(torch.tensor([[2], [5]]), beams)


def test_item_input_needs_the_dense_head_and_old_models_load_without_it():
    with pytest.raises(ValueError, match="item_input"):
        tiny(item_input=True)
    data = with_items().config.to_json()
    del data["item_input"]
    assert ModelConfig.from_json(data).item_input is False


def test_attention_weights_are_the_causal_maps_the_blocks_apply():
    model = tiny()
    tokens = torch.randint(0, 37, (2, 12))
    maps = model.attention_weights(tokens)
    assert maps.shape == (2, 2, 4, 12, 12)  # layers, batch, heads, query, key
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, 4, 12), atol=1e-5)
    assert torch.all(maps.triu(diagonal=1) == 0)
    seen = {}
    hook = model.blocks[1].attn.register_forward_hook(lambda m, inputs, out: seen.update(x=inputs[0], out=out))
    model.hidden(tokens)
    hook.remove()
    _, _, v = model.blocks[1].attn._heads(seen["x"])
    assert torch.allclose(model.blocks[1].attn._out(maps[1] @ v), seen["out"], atol=1e-5)
