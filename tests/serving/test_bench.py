import pytest

from serving.bench import batch_counters, breakdown, parse_server_timing, summarise


def test_server_timing_and_breakdown():
    timing = parse_server_timing("feast;dur=1.5, generate;dur=20.25, replica;dur=23, junk;dur=x")
    assert timing == {"feast": 1.5, "generate": 20.25, "replica": 23.0}
    result = summarise([30.0, 40.0, 50.0], [timing] * 3, failures=1, seconds=2.0, statuses={200: 3, 503: 1})
    assert result["rps"] == 1.5 and result["failed"] == 1 and result["p50_ms"] == 40.0
    assert breakdown(result) == {"feast_read": 1.5, "generation": 20.25, "rest": pytest.approx(18.25),
                                 "end_to_end_p50": 40.0}


def test_batch_counters_from_metrics_text():
    text = "# HELP x\nsidstream_serving_batch_size_sum 24.0\nsidstream_serving_batch_size_count 3.0\nother 1\n"
    assert batch_counters(text) == (24.0, 3.0)


@pytest.mark.slow
def test_closed_loop_against_a_real_http_server(tmp_path):
    """The load generator's own HTTP client against the API under uvicorn (no Ray)."""
    import asyncio
    import threading
    import time

    import uvicorn

    from deploy.localstack import free_port
    from serving.app import LocalBackend, create_app
    from serving.bench import closed_loop
    from serving.service import RecommenderService
    from serving.settings import ServingSettings
    from tests.serving.serving_world import VOCAB, DictSequences, make_trie, publish

    settings = ServingSettings(follow_updates=False, beam_size=4)
    service = RecommenderService(VOCAB, make_trie(20), DictSequences(), settings)
    publish(tmp_path / "m")
    service.load_model(tmp_path / "m")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, LocalBackend(service)), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        url = f"http://127.0.0.1:{port}/recommend"
        result = asyncio.run(closed_loop(url, lambda n: {"user_id": f"u{n % 3}", "k": 3}, 2, 1.0, warmup_s=0.2))
        bad = asyncio.run(closed_loop(url, lambda n: {"user_id": "u", "k": 0}, 1, 0.3, warmup_s=0.0))
    finally:
        server.should_exit = True
        thread.join(10)
    assert result["requests"] > 0 and result["failed"] == 0 and result["statuses"] == {"200": result["requests"]}
    assert result["server_median_ms"]["generate"] > 0 and result["p50_ms"] > 0
    assert bad["requests"] == 0 and bad["failed"] > 0 and set(bad["statuses"]) == {"422"}
