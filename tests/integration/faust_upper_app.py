"""A tiny faust-streaming app used by test_faust_agent: one agent turns one topic into another."""
import os

import faust

app = faust.App(
    os.environ["FAUST_TEST_APP_ID"],
    broker=f"kafka://{os.environ['FAUST_TEST_BROKER']}",
    datadir=os.environ["FAUST_TEST_DATADIR"],
    topic_partitions=1,
    web_enabled=False,
    value_serializer="json",
)
source = app.topic(os.environ["FAUST_TEST_SOURCE"])
sink = app.topic(os.environ["FAUST_TEST_SINK"])


@app.agent(source)
async def shout(events):
    async for event in events:
        await sink.send(key=str(event["n"]), value={"n": event["n"], "text": event["text"].upper()})
