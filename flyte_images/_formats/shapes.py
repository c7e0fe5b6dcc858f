"""The one reader of what comes from outside the process into frozen dataclasses: registry
answers, Docker's config.json, the config file and ImageCache JSON. Small and strict, and cheap
to import (a validation library would cost every process tens of milliseconds).

A dataclass's type hints are its schema: `str`, `int` (never a bool), `float` (an int too),
`Literal[...]`, `list[X]`,
`dict[str, X]`, `X | None` and other such dataclasses, with `Annotated` adding an `Alias` (the
JSON key), an `AtLeast` bound, or a check that raises ValueError. Nothing is coerced; unknown keys
are ignored. Every problem is collected with its path, worded as pydantic's strict mode words it,
and none carries the offending value: it may be a credential.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import MISSING
from typing import Annotated, Any, Literal, NamedTuple, TypeVar, Union

T = TypeVar("T")
Path = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class Alias:
    """The JSON key of a field, when it is not the field's name."""

    key: str


@dataclasses.dataclass(frozen=True)
class AtLeast:
    """A lower bound on an int."""

    bound: int


class Problem(NamedTuple):
    path: Path
    message: str


class Invalid(Exception):
    """Content that is not JSON (`problems` empty) or not of the shape: every problem, in order."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problems" if problems else "not JSON")
        self.problems = problems


_BAD: Any = object()  # what a check answers when it found a problem (and recorded it)
# Per dataclass, its fields in order (a base's first): (name, JSON key, hint, required).
_FIELDS: dict[type, tuple[tuple[str, str, Any, bool], ...]] = {}


def load(model: type[T], content: bytes | str) -> T:
    """`content` (JSON) as a `model`, or Invalid with every problem found."""
    try:
        data = json.loads(content.decode() if isinstance(content, bytes) else content)
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, a too long int; nesting
        data = _BAD
    if data is _BAD:  # raised here, not in the except block: a JSONDecodeError holds the whole input
        raise Invalid([])
    return check(model, data)


def check(model: type[T], data: Any) -> T:
    """`data`, already decoded (JSON, TOML), as a `model`, or Invalid with every problem found."""
    problems: list[Problem] = []
    value = _model(model, data, (), problems)
    if problems:
        raise Invalid(problems)
    return typing.cast(T, value)


def _model(model: type, value: Any, path: Path, problems: list[Problem]) -> Any:
    if type(value) is not dict:
        problems.append(Problem(path, "Input should be an object"))
        return _BAD
    fields = _FIELDS.get(model)
    if fields is None:
        hints = typing.get_type_hints(model, include_extras=True)
        fields = _FIELDS[model] = tuple(
            (f.name, _alias(hints[f.name], f.name), hints[f.name], f.default is MISSING is f.default_factory)
            for f in dataclasses.fields(model)
        )
    values: dict[str, Any] = {}
    found = len(problems)  # every _BAD comes with its problem
    for name, alias, hint, required in fields:
        key = alias if alias in value else name if name in value else None
        if key is None:
            if required:
                problems.append(Problem((*path, alias), "Field required"))
            continue
        checked = _check(hint, value[key], (*path, key), problems)
        if checked is not _BAD:
            values[name] = checked
    return model(**values) if len(problems) == found else _BAD


def _alias(hint: Any, name: str) -> str:
    if typing.get_origin(hint) is Annotated:
        return next((m.key for m in hint.__metadata__ if isinstance(m, Alias)), name)
    return name


def _check(hint: Any, value: Any, path: Path, problems: list[Problem]) -> Any:
    """`value` if it is a `hint` (a new object for a dataclass), else _BAD and the problems in it."""
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return _annotated(hint, value, path, problems)
    if origin in (Union, types.UnionType):
        # Only `X | None`: None is itself, anything else must be an X.
        (inner,) = [arm for arm in typing.get_args(hint) if arm is not type(None)]
        return None if value is None else _check(inner, value, path, problems)
    if origin is Literal:
        for allowed in typing.get_args(hint):
            # JSON's 2.0 is the literal 2, as in pydantic; a bool never is.
            if type(value) in (int, float) and type(allowed) is int and value == allowed:
                return allowed
            if type(value) is type(allowed) and value == allowed:
                return allowed
        expected = " or ".join(repr(allowed) for allowed in typing.get_args(hint))
        problems.append(Problem(path, f"Input should be {expected}"))
        return _BAD
    if origin is list:
        if type(value) is not list:
            problems.append(Problem(path, "Input should be a valid array"))
            return _BAD
        (item,) = typing.get_args(hint)
        items = [_check(item, v, (*path, i), problems) for i, v in enumerate(value)]
        return _BAD if any(v is _BAD for v in items) else items
    if origin is dict:
        if type(value) is not dict:
            problems.append(Problem(path, "Input should be an object"))
            return _BAD
        _key, item = typing.get_args(hint)  # JSON keys are always strings
        entries = {k: _check(item, v, (*path, k), problems) for k, v in value.items()}
        return _BAD if any(v is _BAD for v in entries.values()) else entries
    if hint is str or hint is int:
        if type(value) is not hint:  # so a bool is not an int
            noun = "string" if hint is str else "integer"
            problems.append(Problem(path, f"Input should be a valid {noun}"))
            return _BAD
        return value
    if hint is float:
        if type(value) not in (int, float):  # JSON's 2 is 2.0; a bool is no number
            problems.append(Problem(path, "Input should be a valid number"))
            return _BAD
        return float(value)
    if dataclasses.is_dataclass(hint):
        return _model(typing.cast(type, hint), value, path, problems)
    raise TypeError(f"no check for the type {hint!r}")


def _annotated(hint: Any, value: Any, path: Path, problems: list[Problem]) -> Any:
    checked = _check(hint.__origin__, value, path, problems)
    for mark in hint.__metadata__:
        if checked is _BAD or checked is None:
            break
        if isinstance(mark, AtLeast) and checked < mark.bound:
            problems.append(Problem(path, f"Input should be greater than or equal to {mark.bound}"))
            checked = _BAD
        elif callable(mark):
            try:
                checked = mark(checked)
            except ValueError as exc:  # its message is ours and names no value
                problems.append(Problem(path, f"Value error, {exc}"))
                checked = _BAD
    return checked
