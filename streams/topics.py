"""Creating sidstream's topics with the right shape (adapter: Kafka admin)."""
from __future__ import annotations

from streams.settings import StreamSettings
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError


def topic_specs(settings: StreamSettings) -> dict[str, dict]:
    """Name -> partitions and configs. Interactions and training are partitioned by user; `items` has one
    partition because SID assignment must have a single writer (two writers could hand two new items the same
    collision suffix); `catalogue` is compacted: the latest SID per item is the source every trie rebuilds from."""
    t = settings.topics
    return {
        t.interactions: {"partitions": settings.partitions, "configs": {}},
        t.training: {"partitions": settings.partitions, "configs": {}},
        t.items: {"partitions": 1, "configs": {}},
        t.catalogue: {"partitions": 1, "configs": {"cleanup.policy": "compact"}},
        t.model_updates: {"partitions": 1, "configs": {}},
        t.dead_letters: {"partitions": 1, "configs": {}},
    }


def ensure_topics(settings: StreamSettings, names: list[str] | None = None) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left as they are."""
    specs = topic_specs(settings)
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="sidstream-topics")
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in (names or specs) if n not in existing]
        created = []
        for name in wanted:
            spec = specs[name]
            try:
                admin.create_topics([NewTopic(name, num_partitions=spec["partitions"], replication_factor=1,
                                              topic_configs=spec["configs"])])
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
