"""Make Faust's offset commit wait for every message produced before it (table changelog writes included).

Why this exists: the worker's guarantee (a SIGKILL or a rebalance loses no append) rests on one ordering,
"a changelog write reaches Kafka before the offset of the event that caused it is committed". In
faust-streaming 0.15.3 that ordering does not hold:

- at_least_once: before committing, the consumer calls `ProducerBuffer.flush()`, which gives up as soon as
  0.1 s pass without a message leaving the buffer, and counts a message as gone once it is taken off the
  queue, before the driver has accepted it. Under load the commit then goes ahead with changelog writes
  still in the buffer; a SIGKILL loses them while their events count as processed.
- exactly_once: `TransactionManager.commit` commits the transaction without flushing the buffer at all, so
  buffered changelog writes land in the *next* transaction, which a crash aborts; nor does it flush the plain
  producer that carries messages to topics the consumer does not read.

`install()` replaces those two steps with versions that wait until the buffer is empty and the message in
flight has been handed to the Kafka driver. It is idempotent and checks the Faust internals it relies on, so
a Faust upgrade that moves them fails loudly at start-up instead of silently losing data.
"""
from __future__ import annotations

import asyncio
from faust.transport import producer as producer_module
from faust.transport.consumer import TransactionManager

FLUSH_POLL_S = 0.05
_MARK = "_sidstream_commit_waits_for_flush"


class FaustInternalsChanged(RuntimeError):
    pass


def install() -> None:

    buffer_cls = producer_module.ProducerBuffer
    if getattr(buffer_cls, _MARK, False):
        return
    for owner, name in ((buffer_cls, "_send_pending"), (buffer_cls, "flush"), (TransactionManager, "commit")):
        if not asyncio.iscoroutinefunction(getattr(owner, name, None)):
            raise FaustInternalsChanged(f"faust {owner.__name__}.{name} is no longer a coroutine function; "
                                        "re-check streams/faust_commit.py against this Faust version")

    send_pending = buffer_cls._send_pending
    transaction_commit = TransactionManager.commit

    async def _send_pending(self, fut) -> None:
        # counted until the driver has the message: the queue is already empty while it is in here
        self._sidstream_in_flight = getattr(self, "_sidstream_in_flight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._sidstream_in_flight -= 1

    async def flush(self) -> None:
        """Wait until every buffered message has been handed to the driver (no time limit: a commit must
        not overtake them). A stopped producer with messages left raises, as Faust's own flush does."""
        while self.size or getattr(self, "_sidstream_in_flight", 0):
            if self.state != "running":
                raise RuntimeError(f"Cannot flush: producer buffer is {self.state} with {self.size} messages left")
            self.message_sent.clear()
            try:
                await asyncio.wait_for(self.message_sent.wait(), timeout=FLUSH_POLL_S)
            except asyncio.TimeoutError:
                pass

    async def commit(self, offsets, start_new_transaction: bool = True) -> bool:
        # the buffer's messages belong to the transaction whose offsets are being committed; flushing the whole
        # producer (buffer, plain driver, transactional drivers) also covers messages sent to topics the consumer
        # does not read (e.g. `training`), which Faust routes to the plain, non-transactional driver
        await self.producer.flush()
        return await transaction_commit(self, offsets, start_new_transaction=start_new_transaction)

    buffer_cls._send_pending = _send_pending
    buffer_cls.flush = flush
    TransactionManager.commit = commit
    setattr(buffer_cls, _MARK, True)
