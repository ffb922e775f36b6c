import pytest

from catalogue.datasets import Rating
from streams.replay import RateLimiter, amazon_events, item_events, logged_past, past_length, rated_events


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


def test_a_backfill_cut_by_time_and_the_replay_after_it_split_the_ratings_exactly():
    ratings = [Rating("1", "a", 5, 100, "love"), Rating("1", "b", 2, 200, "dislike"), Rating("2", "a", 4, 200, "like"),
               Rating("2", "c", 3, 300, "neutral"), Rating("1", "c", 4, 300, "like")]
    past = logged_past(ratings=ratings, until=200)
    stream = list(rated_events(ratings, start_ts=0, after=200))
    # the two ratings at the cut (t=200) are in the past only; every rating is on exactly one side
    assert sorted(e[0] for e in past) == ["ml:1:a", "ml:1:b", "ml:2:a"]
    assert [e.event_id for e in stream] == ["ml:1:c", "ml:2:c"]
    assert ("ml:1:b", "1", "b", "dislike", 200_000) in past
    assert len(logged_past(ratings=ratings)) == 5


def test_a_backfill_cut_by_position_and_the_replay_after_it_split_each_user_exactly():
    seqs = {"1": ["a", "b", "c", "d"], "2": ["x", "y"], "3": ["p"]}
    past = logged_past(sequences=seqs, share=0.5)
    stream = list(amazon_events(seqs, start_ts=0, after_share=0.5))
    assert sorted(e[0] for e in past) == ["1:0", "1:1", "2:0"]  # round(0.5 * 1) is 0: user 3 is all stream
    assert sorted(e.event_id for e in stream) == ["1:2", "1:3", "2:1", "3:0"]
    assert {e[0] for e in past} | {e.event_id for e in stream} == {e.event_id for e in amazon_events(seqs)}
    assert all(e[4] == 0 for e in past)  # Amazon events have no times


def test_a_cut_that_does_not_fit_the_data_is_refused():
    with pytest.raises(ValueError, match="share"):
        logged_past(ratings=[Rating("1", "a", 5, 100, "love")], share=0.5)
    with pytest.raises(ValueError, match="until"):
        logged_past(sequences={"1": ["a"]}, until=5)
    with pytest.raises(ValueError, match="within"):
        logged_past(sequences={"1": ["a"]}, share=1.5)
    assert past_length(10, 0.7) == 7
