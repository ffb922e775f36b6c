"""The Feast feature repository of sidstream: `feast apply` reads this file.

One entity (the user), one feature view holding each user's token window, written only through a push source
by the stream workers (online, in micro-batches), and one feature service that serving reads.
"""
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
from feast.types import Array, Int64
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING,
              description="a user of the recommender")

# A push source needs a batch source for the offline side; the online store is what sidstream reads.
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
    ],
    online=True,
    source=user_sequence_push,
)

user_sequence_service = FeatureService(name="user_sequence_service", features=[user_sequence])
