"""One schema check for every boundary: a file we read (recipe sections, `adapter_config.json`,
conversation templates, conversation records) or a public call's options (generation) is declared
as a dataclass, and `from_mapping` checks the mapping against it before anything runs — unknown
keys (listing the valid ones), types (strictly: the string "false" is not a bool, 1.0 is not an
int, elements of lists and values of mappings included), then the class's own `validate(where)`
for ranges. Every error is a ValueError naming the file or call and the key path.

Why not pydantic: its strict mode would do the type part, but it would add a compiled runtime
dependency for what these ~100 lines already do over plain dataclasses, and its messages would
need rewriting to name our files; the dataclasses stay the single declaration either way.

    @dataclass
    class Lora:
        r: int = 8
        use_rslora: bool = False
    cfg = from_mapping(Lora, {"r": 4, "use_rslora": "false"}, "adapter_config.json")
    # ValueError: adapter_config.json: use_rslora: expected true or false, got 'false' (str)
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from typing import Any, Callable, Dict, Optional, Type, TypeVar

import numpy as np

T = TypeVar("T")


def require(ok: bool, message: str) -> None:
    """Range checks in `validate`: a ValueError with `message` when `ok` is false."""
    if not ok:
        raise ValueError(message)


def flag(value: Any, name: str, where: str = "") -> bool:
    """A call's on/off argument: a bool (numpy's, a 0-d bool tensor, 0 or 1 too), or None for off as
    transformers reads it. bool() read use_image_text_matching_head="no" as on, and returned the
    other head's output."""
    if value is None:
        return False
    if getattr(value, "dtype", None) is not None and getattr(value, "ndim", None) == 0 and str(value.dtype) in (
            "torch.bool", "bool"):
        value = bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) and value in (0, 1):
        value = bool(value)
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where + ': ' if where else ''}{name} must be True or False, got {type(value).__name__} "
                        f"{str(value)[:40]!r}")
    return bool(value)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{text[:80]}{'...' if len(text) > 80 else ''} ({type(value).__name__})"


def check_value(hint: Any, value: Any, where: str) -> Any:
    """`value` checked against the type `hint` (and converted where lossless: an int where a
    float is declared, a tuple where a list is); raises ValueError naming `where`."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return check_value(option, value, where)
            except ValueError as e:
                if _same_kind(option, value):  # a list given where a list may go: its element is wrong
                    raise e from None
        raise ValueError(f"{where}: expected {' or '.join(_expected(a) for a in args)}, got {_describe(value)}")
    if origin is typing.Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise ValueError(f"{where}: expected one of {', '.join(map(repr, args))}, got {_describe(value)}")
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected true or false, got {_describe(value)}")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            if not -(1 << 63) <= int(value) < 1 << 63:  # C++ took it as int64: "Overflow when unpacking long long"
                raise ValueError(f"{where} {int(value)} does not fit in int64")
            return int(value)
        raise ValueError(f"{where}: expected an integer, got {_describe(value)}")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            if math.isnan(float(value)):  # inf stays: optim.grad_clip: .inf logs the norm without clipping
                raise ValueError(f"{where}: expected a number, got NaN")
            return float(value)
        hint_text = ""
        if isinstance(value, str) and _parses_as_float(value):  # '1e-3' quoted in YAML, or a str from Python
            hint_text = f" (a number given as text: write {value} without quotes)"
        raise ValueError(f"{where}: expected a number, got {_describe(value)}{hint_text}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where}: expected a string, got {_describe(value)}")
    if origin in (list, typing.List) or hint is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {_describe(value)}")
        inner = args[0] if args else Any
        return [check_value(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Dict) or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {_describe(value)}")
        key_hint, value_hint = args if args else (Any, Any)
        return {check_value(key_hint, k, f"{where} key"): check_value(value_hint, v, f"{where}.{k}")
                for k, v in value.items()}
    if isinstance(hint, type):
        if isinstance(value, hint):
            return value
        raise ValueError(f"{where}: expected {hint.__name__}, got {_describe(value)}")
    return value


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin in (list, typing.List) or hint is list:
        return "a list"
    if origin in (dict, typing.Dict) or hint is dict:
        return "a mapping"
    if origin is typing.Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _same_kind(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (list, typing.List) or hint is list:
        return isinstance(value, (list, tuple))
    if origin in (dict, typing.Dict) or hint is dict or dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    if hint is int:  # an integer past int64: that, not "expected an integer or null"
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return False


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> Dict[str, Any]:
    return typing.get_type_hints(cls)  # evaluates every annotation: once per class, not per record


def from_mapping(cls: Type[T], values: Any, where: str, lenient: bool = False,
                 unknown: Optional[Callable[[str], Exception]] = None) -> T:
    """A `cls` dataclass from a mapping: unknown keys refused (dropped when `lenient`: records and
    foreign files such as PEFT's carry keys we do not read), every value type-checked, then
    `validate(where)` when the class has one. `unknown` makes the error for unknown keys (default
    ValueError; a call's keywords raise TypeError as Python does)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping, got {_describe(values)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extra = sorted(str(k) for k in values if k not in fields)
    if extra and not lenient:
        message = f"{where}: unknown key(s) {', '.join(extra)}; valid keys: {', '.join(fields)}"
        raise (unknown or ValueError)(message)
    hints = _type_hints(cls)
    kwargs: Dict[str, Any] = {name: check_value(hints[name], value, f"{where}: {name}" if ":" not in where
                                                else f"{where}.{name}")
                              for name, value in values.items() if name in fields}
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # type: ignore[misc]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {', '.join(missing)}")
    out = cls(**kwargs)
    if hasattr(out, "validate"):
        out.validate(where)
    return out
