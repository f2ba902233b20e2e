"""Hyperparameter schemas: declared once per algorithm, applied to the strings SageMaker sends.

Every value arrives as a string (``hyperparameters.json``). Booleans are accepted in any
case (``True``/``true``), lists as JSON (``'["msd", "ssd"]'``, the SDK's form) or comma
lists (``msd,ssd``, the docs' form). Keys starting with ``_`` (``_tuning_objective_metric``,
``_kvstore``...) and the internal keys a schema names as ``ignored`` are accepted and
dropped; any other unknown key is an error listing the valid names. Every problem of one
request is reported in one :class:`HyperparameterError` (a typo and an out-of-range value
together), not just the first.

The schema is the only declaration of an algorithm's hyperparameters: :attr:`Schema.params_type`
is a frozen dataclass derived from it (one field per parameter, in declaration order), and
:meth:`Schema.to_params` builds the object an algorithm's ``train`` receives. A parameter added
to the schema is therefore a field of the params object at once; nothing repeats the defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

AUTO = "auto"
FLOAT32_MAX = float(np.finfo(np.float32).max)


class HyperparameterError(ValueError):
    """A hyperparameter is missing, unknown or has a value outside its range."""


@dataclass(frozen=True)
class Param:
    """One hyperparameter. ``kind`` is int, float, bool, str or list.

    ``low``/``high`` bound numbers (inclusive unless ``*_open``); ``choices`` bounds strings
    and list items; ``auto`` admits the string ``"auto"`` besides the typed values;
    ``extra_words`` admits further literal strings (e.g. ``balanced``).
    """

    name: str
    kind: type
    required: bool = False
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    auto: bool = False
    extra_words: tuple = ()
    item_kind: type = str

    def describe(self) -> str:
        parts = []
        if self.choices:
            parts.append(("a list of items, each " if self.kind is list else "") + "one of " + ", ".join(map(str, self.choices)))
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
            hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
            bounds = " and ".join(p for p in (lo, hi) if p)
            if self.kind is list:
                parts.append(f"a list of integers {bounds} (JSON [30, 20] or 30,20)")
            else:
                parts.append(f"a{'n integer' if self.kind is int else ' number'} {bounds}")
        elif self.kind is list and self.item_kind is int:
            parts.append("a list of integers (JSON [30, 20] or 30,20)")
        elif self.kind is int:
            parts.append("an integer")
        elif self.kind is float:
            parts.append("a number")
        elif self.kind is bool:
            parts.append("true or false")
        words = (AUTO,) if self.auto else ()
        words += self.extra_words
        if words:
            parts.append("or " + " / ".join(words))
        return " ".join(parts) or self.kind.__name__

    def convert(self, raw: Any) -> Any:
        text = raw.strip() if isinstance(raw, str) else raw
        if isinstance(text, str) and ((self.auto and text.lower() == AUTO) or text.lower() in self.extra_words):
            return text.lower()
        try:
            value = self._typed(text)
        except (TypeError, ValueError):
            raise self._error(raw) from None
        self._check(value, raw)
        return value

    def _typed(self, text: Any) -> Any:
        if self.kind is bool:
            if isinstance(text, bool):
                return text
            lowered = str(text).lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(text)
        if self.kind is int:
            number = float(text) if isinstance(text, str) and "." in text else text
            if isinstance(number, float) and not number.is_integer():
                raise ValueError(text)
            return int(number)
        if self.kind is float:
            # Hyperparameters end up in float32 tensors and models: a value that is infinite
            # there (inf, 1e39) is refused, not trained into a NaN/inf model.
            value = float(text)
            if math.isnan(value) or abs(value) > FLOAT32_MAX:
                raise ValueError(text)
            return value
        if self.kind is list:
            return [self._item(v) for v in _parse_list(text)]
        return str(text)

    def _item(self, item: Any) -> Any:
        if self.item_kind is int:
            # Whole numbers only: 30.5, true or "abc" are refused, not truncated to 30 or 1.
            if isinstance(item, bool) or not isinstance(item, (int, float, str)):
                raise ValueError(item)
            number = float(item) if isinstance(item, str) and "." in item else item
            if isinstance(number, float) and not number.is_integer():
                raise ValueError(item)
            return int(number)
        return str(item).strip()

    def _check(self, value: Any, raw: Any) -> None:
        items = value if self.kind is list else [value]
        for item in items:
            if self.choices is not None and item not in self.choices:
                raise self._error(raw)
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if self.low is not None and (item < self.low or (self.low_open and item == self.low)):
                    raise self._error(raw)
                if self.high is not None and (item > self.high or (self.high_open and item == self.high)):
                    raise self._error(raw)

    def _error(self, raw: Any) -> HyperparameterError:
        finite = " (finite in float32)" if self.kind is float else ""
        return HyperparameterError(
            f"Hyperparameter '{self.name}' has invalid value {raw!r}: it must be {self.describe()}{finite}."
        )


def _parse_list(text: Any) -> list:
    if isinstance(text, list):
        return text
    text = str(text).strip()
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError(text)
        return value
    return [part for part in (p.strip() for p in text.split(",")) if part]


@dataclass(frozen=True)
class Schema:
    """The hyperparameters of one algorithm.

    ``ignored``: extra keys the real containers accept and we accept and drop.
    ``checks``: cross-field rules, each returning an error message or None.
    """

    algorithm: str
    params: tuple[Param, ...]
    ignored: frozenset[str] = frozenset()
    checks: tuple[Callable[[dict], str | None], ...] = field(default=())
    params_type: type = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate hyperparameter in the {self.algorithm} schema")
        class_name = "".join(part.capitalize() for part in self.algorithm.replace("_", "-").split("-")) + "Params"
        derived = dataclasses.make_dataclass(class_name, [(name, Any) for name in names], frozen=True)
        derived.__doc__ = f"The {self.algorithm} hyperparameters, typed (derived from its schema)."
        object.__setattr__(self, "params_type", derived)

    def to_params(self, values: Mapping[str, Any]) -> Any:
        """The params object for typed ``values`` (the output of :meth:`parse`)."""
        return self.params_type(**{p.name: values[p.name] for p in self.params})

    def build(self, raw: Mapping[str, Any]) -> Any:
        """``to_params(parse(raw))``: the params object straight from raw values."""
        return self.to_params(self.parse(raw))

    @property
    def names(self) -> list[str]:
        return sorted(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def parse(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Typed values for every declared hyperparameter (defaults filled in). Raises one
        :class:`HyperparameterError` listing every problem found."""
        known = {p.name: p for p in self.params}
        problems = []
        unknown = sorted(k for k in raw if k not in known and not k.startswith("_") and k not in self.ignored)
        if unknown:
            problems.append(f"Unknown hyperparameter(s) for {self.algorithm}: {', '.join(repr(k) for k in unknown)}. "
                            f"Valid names: {', '.join(self.names)}.")
        values: dict[str, Any] = {}
        for param in self.params:
            if param.name in raw and raw[param.name] is not None:
                try:
                    values[param.name] = param.convert(raw[param.name])
                except HyperparameterError as exc:
                    problems.append(str(exc))
            elif param.required:
                problems.append(f"Missing required hyperparameter '{param.name}' for {self.algorithm}: "
                                f"set it to {param.describe()}.")
            else:
                values[param.name] = param.default
        if not problems:  # the cross-field rules assume every value is typed
            problems = [message for message in (check(values) for check in self.checks) if message]
        if problems:
            raise HyperparameterError(" ".join(problems) if len(problems) == 1 else
                                      f"{len(problems)} hyperparameter problems: " + " | ".join(problems))
        return values
