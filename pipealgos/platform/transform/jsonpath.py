"""The JSONPath subset SageMaker's batch transform documents for ``InputFilter`` / ``OutputFilter``.

Operators (batch-transform-data-processing, "JSONPath operators"): ``$`` the root, ``.name``
and ``['name']`` a child, ``['a','b']`` several children, ``*`` (``.*`` or ``[*]``) every
child, ``[n]`` an element (negative counts from the end, as in SageMaker's ``$[0,-1]``),
``[start:end]`` a slice (either end may be left out; ``end`` exclusive), and unions of indices
and slices such as ``$[0,5:]``. Nothing else (no filters ``?()``, no recursive ``..``):
anything outside the subset is refused when the request is read, naming the expression.

Semantics, as SageMaker applies them to one record: a step that selects one element
(``$.features``, ``$[3]``) gives that element; several names give an object of those keys
(``$['id','SageMakerOutput']`` -> ``{"id": .., "SageMakerOutput": ..}``); a step that may
select several elements of a list (a union, a slice, ``*``) gives a list of them, in order. A name or index that is not there is an
error (SageMaker: "If you specify indexes that aren't within the dimension size of the joined
dataset, you get an error"); a slice clips to the list, as Python's does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*|\*)")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_QUOTED = re.compile(r"""\s*(?:'([^']*)'|"([^"]*)")\s*""")
_INDEX = re.compile(r"\s*(-?\d+)\s*")
_SLICE = re.compile(r"\s*(-?\d+)?\s*:\s*(-?\d+)?\s*")


class JsonPathError(ValueError):
    """The expression is outside SageMaker's subset, or does not fit the record it is applied to."""


@dataclass(frozen=True)
class _Step:
    """One step: ``names`` (child keys), ``parts`` (indices as ints, slices as (start, end)), or ``wildcard``.
    ``many`` is True when the step may select several elements (the result is then a list)."""

    names: tuple[str, ...] = ()
    parts: tuple[int | tuple[int | None, int | None], ...] = ()
    wildcard: bool = False

    @property
    def many(self) -> bool:
        """Selects a list of elements, each of which a further step applies to."""
        return self.wildcard or len(self.parts) > 1 or any(isinstance(p, tuple) for p in self.parts)


class JsonPath:
    """A compiled expression; :meth:`apply` selects from one parsed record."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.steps = _parse(expression)

    @property
    def is_identity(self) -> bool:
        return not self.steps

    def apply(self, value: Any) -> Any:
        current, spread = value, False  # spread: current is a list of selections, each to be stepped into
        for step in self.steps:
            if spread:
                current = [_select(step, item, self.expression) for item in current]
            else:
                current = _select(step, current, self.expression)
                spread = step.many
        return current


def _parse(expression: str) -> list[_Step]:
    text = expression.strip()
    if not text.startswith("$"):
        raise JsonPathError(f"JSONPath '{expression}' must start with '$' (the record)")
    steps, pos = [], 1
    while pos < len(text):
        name = _NAME.match(text, pos)
        bracket = _BRACKET.match(text, pos)
        if name:
            steps.append(_Step(wildcard=True) if name.group(1) == "*" else _Step(names=(name.group(1),)))
            pos = name.end()
        elif bracket:
            steps.append(_bracket_step(bracket.group(1), expression))
            pos = bracket.end()
        else:
            raise JsonPathError(f"JSONPath '{expression}': cannot read '{text[pos:]}' (SageMaker's subset: $, .name, "
                                "['name','name'], [*], [n,m], [start:end])")
    return steps


def _bracket_step(inside: str, expression: str) -> _Step:
    if inside.strip() == "*":
        return _Step(wildcard=True)
    names, parts = [], []
    for item in inside.split(","):
        quoted, index, piece = _QUOTED.fullmatch(item), _INDEX.fullmatch(item), _SLICE.fullmatch(item)
        if quoted:
            names.append(quoted.group(1) if quoted.group(1) is not None else quoted.group(2))
        elif index:
            parts.append(int(index.group(1)))
        elif piece:
            parts.append(tuple(None if g is None else int(g) for g in piece.groups()))
        else:
            raise JsonPathError(f"JSONPath '{expression}': '[{inside}]' is not a name list, index list or slice")
    if names and parts:
        raise JsonPathError(f"JSONPath '{expression}': '[{inside}]' mixes names and indices")
    return _Step(names=tuple(names), parts=tuple(parts))


def _select(step: _Step, value: Any, expression: str) -> Any:
    if step.wildcard:
        if isinstance(value, dict):
            return list(value.values())
        if isinstance(value, list):
            return list(value)
        raise JsonPathError(f"JSONPath '{expression}': '*' applied to {_kind(value)}")
    if step.names:
        if not isinstance(value, dict):
            raise JsonPathError(f"JSONPath '{expression}': a name applied to {_kind(value)}")
        missing = [name for name in step.names if name not in value]
        if missing:
            raise JsonPathError(f"JSONPath '{expression}': the record has no key '{missing[0]}' "
                                f"(its keys: {', '.join(list(value)[:10])})")
        if len(step.names) > 1:  # SageMaker keeps an object an object: $['id','SageMakerOutput'] -> {"id":..,..}
            return {name: value[name] for name in step.names}
        selected = [value[step.names[0]]]
    else:
        if not isinstance(value, list):
            raise JsonPathError(f"JSONPath '{expression}': an index applied to {_kind(value)}")
        selected = []
        for part in step.parts:
            if isinstance(part, tuple):
                selected.extend(value[part[0]:part[1]])
            elif -len(value) <= part < len(value):
                selected.append(value[part])
            else:
                raise JsonPathError(f"JSONPath '{expression}': index {part} is outside the record's "
                                    f"{len(value)} elements")
    return selected if step.many else selected[0]


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), f"a {type(value).__name__}")
