"""The interactions agent's batches: each event is made current for Faust's table writes."""
from faust.streams import current_event

from streams.worker import make_current


class Event:  # weak-referenceable stand-in: make_current only keeps a reference
    pass


def test_make_current_sets_the_event_faust_tables_read():
    event = Event()
    make_current(event)
    assert current_event() is event
