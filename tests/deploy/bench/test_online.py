"""The pure parts of `sidstream bench online` (deploy/online.py): the replay split, the shift world, recovery."""
from collections import Counter

from deploy.bench.online import replay_world
from deploy.bench.shift import recovery_events, shift_world


def test_replay_world_holds_items_back_until_the_stream_and_keeps_user_order():
    raw = {str(u): [str((u * 7 + k) % 40) for k in range(10)] for u in range(30)}
    past, stream, held = replay_world(raw, sorted(raw), cut_fraction=0.7, held_fraction=0.1)
    assert len(held) == 4
    assert not any(i in held for seq in past.values() for i in seq)
    assert {i for _, i in stream} & held  # they do arrive mid-stream
    for u, seq in raw.items():
        streamed = [i for v, i in stream if v == u]
        assert streamed == seq[7:]  # the cut, in the user's own order
    assert len(stream) == 30 * 3 and Counter(u for u, _ in stream[:30]) == Counter({u: 1 for u in raw})


def test_shift_world_changes_successors_at_the_known_event():
    emb, past, stream, shift_at = shift_world(chains=4, chain_length=8, users=50, past_events=6, stream_events=3000,
                                              shift_at=1500, follow=1.0)
    assert emb.shape == (32, 8) and all(len(s) == 6 for s in past.values())
    last = {u: int(seq[-1]) for u, seq in past.items()}
    pre_ok = post_ok = 0
    for t, (u, item) in enumerate(stream):
        item = int(item)
        plain_next = (last[u] // 8) * 8 + (last[u] % 8 + 1) % 8
        if t < shift_at:
            pre_ok += item == plain_next
        else:
            post_ok += item == plain_next
        assert item // 8 == last[u] // 8  # users never leave their chain
        last[u] = item
    assert pre_ok == shift_at and post_ok < 0.3 * (3000 - shift_at)


def test_recovery_events_counts_from_the_shift_to_the_first_recovered_bucket():
    curve = [0.5, 0.5, 0.1, 0.2, 0.46, 0.5]
    assert recovery_events(curve, 100, 200, 0.45) == 300
    assert recovery_events([0.5, 0.5, 0.1, 0.1], 100, 200, 0.45) is None
