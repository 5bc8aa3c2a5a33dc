"""A Redis Cluster with replicas on loopback: 3 masters, a replica each, short node timeout.

:class:`ReplicatedCluster` is :class:`multipair.embedded.RedisCluster` (the
one the suite and ``multipair up`` use) started with six nodes and
``--cluster-replicas 1``; ``cluster-node-timeout`` is 1000 ms so a killed
master is replaced by its replica within a few seconds. A killed node,
started again on its port and folder (its ``nodes.conf``), rejoins as a
replica of the one promoted in its place.
"""

from __future__ import annotations

import subprocess

import redis

from multipair.embedded import RedisCluster, RedisServer, RedisServerError, find_redis_cli
from tests.poll import poll_until_sync

__all__ = ["ReplicatedCluster"]

_CREATE_TIMEOUT_S = 60.0


class ReplicatedCluster(RedisCluster):
    """Three masters and three replicas (module doc)."""

    def __init__(self, *, node_timeout_ms: int = 1000) -> None:
        super().__init__(masters=6, node_timeout_ms=node_timeout_ms)

    def _create(self) -> None:
        cli = find_redis_cli()
        assert cli is not None
        args = [
            cli,
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in self.ports),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]
        done = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_CREATE_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0 or "[OK] All 16384 slots covered" not in done.stdout:
            raise RedisServerError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")

    def start(self) -> None:
        super().start()
        self.wait_replicas_linked()

    # --- who is what ----------------------------------------------------------------

    def node_on(self, port: int) -> RedisServer:
        for node in self.nodes:
            if node.port == port or getattr(node, "_requested_port", None) == port:
                return node
        raise LookupError(port)

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1.0, decode_responses=True)

    def owner_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot (asked of any live node)."""
        for port in self.ports:
            with self._client(port) as client:
                try:
                    slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
                    for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                        if int(start) <= slot <= int(end):
                            return int(master[1])
                except redis.RedisError:
                    continue
        raise RedisServerError(f"no node knows who serves {key!r}")

    def replica_of(self, master_port: int) -> int:
        """The port of a replica of the master on ``master_port``."""
        for port in self.ports:
            if port == master_port:
                continue
            with self._client(port) as client:
                try:
                    info = client.info("replication")
                except redis.RedisError:
                    continue
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master_port:
                return port
        raise RedisServerError(f"no replica of {master_port}")

    def role(self, port: int) -> str:
        with self._client(port) as client:
            try:
                return str(client.info("replication").get("role"))
            except redis.RedisError:
                return "down"

    def wait_master(self, port: int, timeout: float = 30.0) -> None:
        """Until the node on ``port`` is a master and every live node serves every slot."""
        poll_until_sync(
            lambda: self.role(port) == "master" and self._all_ok(),
            f"node {port} a serving master",
            timeout,
            error=RedisServerError,
        )

    def _all_ok(self) -> bool:
        for port in self.ports:
            with self._client(port) as client:
                try:
                    info = client.execute_command("CLUSTER", "INFO")
                except redis.RedisError:
                    return False
            if "cluster_state:ok" not in str(info):
                return False
        return True

    def wait_replicas_linked(self, timeout: float = 30.0) -> None:
        """Until every master has a replica whose link is up (a failover can promote it)."""
        counts = {"masters": 0, "linked": 0}

        def all_linked() -> bool:
            masters = linked = 0
            for port in self.ports:
                with self._client(port) as client:
                    try:
                        info = client.info("replication")
                    except redis.RedisError:
                        continue
                if info.get("role") == "master":
                    masters += 1
                elif info.get("master_link_status") == "up":
                    linked += 1
            counts.update(masters=masters, linked=linked)
            return masters == 3 and linked == 3 and self._all_ok()

        poll_until_sync(
            all_linked,
            lambda: f"{counts['linked']} of 3 replicas linked, {counts['masters']} masters",
            timeout,
            interval=0.1,
            error=RedisServerError,
        )

    def kill(self, port: int) -> RedisServer:
        node = self.node_on(port)
        node.kill()
        return node

    def manual_failover(self, replica_port: int) -> None:
        """``CLUSTER FAILOVER`` on a replica: it takes over its master's slots, no data lost."""
        with self._client(replica_port) as client:
            client.execute_command("CLUSTER", "FAILOVER")
