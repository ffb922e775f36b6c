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


def test_rated_replay_merges_users_in_time_order_with_real_actions():
    from catalogue.datasets import Rating
    from streams.replay import rated_events

    ratings = [Rating("2", "5", 1, 1000, "dislike"), Rating("1", "7", 5, 1000, "love"),
               Rating("1", "3", 4, 4000, "like")]
    events = list(rated_events(ratings, speedup=1000.0, start_ts=50.0))
    assert [(e.user_id, e.item_id, e.action) for e in events] == [("1", "7", "love"), ("2", "5", "dislike"),
                                                                  ("1", "3", "like")]
    assert [e.ts for e in events] == [50.0, 50.0, 53.0]  # the real gaps divided by the speed-up
    assert [e.event_id for e in events] == ["ml:1:7", "ml:2:5", "ml:1:3"]
    assert len(list(rated_events(ratings, limit=2))) == 2
    import pytest
    with pytest.raises(ValueError, match="speedup"):
        list(rated_events(ratings, speedup=0))


def test_at_event_time_waits_for_each_events_time():
    from streams.replay import at_event_time
    from streams.schemas import InteractionEvent

    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    events = [InteractionEvent(event_id=str(k), user_id="u", item_id="i", action="like", ts=ts)
              for k, ts in enumerate([99.0, 101.5, 101.5, 104.0])]
    assert [e.event_id for e in at_event_time(events, clock=lambda: now[0], sleep=sleep)] == ["0", "1", "2", "3"]
    assert slept == [1.5, 2.5]
