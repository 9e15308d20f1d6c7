"""The lab Kafka image's shim: node id 111 becomes NODE_ID (or BROKER_ID) in responses, nothing else changes.

Responses are built here field by field from the Kafka protocol's message layouts, for old
(non-flexible) and new (flexible, compact) versions.
"""

from __future__ import annotations

import struct

import pytest

from swarmctl_lab.kafka_shim import (
    API_VERSIONS,
    DESCRIBE_CLUSTER,
    FIND_COORDINATOR,
    METADATA,
    Reader,
    Writer,
    rewrite_response,
)


def metadata_response(version: int, node: int) -> bytes:
    flex = version >= 9
    w = Writer()
    w.int32(42)  # correlation id
    if flex:
        w.tagged([])  # response header v1
    if version >= 3:
        w.int32(0)
    w.array_len(1, flex)
    w.int32(node)
    w.string(b"kafka-1", flex)
    w.int32(9092)
    if version >= 1:
        w.string(None, flex)
    if flex:
        w.tagged([])
    if version >= 2:
        w.string(b"cluster", flex)
    if version >= 1:
        w.int32(node)
    w.array_len(1, flex)
    w.int16(0)
    w.string(b"orders", flex)
    if version >= 10:
        w.raw(b"\x01" * 16)
    if version >= 1:
        w.int8(0)
    w.array_len(1, flex)
    w.int16(0)
    w.int32(0)
    w.int32(node)
    if version >= 7:
        w.int32(5)
    for _ in range(2 + (version >= 5)):
        w.array_len(1, flex)
        w.int32(node)
    if flex:
        w.tagged([])
    if version >= 8:
        w.int32(-2147483648)
    if flex:
        w.tagged([])
    if 8 <= version <= 10:
        w.int32(-2147483648)
    if flex:
        w.tagged([(0, b"x")])
    return w.bytes()


@pytest.mark.parametrize("version", range(13))
def test_metadata_node_ids_rewritten_in_every_version(version: int) -> None:
    original = metadata_response(version, 111)
    rewritten = rewrite_response(METADATA, version, original, 7)
    assert rewritten == metadata_response(version, 7)
    assert len(rewritten) == len(original)


def test_other_ids_and_unknown_apis_pass_untouched() -> None:
    assert rewrite_response(METADATA, 1, metadata_response(1, 5), 7) == metadata_response(1, 5)
    produce = struct.pack(">i", 42) + b"\x00\x00\x00\x6f" * 5
    assert rewrite_response(0, 9, produce, 7) == produce
    # a version above what the shim understands is passed on as is
    assert rewrite_response(METADATA, 13, metadata_response(12, 111), 7) == metadata_response(12, 111)
    # a truncated frame is not the shim's to fix
    truncated = metadata_response(1, 111)[:-3]
    assert rewrite_response(METADATA, 1, truncated, 7) == truncated


def test_find_coordinator_v0_and_v4() -> None:
    w = Writer()
    w.int32(1)
    w.int16(0)
    w.int32(111)
    w.string(b"kafka-1", False)
    w.int32(9092)
    out = Reader(rewrite_response(FIND_COORDINATOR, 0, w.bytes(), 3))
    assert (out.int32(), out.int16(), out.int32()) == (1, 0, 3)

    w = Writer()
    w.int32(1)
    w.tagged([])
    w.int32(0)
    w.array_len(1, True)
    w.string(b"group", True)
    w.int32(111)
    w.string(b"kafka-1", True)
    w.int32(9092)
    w.int16(0)
    w.string(None, True)
    w.tagged([])
    w.tagged([])
    out = Reader(rewrite_response(FIND_COORDINATOR, 4, w.bytes(), 3))
    out.int32()
    out.tagged()
    out.int32()
    assert out.array_len(True) == 1
    assert out.string(True) == b"group"
    assert out.int32() == 3


def test_describe_cluster() -> None:
    w = Writer()
    w.int32(9)
    w.tagged([])
    w.int32(0)
    w.int16(0)
    w.string(None, True)
    w.string(b"c", True)
    w.int32(111)
    w.array_len(1, True)
    w.int32(111)
    w.string(b"kafka-2", True)
    w.int32(9092)
    w.string(None, True)
    w.tagged([])
    w.int32(0)
    w.tagged([])
    out = Reader(rewrite_response(DESCRIBE_CLUSTER, 0, w.bytes(), 2))
    out.int32()
    out.tagged()
    out.int32()
    out.int16()
    out.string(True)
    out.string(True)
    assert out.int32() == 2
    assert out.array_len(True) == 1
    assert out.int32() == 2


def test_api_versions_capped_to_what_the_shim_understands() -> None:
    w = Writer()
    w.int32(5)
    w.int16(0)
    w.array_len(2, False)
    for key, high in ((METADATA, 13), (API_VERSIONS, 3)):
        w.int16(key)
        w.int16(0)
        w.int16(high)
    w.int32(0)
    out = Reader(rewrite_response(API_VERSIONS, 0, w.bytes(), 1))
    out.int32()
    out.int16()
    assert out.array_len(False) == 2
    assert (out.int16(), out.int16(), out.int16()) == (METADATA, 0, 12)
    assert (out.int16(), out.int16(), out.int16()) == (API_VERSIONS, 0, 3)
