"""Scrape-side parsing of the monitor."""
import pytest

from deploy.monitor.prometheus import parse_targets


def test_scrape_targets_are_parsed_with_clear_errors():
    assert parse_targets("worker=http://a:1/metrics, serving=https://b/metrics") == {
        "worker": "http://a:1/metrics", "serving": "https://b/metrics"}
    assert parse_targets("") == {}
    with pytest.raises(ValueError, match="name=http"):
        parse_targets("worker:9101")
