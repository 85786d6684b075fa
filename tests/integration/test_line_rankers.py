"""The lines' ranker states in a real Redis: what the workers record, what the API reads back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_lib

from broker.line_rankers import RankerState, ranker_key, ranker_states, record_state
from partsight.testing.servers import ServerProcess, empty_database


@pytest.fixture
def client(redis: ServerProcess) -> Iterator[redis_lib.Redis]:
    with empty_database(redis, 13) as connection:
        yield connection


def test_each_workers_last_try_at_the_lines_current_edit_is_read_back(client: redis_lib.Redis) -> None:
    record_state(client, "w1", RankerState("press-3", "t1", "v1", "failed", at=1.0))
    record_state(client, "w1", RankerState("press-3", "t2", "v2", "fitted", 0.5, 20, 0.41, at=2.0))  # replaces it
    record_state(client, "w2", RankerState("press-3", "t1", "v1", "fitted", at=3.0))  # an earlier edit of the line
    record_state(client, "w1", RankerState("press-4", "t2", "v2", "none", at=4.0))
    client.hset(ranker_key("press-3"), "w3", "not json")  # another writer's: left out
    states = ranker_states(client, [("press-3", "t2"), ("press-4", "t1"), ("press-5", "t1")], now=5.0)
    assert states == {
        "press-3": [
            {
                "worker": "w1",
                "line": "press-3",
                "line_updated_at": "t2",
                "version": "v2",
                "outcome": "fitted",
                "seconds": 0.5,
                "products": 20,
                "novelty_threshold": 0.41,
                "at": 2.0,
            }
        ],
        "press-4": [],  # its one state is of another edit
        "press-5": [],
    }
    assert 0 < client.ttl(ranker_key("press-3")) <= 7 * 24 * 3600
    assert ranker_states(client, []) == {}
    assert ranker_states(client, [("press-3", "t2")], version="v3", now=3.0) == {"press-3": []}  # v2 not served
    assert len(ranker_states(client, [("press-3", "t2")], version="v2", now=3.0)["press-3"]) == 1
    a_week_on = 2.0 + 7 * 24 * 3600 + 1
    assert ranker_states(client, [("press-3", "t2")], version="v2", now=a_week_on) == {"press-3": []}  # its worker gone
