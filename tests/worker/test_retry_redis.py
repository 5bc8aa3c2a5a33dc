"""When a lane waits for Redis, and how long between tries (issue 13): pure, no Redis."""

from __future__ import annotations

import itertools
import random

import pytest
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    DataError,
    MasterDownError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from multipair.exceptions import LocalProtocolError, RetryLater
from multipair.leases import LeaseLapsed, LeaseLost
from multipair.worker.retry import RedisBackoff, is_redis_away, redis_delays


@pytest.mark.parametrize(
    "exc",
    [
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        RedisConnectionError("Connection closed by server."),
        RedisTimeoutError("Timeout reading from socket"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        ResponseError("LOADING Redis is loading the dataset in memory"),
        MasterDownError("MASTERDOWN Link with MASTER is down"),
        ReadOnlyError("READONLY You can't write against a read only replica."),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        RetryLater("Redis is unreachable: Connection refused"),
    ],
)
def test_redis_that_cannot_serve_now_is_waited_for(exc: Exception) -> None:
    assert is_redis_away(exc)


@pytest.mark.parametrize(
    "exc",
    [
        LeaseLost("the lane's lease moved to another owner"),
        LeaseLapsed("the lane's lease lapsed"),  # the lane decides on its own rule
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ResponseError("NOGROUP No such key or consumer group"),
        NoScriptError("NOSCRIPT No matching script."),
        DataError("Invalid input"),
        LocalProtocolError("cannot move transaction"),
        TimeoutError(),  # asyncio's: a terminal that did not answer, not Redis
    ],
)
def test_an_answer_is_not_waited_for(exc: Exception) -> None:
    assert not is_redis_away(exc)


def test_pauses_double_from_50_ms_to_1_s_each_drawn_below_its_bound() -> None:
    rng = random.Random(7)
    bounds = [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    pauses = list(itertools.islice(redis_delays(RedisBackoff(), rng), len(bounds)))
    assert all(0 <= p < b for p, b in zip(pauses, bounds, strict=True)), pauses
    assert len(set(pauses)) == len(pauses)  # jittered: lanes do not come back in lockstep
    many = list(itertools.islice(redis_delays(RedisBackoff(), random.Random(1)), 1000))
    assert max(many) < 1.0
