"""pipealgos: SageMaker's protobuf-RecordIO built-in algorithms, open source, in Python and PyTorch."""

__version__ = "0.1.0"
