"""A stream's records are decoded as its bytes arrive, not once the read buffer is full.

A FIFO's writer that pauses (a slow download, the next S3 object still coming) must not hold
back the records it already sent; and a reader that waited to fill its buffer made the FIFO's
writer and itself wait on each other in turn (see ``pipealgos.io.stream.MIN_DECODE``)."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest

from pipealgos.io import write_dense
from pipealgos.io.parallel import decode_stream_parallel
from pipealgos.io.protobuf import RecordDecoder
from pipealgos.io.stream import DEFAULT_BUFFER, MIN_DECODE, decode_stream

RECORDS = 4000


def dense_records() -> bytes:
    out = io.BytesIO()
    features = np.random.default_rng(5).standard_normal((RECORDS, 20)).astype(np.float32)
    write_dense(out, features, np.arange(RECORDS, dtype=np.float32))
    return out.getvalue()


def single(stream):
    return decode_stream(stream, RecordDecoder("pipe"))


def two_threads(stream):
    return decode_stream_parallel(stream, "pipe", None, 2)


@pytest.mark.parametrize("decode", [single, two_threads])
def test_records_sent_before_a_pause_are_decoded_during_it(decode):
    data = dense_records()
    sent = len(data) // 2  # more than MIN_DECODE, far less than a read buffer
    assert MIN_DECODE < sent < DEFAULT_BUFFER // 2
    read_end, write_end = os.pipe()
    resume = threading.Event()

    def writer() -> None:
        os.write(write_end, data[:sent])  # the pipe holds less: this returns once the reader took it
        resume.wait(30)
        os.write(write_end, data[sent:])
        os.close(write_end)

    feeding = threading.Thread(target=writer, daemon=True)
    feeding.start()
    stream = open(read_end, "rb", buffering=0)
    blocks = decode(stream)
    during_pause: list = []
    taking = threading.Thread(target=lambda: during_pause.append(next(blocks)), daemon=True)
    taking.start()
    taking.join(10)
    resume.set()  # before asserting, so a failure cannot leave the reader blocked
    assert during_pause, "no block came while the writer paused: the reader waited for a full buffer"
    frame = len(data) // RECORDS
    assert 0 < during_pause[0].size <= sent // frame  # only records the writer had sent
    rest = list(blocks)
    feeding.join(10)
    stream.close()
    labels = np.concatenate([b.labels for b in during_pause + rest])
    np.testing.assert_array_equal(labels, np.arange(RECORDS))
