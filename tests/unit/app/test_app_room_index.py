"""The indexed client manager behaves exactly like python-socketio's Manager, step by step."""

from __future__ import annotations

import types
from typing import Any

import socketio
from hypothesis import given, settings
from hypothesis import strategies as st

from app.upstream.room_index import IndexedManager, IndexedRedisManager, client_manager

NAMESPACES = ["/", "/chat"]
ROOMS = ["lobby", "a", "b"]


def fresh(cls: type) -> Any:
    mgr = cls()
    ids = iter(range(10**6))
    mgr.set_server(
        types.SimpleNamespace(
            eio=types.SimpleNamespace(generate_id=lambda: f"s{next(ids)}"), packet_class=socketio.packet.Packet
        )
    )
    return mgr


def snapshot(mgr: Any, sids: list[tuple[str, str]]) -> Any:
    rooms = {ns: {room: dict(members) for room, members in table.items()} for ns, table in mgr.rooms.items()}
    per_sid = {key: sorted(mgr.get_rooms(key[1], key[0])) for key in sids}
    return rooms, per_sid, mgr.pending_connect, mgr.pending_disconnect, set(mgr.callbacks)


step = st.one_of(
    st.tuples(st.just("connect"), st.sampled_from(NAMESPACES)),
    st.tuples(st.just("enter"), st.integers(0, 7), st.sampled_from(ROOMS)),
    st.tuples(st.just("leave"), st.integers(0, 7), st.sampled_from(ROOMS)),
    st.tuples(st.just("close"), st.sampled_from(NAMESPACES), st.sampled_from(ROOMS)),
    st.tuples(st.just("disconnect"), st.integers(0, 7)),
    st.tuples(st.just("pre_disconnect"), st.integers(0, 7)),
)


def apply(mgr: Any, op: tuple[Any, ...], sids: list[tuple[str, str]]) -> None:
    kind = op[0]
    if kind == "connect":
        eio = f"e{len(sids)}"
        sid = mgr.connect(eio, op[1])
        sids.append((op[1], sid))
        mgr.callbacks.setdefault(sid, {})  # an ack in flight, dropped at disconnect
        return
    if kind == "close":
        mgr.close_room(op[2], op[1])
        return
    if not sids:
        return
    ns, sid = sids[op[1] % len(sids)]
    if kind == "enter" and mgr.is_connected(sid, ns):
        mgr.enter_room(sid, ns, op[2])
    elif kind == "leave":
        mgr.leave_room(sid, ns, op[2])
    elif kind == "pre_disconnect" and mgr.is_connected(sid, ns):
        mgr.pre_disconnect(sid, ns)
    elif kind == "disconnect":
        mgr.disconnect(sid, ns)


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=40))
def test_same_state_as_upstream_after_every_step(ops: list[tuple[Any, ...]]) -> None:
    upstream, indexed = fresh(socketio.Manager), fresh(IndexedManager)
    sids_u: list[tuple[str, str]] = []
    sids_i: list[tuple[str, str]] = []
    for op in ops:
        apply(upstream, op, sids_u)
        apply(indexed, op, sids_i)
        assert sids_u == sids_i
        assert snapshot(indexed, sids_i) == snapshot(upstream, sids_u)
    # nothing left behind for clients that are gone
    live = {(ns, sid) for ns, table in indexed.rooms.items() for room in table.values() for sid in room}
    assert set(indexed._sid_rooms) == live


def test_disconnect_touches_only_the_clients_rooms() -> None:
    mgr = fresh(IndexedManager)
    sids = [mgr.connect(f"e{i}", "/") for i in range(1000)]
    mgr.enter_room(sids[0], "/", "lobby")

    class CountingDict(dict):  # type: ignore[type-arg]
        reads = 0

        def items(self):  # type: ignore[no-untyped-def]
            CountingDict.reads += 1
            return super().items()

        def copy(self):  # type: ignore[no-untyped-def]
            CountingDict.reads += 1
            return super().copy()

    mgr.rooms["/"] = CountingDict(mgr.rooms["/"])
    mgr.disconnect(sids[0], "/")
    assert CountingDict.reads == 0  # upstream copies and walks all 1,002 rooms here
    assert "lobby" not in mgr.rooms["/"] and sids[0] not in mgr.rooms["/"]
    assert not mgr.is_connected(sids[0], "/") and mgr.is_connected(sids[1], "/")


def test_client_manager_picks_the_queue() -> None:
    assert type(client_manager(None)) is IndexedManager
    redis = client_manager("redis://127.0.0.1:1/0")
    assert isinstance(redis, IndexedRedisManager) and redis.channel == "flask-socketio"
    assert not redis.write_only
