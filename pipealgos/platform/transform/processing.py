"""``DataProcessing``: ``InputFilter`` on each input record, ``JoinSource: Input`` and ``OutputFilter``
on each output record, as SageMaker's batch transform applies them.

Records here are lines (``SplitType: Line``), of CSV or of JSON (``application/jsonlines``, or
one JSON document per line). A CSV record is read as a JSON array of its fields (as text, so
values pass through unchanged: ``$[1:]`` drops the first column); a JSON record is parsed.

* ``InputFilter`` selects what is sent for each record, written back in the input's format
  (a CSV selection as one CSV line, a JSON one as compact JSON).
* The response is split into one output per record: a line each for CSV and JSON Lines, an
  entry of the one list in the object for JSON (``{"predictions": [..]}``). A count that
  differs from the records sent fails the job, naming the request's records.
* ``JoinSource: Input`` joins the *original* input record (before ``InputFilter``) with its
  output: CSV fields followed by the output's fields; a JSON object gets the output under
  ``SageMakerOutput``; any other JSON value becomes ``{"SageMakerInput": value,
  "SageMakerOutput": output}``.
* ``OutputFilter`` selects from the joined record (or from the output alone without a join).

Each processed record is written as one line, whatever ``AssembleWith`` says.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import Any

from .jsonpath import JsonPath, JsonPathError
from .request import JSON, LINE_FAMILIES, DataProcessing, media_type


class RecordError(ValueError):
    """One record (or its output) cannot be processed; ``index`` is the record's place in its batch."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def _csv_fields(line: bytes) -> list[str]:
    rows = list(csv.reader(io.StringIO(line.decode("utf-8"))))
    return rows[0] if rows else []


def _csv_line(value: Any) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(value if isinstance(value, list) else [value])
    return out.getvalue().encode("utf-8")


def _json_value(line: bytes) -> Any:
    return json.loads(line)


def _json_line(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8") + b"\n"


_CODECS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes]]] = {
    "csv": (_csv_fields, _csv_line), "json": (_json_value, _json_line)}


class RecordProcessor:
    """Applies one job's ``DataProcessing`` to the records of a batch and to their outputs."""

    def __init__(self, processing: DataProcessing, content_type: str | None, accept: str | None) -> None:
        self.processing = processing
        self.accept = media_type(accept) or JSON
        self.input_family = LINE_FAMILIES.get(media_type(content_type))
        self.output_family = LINE_FAMILIES.get(self.accept)

    @property
    def active(self) -> bool:
        return self.processing.input_filter is not None or self.processing.per_record

    def request_body(self, records: list[bytes]) -> bytes:
        """The body sent for these input records (each filtered when there is an InputFilter)."""
        if self.processing.input_filter is None:
            return b"".join(r if r.endswith(b"\n") else r + b"\n" for r in records)
        parse, write = _CODECS[self.input_family]
        return b"".join(write(self._select(self.processing.input_filter, parse, i, r))
                        for i, r in enumerate(records))

    def _select(self, path: JsonPath, parse, index: int, record: bytes) -> Any:
        try:
            return path.apply(parse(record))
        except (ValueError, JsonPathError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise RecordError(index, f"InputFilter: {exc}") from None

    def output_body(self, records: list[bytes], response: bytes) -> bytes:
        """Split ``response`` into one output per record, join and filter each, one line each."""
        outputs = self._split_response(response, len(records))
        parse_out, write_out = _CODECS[self.output_family]
        parse_in, write_in = _CODECS[self.input_family] if self.processing.join_input else (None, None)
        lines = []
        for i, (record, output) in enumerate(zip(records, outputs)):
            try:
                value = parse_out(output) if isinstance(output, bytes) else output
                if self.processing.join_input:
                    value = _join(parse_in(record), value, self.input_family)
                if self.processing.output_filter is not None:
                    value = self.processing.output_filter.apply(value)
            except (ValueError, JsonPathError) as exc:
                raise RecordError(i, f"{'JoinSource/' if self.processing.join_input else ''}OutputFilter: {exc}") \
                    from None
            lines.append((write_in or write_out)(value))
        return b"".join(lines)

    def _split_response(self, response: bytes, count: int) -> list:
        if self.accept == JSON:
            try:
                document = json.loads(response)
            except ValueError as exc:
                raise RecordError(0, f"the response is not JSON ({exc})") from None
            lists = [v for v in document.values() if isinstance(v, list)] if isinstance(document, dict) else []
            outputs = lists[0] if len(lists) == 1 else document if isinstance(document, list) else None
            if outputs is None:
                raise RecordError(0, "the JSON response holds no single list of per-record outputs to join or filter; "
                                     "use Accept application/jsonlines")
        else:
            outputs = [line for line in response.split(b"\n") if line.strip()]
        if len(outputs) != count:
            raise RecordError(0, f"the response holds {len(outputs)} outputs for {count} records, so they cannot be "
                                 "matched to their records")
        return outputs


def _join(record: Any, output: Any, family: str) -> Any:
    if family == "csv":
        return record + (output if isinstance(output, list) else [output])
    if isinstance(record, dict):
        return {**record, "SageMakerOutput": output}
    return {"SageMakerInput": record, "SageMakerOutput": output}
