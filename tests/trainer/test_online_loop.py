"""OnlineLoop over an in-memory partitioned log (a plain fake of the Kafka source: pure-logic test)."""
import json

import numpy as np
import pytest
import torch

from catalogue.trie import SidTrie
from catalogue.vocab import Vocabulary
from streams.schemas import training_example_json
from trainer.model import ModelConfig, Transformer
from trainer.model_registry import ModelRegistry
from trainer.online import OnlineConfig, OnlineLoop, OnlineTrainer, Record

VOCAB = Vocabulary(levels=2, codes_per_level=8, suffix_size=4, version="tinyvocab0000001")
WINDOW = 4


class Crash(Exception):
    pass


class MemoryLog:
    """Partitions of records; a consumer position per partition; commits recorded; optional crash after N polls."""

    def __init__(self, partitions: dict[int, list[bytes]], crash_after_polls: int | None = None):
        self.partitions = partitions
        self.position = {p: 0 for p in partitions}
        self.committed: dict[str, int] = {}
        self.polls = 0
        self.crash_after_polls = crash_after_polls

    def seek(self, offsets):
        for key, offset in offsets.items():
            self.position[int(key.split(":")[1])] = offset

    def poll(self, max_records, timeout_s):
        self.polls += 1
        if self.crash_after_polls is not None and self.polls > self.crash_after_polls:
            raise Crash()
        out = []
        for p in sorted(self.partitions):  # a few records from each partition in turn
            while len(out) < max_records and self.position[p] < len(self.partitions[p]):
                o = self.position[p]
                out.append(Record("training", p, o, self.partitions[p][o]))
                self.position[p] += 1
                if len(out) % 3 == 0:
                    break
        return out

    def commit(self, offsets):
        self.committed.update(offsets)


def world():
    rng = np.random.default_rng(0)
    sids = [(a, b, c) for a in range(8) for b in range(8) for c in range(4)]
    trie = SidTrie(VOCAB)
    for i, j in enumerate(rng.choice(len(sids), size=20, replace=False)):
        trie.insert(f"i{i}", sids[j])
    return trie


def model(seed=0):
    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=VOCAB.size, max_len=1 + (WINDOW + 1) * 4, d_model=32, n_layers=2,
                                   n_heads=2, dropout=0.0))


def stream(trie, n_users=6, events=6):
    partitions: dict[int, list[bytes]] = {0: [], 1: []}
    rng = np.random.default_rng(1)
    for u in range(n_users):
        toks = []
        for e in range(events):
            item = f"i{int(rng.integers(0, 20))}"
            toks = (toks + VOCAB.sid_to_tokens(trie.codes_of(item)) + [VOCAB.action_token("purchase")])[-WINDOW * 4:]
            partitions[u % 2].append(training_example_json(f"u{u}", toks, f"u{u}-e{e}", e + 1, 1000 * e, None,
                                                           1000 * e + 5))
    return partitions


def make_loop(tmp_path, source, trie):
    config = OnlineConfig(window_events=WINDOW, micro_batch=4, publish_every_steps=3, publish_every_s=1e9,
                          gate_min_events=4, gate_tolerance=1.0, beam=10)
    trainer = OnlineTrainer(model(), VOCAB, trie, config)
    announced = []
    loop = OnlineLoop(trainer, ModelRegistry(tmp_path), source, announce=announced.append, catalogue_version="cat",
                      checkpoint_every_steps=2, record_event_ids=True, log=lambda line: None)
    return loop, announced


