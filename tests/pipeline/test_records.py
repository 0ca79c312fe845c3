"""The bulk record writer's encoding matches kafka-python's own."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.util import encode_varint

from pipeline.records import varint


@pytest.mark.parametrize("value", [0, 1, 63, 64, 127, 128, 300, 16383, 16384, 10**6, 2**31])
def test_varint_matches_kafka_python(value: int) -> None:
    expected = bytearray()
    encode_varint(value, expected.append)
    assert varint(value) == bytes(expected)


def test_records_written_like_the_builder_decode_the_same() -> None:
    """Bytes we would append decode, through kafka-python's reader, to the keys and values given."""
    records = [(f"{1325412060 + 60 * i}.0".encode(), b'{"Open":4.58}' * (1 + i % 3)) for i in range(500)]
    ours = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    ours.append(0, 1000, records[0][0], records[0][1], [])
    pieces = []
    for offset, (key, value) in enumerate(records[1:], start=1):
        body = b"".join(
            (b"\x00\x00", varint(offset), varint(len(key)), key, varint(len(value)), value, b"\x00")
        )
        pieces.append(varint(len(body)) + body)
    ours._buffer += b"".join(pieces)
    ours._num_records += len(pieces)
    ours._last_offset = len(records) - 1
    decoded = [(r.key, r.value, r.offset) for r in DefaultRecordBatch(bytes(ours.build()))]
    assert decoded == [(k, v, i) for i, (k, v) in enumerate(records)]
