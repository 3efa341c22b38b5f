"""The read script against real Redis: its one string is the `entities` field the protobuf
library builds, byte for byte the python reference (wire.py), for rows stored with their
read-ready copy and rows stored field by field, any list of features; and the pipelined
connection it runs on (script_pipe.py) keeps replies in step through cancellations, missing
scripts, timeouts and refused connections."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from flywheel.bench.workload import random_event
from flywheel.common.dependency import redis_dependency
from flywheel.common.errors import Unavailable
from flywheel.common.spec import load_spec
from flywheel.common.validation import event_time_ms
from flywheel.features import wire
from flywheel.features.framed import READ_SCRIPT, layouts_of
from flywheel.features.keys import KeySpace
from flywheel.features.online_store import ROW_WRITTEN, OnlineStore
from flywheel.features.script_pipe import ScriptPipe
from flywheel.infra.ports import free_port
from flywheel.v1 import common_pb2, events_pb2, features_pb2

SPEC = load_spec(Path(__file__).resolve().parents[3] / "flywheel.yaml")
NAMES = SPEC.entity("customer").feature_names
LISTS = {
    "every feature (default)": [],
    "every feature, named": NAMES,
    "reversed": NAMES[::-1],
    "the model's 24": NAMES[:24],
    "scattered": ["visits", "f03", "segment", "f00"],
    "up to the last": ["f22", "f23", "segment", "visits"],
    "one": ["segment"],
    "twice": ["f01", "f01"],
}


def _events() -> tuple[list[events_pb2.Event], list[events_pb2.Event]]:
    """(events stored with the read-ready copy, events stored field by field only)."""
    rng = random.Random(17)
    now_ms = int(time.time() * 1000)
    customer = SPEC.entity("customer")

    def event(entity_id, time_ms=now_ms - 1_234, drop=(), segment=None):
        made = random_event(customer, entity_id, time_ms, rng, event_id=f"id-{entity_id}")
        for name in drop:
            del made.features[name]
        if segment is not None:
            made.features["segment"].string_value = segment
        return made

    framed = [
        event("plain"),
        event("c:o/lé" + "x" * 140),  # ':' and UTF-8 in the id; a two-byte length varint
        event("partial", drop=("f03", "segment")),
        event("long-string", segment="é" * 100),
        event("whole-second", time_ms=(now_ms // 1000) * 1000),  # no nanos in the timestamp
        event("huge", segment="x" * 70_000),  # too long for the read-ready copy
    ]
    field_by_field = [event("old"), event("old-partial", drop=("f00", "visits"))]
    return framed, field_by_field


def _expected(events: dict[str, events_pb2.Event], ids: list[str], names: list[str]):
    names = names or NAMES
    message = features_pb2.GetOnlineFeaturesResponse(feature_names=names)
    parts = [wire.feature_names_field(names)]
    for entity_id in ids:
        event = events.get(entity_id)
        entity = message.entities.add(entity_id=entity_id)
        if event is None:
            entity.status = features_pb2.FEATURE_STATUS_NOT_FOUND
            entity.values.extend(common_pb2.FeatureValue() for _ in names)
            parts.append(wire.missing_entity(entity_id, wire.empty_values(len(names))))
            continue
        entity.status = features_pb2.FEATURE_STATUS_FOUND
        values = [event.features.get(n) for n in names]
        entity.values.extend(v if v is not None else common_pb2.FeatureValue() for v in values)
        entity.event_time.FromMilliseconds(event_time_ms(event))
        framed = b"".join(
            wire.frame_value(v.SerializeToString()) if v is not None else wire.empty_values(1)
            for v in values
        )
        parts.append(wire.found_entity(entity_id, event_time_ms(event), framed))
    return message, b"".join(parts)


@pytest.fixture
async def stores(names, redis_url):
    keys = KeySpace(f"{names.namespace}:")
    sync_client = redis.Redis.from_url(redis_url)
    async_client = aioredis.Redis.from_url(redis_url)
    layouts = layouts_of(SPEC.entities)
    pipe = ScriptPipe.from_url(redis_url, READ_SCRIPT, 2.0)
    dependency = redis_dependency(redis_url, 2.0)
    with_pipe = OnlineStore(keys, sync_client, async_client, layouts, pipe, redis=dependency)
    without_pipe = OnlineStore(keys, sync_client, async_client, layouts, redis=dependency)
    field_by_field = OnlineStore(keys, sync_client, async_client, redis=dependency)
    try:
        yield with_pipe, without_pipe, field_by_field
    finally:
        await with_pipe.close()
        await async_client.aclose()
        sync_client.close()


@pytest.mark.parametrize("wanted", list(LISTS.values()), ids=list(LISTS))
async def test_script_bytes_equal_the_protobuf_reply(stores, wanted) -> None:
    with_pipe, without_pipe, field_by_field = stores
    framed, plain = _events()
    assert all(result & ROW_WRITTEN for result in with_pipe.write(framed))
    assert all(result & ROW_WRITTEN for result in field_by_field.write(plain))
    stored = with_pipe._sync.hgetall(with_pipe.keys.row("customer", "plain"))
    layout = with_pipe.layouts["customer"]
    assert layout.entity_field.encode() in stored and layout.offsets_field.encode() in stored
    huge = with_pipe._sync.hgetall(with_pipe.keys.row("customer", "huge"))
    assert layout.entity_field.encode() not in huge

    by_id = {e.entity_id: e for e in framed + plain}
    ids = [e.entity_id for e in framed + plain] + ["nobody", "plain", "old"]
    random.Random(5).shuffle(ids)
    message, reference = _expected(by_id, ids, wanted)
    for store in (with_pipe, without_pipe):
        args = store.read_arguments("customer", wanted or NAMES)
        prefix = store.keys.row_prefix("customer")
        entities = await store.read_entities([prefix + e for e in ids], args)
        encoded = wire.feature_names_field(wanted or NAMES) + entities
        assert features_pb2.GetOnlineFeaturesResponse.FromString(encoded) == message
        assert encoded == reference


async def test_a_cancelled_call_leaves_the_others_in_step(stores) -> None:
    with_pipe, _, _ = stores
    framed, _ = _events()
    with_pipe.write(framed)
    by_id = {e.entity_id: e for e in framed}
    args = with_pipe.read_arguments("customer", NAMES)
    prefix = with_pipe.keys.row_prefix("customer")
    pipe = with_pipe._pipe
    await with_pipe.read_entities([prefix + "plain"], args)  # connected, script loaded
    batches = [["plain"], ["partial", "nobody"], ["long-string"], ["whole-second", "plain"]]
    calls = [asyncio.create_task(pipe.call([prefix + e for e in b], args)) for b in batches]
    await asyncio.sleep(0)  # every call written, no reply read yet
    assert len(pipe._connection.waiting) == len(batches)
    calls[1].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    for batch, got in zip(batches, done, strict=True):
        if batch is not batches[1]:
            assert got == _expected(by_id, batch, NAMES)[1][len(wire.feature_names_field(NAMES)):]


async def test_a_script_redis_lacks_is_loaded_through_redis_py(names, redis_url) -> None:
    keys = KeySpace(f"{names.namespace}:")
    sync_client = redis.Redis.from_url(redis_url)
    async_client = aioredis.Redis.from_url(redis_url)
    # The same script under another hash: Redis does not hold it.
    stranger = ScriptPipe.from_url(redis_url, READ_SCRIPT + f"\n-- {uuid.uuid4()}\n", 2.0)
    store = OnlineStore(keys, sync_client, async_client, layouts_of(SPEC.entities), stranger,
                        redis=redis_dependency(redis_url, 2.0))
    try:
        framed, _ = _events()
        store.write(framed)
        args = store.read_arguments("customer", NAMES)
        row_keys = [store.keys.row("customer", "plain")]
        with pytest.raises(NoScriptError):
            await stranger.call(row_keys, args)
        got = await store.read_entities(row_keys, args)
        assert got == _expected({"plain": framed[0]}, ["plain"], NAMES)[1][
            len(wire.feature_names_field(NAMES)):
        ]
    finally:
        await store.close()
        await async_client.aclose()
        sync_client.close()


async def test_no_reply_in_time_fails_the_waiting_calls_then_reconnects() -> None:
    accepted = []

    async def silent(reader, writer):
        accepted.append(writer)
        await reader.read()  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = ScriptPipe.from_url(f"redis://127.0.0.1:{port}/0", READ_SCRIPT, 0.3)
    try:
        started = time.monotonic()
        calls = [pipe.call(["k1"], [b"a"]), pipe.call(["k2"], [b"b"])]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, RedisTimeoutError) for r in results), results
        assert 0.25 < time.monotonic() - started < 2.0
        with pytest.raises(RedisTimeoutError):
            await pipe.call(["k3"], [b"c"])
        assert len(accepted) == 2  # a new connection after the failed one
    finally:
        await pipe.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_redis_down_is_unavailable_to_reads_and_writes(names) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    pipe = ScriptPipe.from_url(dead, READ_SCRIPT, 0.5)
    with pytest.raises(RedisConnectionError):
        await pipe.call(["k"], [b"a"])
    async_client = aioredis.Redis.from_url(dead, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = OnlineStore(KeySpace(f"{names.namespace}:"), redis.Redis.from_url(dead),
                        async_client, layouts_of(SPEC.entities), pipe,
                        redis=redis_dependency(dead, 0.5))
    named = f"^Redis at {dead.removeprefix('redis://').removesuffix('/0')} is unavailable"
    try:
        with pytest.raises(Unavailable, match=named):
            await store.read_entities(["k"], store.read_arguments("customer", NAMES))
        event = random_event(SPEC.entity("customer"), "c1", int(time.time() * 1000),
                             random.Random(1), event_id="ev-1")
        with pytest.raises(Unavailable, match=named):
            await store.write_async([event])
    finally:
        await store.close()
        await async_client.aclose()


def test_tls_urls_stay_with_redis_py() -> None:
    assert ScriptPipe.from_url("rediss://127.0.0.1:6380/0", READ_SCRIPT, 1.0) is None
    assert ScriptPipe.from_url("redis://127.0.0.1:6379/2", READ_SCRIPT, 1.0) is not None
