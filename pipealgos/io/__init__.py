"""Bytes -> records -> minibatches. Knows RecordIO, the aialgs.data.Record protobuf and CSV;
knows nothing about algorithms or the SageMaker directory layout beyond channel FIFO names."""

from .channel import ChannelSpec, ContentType, iter_blocks, iter_minibatches
from .errors import DataError
from .minibatch import Minibatch, concat, rebatch
from .writer import write_dense, write_records, write_sparse

__all__ = [
    "ChannelSpec", "ContentType", "DataError", "Minibatch", "concat", "iter_blocks", "iter_minibatches",
    "rebatch", "write_dense", "write_records", "write_sparse",
]
