from streams.replay import RateLimiter, amazon_events, item_events


def test_amazon_replay_interleaves_users_and_keeps_each_users_order():
    seqs = {"1": ["a", "b", "c"], "2": ["x"], "3": ["p", "q"]}
    events = list(amazon_events(seqs, start_ts=0))
    assert [(e.user_id, e.item_id) for e in events] == [("1", "a"), ("2", "x"), ("3", "p"), ("1", "b"),
                                                        ("3", "q"), ("1", "c")]
    assert len({e.event_id for e in events}) == 6
    assert all(e.action == "purchase" for e in events)
    assert [e.ts for e in events] == sorted(e.ts for e in events)


def test_amazon_replay_limit():
    seqs = {"1": ["a", "b", "c"], "2": ["x"]}
    assert len(list(amazon_events(seqs, limit=2))) == 2


def test_item_events_accept_catalogue_rows():
    rows = [{"item_id": 7, "title": None, "categories": ["Beauty"], "price": None}]
    (ev,) = item_events(rows, ts=1.0)
    assert ev.item_id == "7" and ev.title == "" and ev.categories == ["Beauty"]


def test_rate_limiter_paces_without_real_sleep():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert abs(now[0] - 0.5) < 1e-9 and len(slept) == 5
    unpaced = RateLimiter(0, clock=lambda: 0.0, sleep=lambda s: slept.append(("bad", s)))
    unpaced.wait()
    assert ("bad", 0) not in slept and len(slept) == 5
