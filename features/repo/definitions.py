"""The Feast feature repository of sidstream: `feast apply` reads this file.

One entity (the user), one feature view holding each user's token window, and one feature service that serving
reads. The view is written two ways: the stream workers push rows (online, in micro-batches), and
`sidstream backfill` writes users' logged pasts to the batch source's parquet file and materialises them.
"""
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Int64, String
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="a user of the recommender")

# The offline side: `sidstream backfill` writes the logged pasts here; `feast materialize` loads them.
user_sequence_batch = FileSource(
    name="user_sequence_batch",
    path=str(Path(__file__).parent / "data" / "user_sequence.parquet"),
    timestamp_field="event_timestamp",
)

user_sequence_push = PushSource(name="user_sequence_push", batch_source=user_sequence_batch)

user_sequence = FeatureView(
    name="user_sequence",
    entities=[user],
    ttl=timedelta(0),  # never expires: a user's history stays valid until new events replace it
    schema=[
        Field(name="tokens", dtype=Array(Int64)),
        Field(name="event_count", dtype=Int64),
        Field(name="last_event_ms", dtype=Int64),
        Field(name="pushed_ms", dtype=Int64),
        Field(name="recent_event_ids", dtype=Array(String)),
    ],
    online=True,
    source=user_sequence_push,
)

user_sequence_service = FeatureService(name="user_sequence_service", features=[user_sequence])
