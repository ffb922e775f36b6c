"""The fetch settings reach the consumer Faust builds (Faust 0.15.3 hard-codes a 1.5 s fetch wait)."""
import asyncio

import faust
import pytest

from streams import faust_fetch


def _worker_consumer():
    app = faust.App("sidstream-test-fetch", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.topic("interactions")

    async def build():  # aiokafka builds its consumer inside a running loop; nothing connects here
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        values = consumer._fetch_max_wait_ms, consumer._fetch_min_bytes
        await consumer.stop()
        return values

    return asyncio.run(build())


def test_the_worker_consumer_gets_the_configured_fetch_settings():
    faust_fetch.install(100, 1)
    assert _worker_consumer() == (100, 1)
    faust_fetch.install(250, 4096)  # installing again changes the values, it does not wrap twice
    assert _worker_consumer() == (250, 4096)
    faust_fetch.install(100, 1)


@pytest.mark.parametrize("wait_ms, min_bytes", [(-1, 1), (100, 0)])
def test_nonsense_fetch_settings_are_refused(wait_ms, min_bytes):
    with pytest.raises(ValueError, match="fetch_max_wait_ms"):
        faust_fetch.install(wait_ms, min_bytes)