@pytest.mark.slow
def test_crash_and_resume_trains_every_record_exactly_once_in_partition_order(tmp_path):
    trie = world()
    partitions = stream(trie)
    first = MemoryLog(partitions, crash_after_polls=7)
    loop, announced = make_loop(tmp_path, first, trie)
    assert not loop.resume()
    with pytest.raises(Crash):
        loop.run()
    reg = ModelRegistry(tmp_path)
    assert reg.checkpoint() is not None and announced  # it checkpointed and published before the crash
    ckpt_offsets = json.loads((reg.checkpoint() / "manifest.json").read_text())["checkpoint_state"]["offsets"]
    assert first.committed == ckpt_offsets  # nothing is committed beyond what a checkpoint holds
    assert sum(ckpt_offsets.values()) < sum(len(v) for v in partitions.values())

    second = MemoryLog(partitions)
    loop2, announced2 = make_loop(tmp_path, second, trie)
    assert loop2.resume()
    assert loop2.trainer.step > 0
    loop2.run(idle_exit_s=0.0, poll_s=0.0)
    ledger = json.loads((reg.checkpoint() / "ledger.json").read_text())
    for p, records in partitions.items():
        mine = [row for row in ledger if row[1] == p]
        assert [row[2] for row in mine] == list(range(len(records)))  # every offset once, in order
        assert [row[3] for row in mine] == [json.loads(r)["event_id"] for r in records]
    assert loop2.trainer.events == sum(len(v) for v in partitions.values())
    assert second.committed == {"training:0": len(partitions[0]), "training:1": len(partitions[1])}
    exported = json.loads((tmp_path / "online_metrics.json").read_text())
    assert exported["events"] == loop2.trainer.events and 0 <= exported["rolling"]["recall@10"] <= 1
    versions = reg.versions()
    manifests = [reg.manifest(v) for v in versions]
    assert all(m["metrics"]["prequential"]["events"] >= 4 for m in manifests)
    assert [m["parent"] for m in manifests[1:]] == versions[:-1]  # one lineage across the restart
    assert manifests[-1]["offsets"] and manifests[-1]["catalogue_version"] == "cat"


def test_gate_refusal_publishes_nothing_and_is_logged(tmp_path):
    trie = world()
    reg = ModelRegistry(tmp_path)
    seed = reg.publish(model(), VOCAB, step=0, metrics={"prequential": {"recall@10": 1.0, "events": 100}})
    lines = []
    config = OnlineConfig(window_events=WINDOW, micro_batch=4, publish_every_steps=2, gate_min_events=4,
                          gate_tolerance=0.05, gate_z=0.0, beam=10)  # z=0: the plain tolerance rule
    loop = OnlineLoop(OnlineTrainer(model(), VOCAB, trie, config), reg, MemoryLog(stream(trie)),
                      announce=lambda d: None, log=lines.append)
    loop.run(idle_exit_s=0.0, poll_s=0.0)
    assert reg.versions() == [seed["version"]]
    assert loop.refused and any("gate refused" in line and "below" in line for line in lines)


def test_invalid_records_are_skipped_but_their_offsets_advance(tmp_path):
    trie = world()
    partitions = {0: [b"not json", b'{"schema_version": 1}'] + stream(trie, 1, 3)[0]}
    source = MemoryLog(partitions)
    loop, _ = make_loop(tmp_path, source, trie)
    loop.run(idle_exit_s=0.0, poll_s=0.0)
    assert loop.invalid == 2 and loop.trainer.events == 3
    assert source.committed == {"training:0": 5}


def test_each_published_version_is_handed_to_the_hook_before_its_announcement_and_a_failing_hook_does_not_stop_it(
        tmp_path):
    trie = world()
    order, lines = [], []

    def hook(model_, version):
        order.append(("hook", version))
        if len(order) == 1:
            raise OSError("qdrant unreachable")

    config = OnlineConfig(window_events=WINDOW, micro_batch=4, publish_every_steps=3, publish_every_s=1e9,
                          gate_min_events=4, gate_tolerance=1.0, beam=10)
    reg = ModelRegistry(tmp_path)
    loop = OnlineLoop(OnlineTrainer(model(), VOCAB, trie, config), reg, MemoryLog(stream(trie)),
                      announce=lambda path: order.append(("announce", path.name)), log=lines.append,
                      before_announce=hook)
    loop.run(idle_exit_s=0.0, poll_s=0.0)
    assert len(loop.published) >= 2
    expected = [entry for version in loop.published for entry in (("hook", version), ("announce", version))]
    assert order == expected
    assert any("qdrant unreachable" in line for line in lines)
