"""Tests start Redis with the same code ``multipair up`` uses (multipair.embedded)."""

from multipair.embedded import RedisServer, RedisServerError, find_redis_server

__all__ = ["RedisServer", "RedisServerError", "find_redis_server"]
