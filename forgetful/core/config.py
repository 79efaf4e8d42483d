"""Loading `params.yaml` sections into frozen dataclasses, with errors that name the key.

Every stage declares its params as a frozen dataclass. `build(cls, data, where)` checks
unknown keys, missing keys and types (following the dataclass's type hints), then calls
the class, whose `__post_init__` checks ranges. All failures raise `ConfigError` with the
full dotted key (`train_adapter.lora.r`) and what was expected, before any model loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

T = TypeVar("T")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where `5e-05` is text; DVC writes params (`dvc exp run -S`)
    with ruamel in YAML 1.2, where it is a number. Read numbers as DVC writes them."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown or of the wrong type or range."""


class DataError(ValueError):
    """An input file or record is malformed; the message names the file and the record."""


class NonFinite(DataError):
    """A loss, gradient or logits went NaN or infinite: a diverged training, or a model it
    left broken. The message names the step or the model folder, and the fix."""


def suggest(name: str, known: Iterable[str]) -> str:
    """" (did you mean 'lora'?)" for the known name closest to `name` (case ignored: `LoRA`
    -> `lora`; one typo: `learnig_rate` -> `learning_rate`), or ""."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return f" (did you mean {lowered[name.lower()]!r}?)"
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root (where dvc.yaml is)")
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of stage names to sections")
    check_paths(data, path.resolve().parent)
    check_lengths(data, path)
    return data


def check_lengths(params: dict[str, Any], path: Path) -> None:
    """format_data.max_length above train_adapter.max_length formats records that training
    then drops, found only after formatting and mixing: refuse it when params load."""
    fmt = (params.get("format_data") or {}).get("max_length")
    train = (params.get("train_adapter") or {}).get("max_length")
    if isinstance(fmt, int) and isinstance(train, int) and not isinstance(fmt, bool) \
            and fmt > train:
        raise ConfigError(
            f"{path}: format_data.max_length={fmt} is above train_adapter.max_length={train}: "
            "records between the two would be formatted, then dropped by training; set both "
            "to the same length")


def user_paths(params: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted key, value) of every file or folder path a user can put in params.yaml."""
    found = []
    def add(key: str, value: Any) -> None:
        if isinstance(value, str) and value:
            found.append((key, value))

    def block(name: str) -> dict:
        value = params.get(name)
        return value if isinstance(value, dict) else {}

    def entries(node: Any) -> list:
        return list(node.items()) if isinstance(node, dict) else []

    add("prepare_base.local_path", block("prepare_base").get("local_path"))
    for task, spec in entries(block("format_data").get("tasks")):
        if isinstance(spec, dict) and spec.get("source") == "file":
            add(f"format_data.tasks.{task}.path", spec.get("path"))
        if isinstance(spec, dict) and spec.get("source") == "hf_dataset" and \
                Path(str(spec.get("name", ""))).is_dir():
            add(f"format_data.tasks.{task}.name", spec.get("name"))
    ev = block("evaluate")
    for name, spec in entries(ev.get("files")):
        for key in ("path", "labels"):
            add(f"evaluate.files.{name}.{key}", spec.get(key) if isinstance(spec, dict) else None)
    for name, spec in entries(ev.get("text_files")):
        add(f"evaluate.text_files.{name}.path", spec.get("path") if isinstance(spec, dict)
            else None)
    add("evaluate.lm_eval_include", ev.get("lm_eval_include"))
    return found


def check_paths(params: dict[str, Any], root: Path) -> None:
    """Paths in params stay inside the repository (the folder of params.yaml), so a
    shared params file cannot make a stage read ~/.ssh or /etc; `safety.allow_outside_paths:
    true` allows absolute paths and `..` for data kept elsewhere."""
    safety = params.get("safety") or {}
    if not isinstance(safety, dict) or not isinstance(safety.get("allow_outside_paths", False),
                                                        bool):
        raise ConfigError("safety.allow_outside_paths must be true or false")
    if safety.get("allow_outside_paths"):
        return
    for key, value in user_paths(params):
        resolved = (root / value).resolve()
        if Path(value).is_absolute() or not resolved.is_relative_to(root.resolve()):
            raise ConfigError(
                f"{key}: {value} is outside the repository; put the data under data/raw/ "
                "(a dep of the stages that read it), or set safety.allow_outside_paths: true")


def section(params: dict[str, Any], name: str, path: str = "params.yaml") -> dict[str, Any]:
    if name not in params:
        raise ConfigError(f"{path} has no '{name}:' section; add it (see README)")
    value = params[name]
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    wrong = ConfigError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is type(None) and value is None:
                return None
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise wrong
    if origin is Literal:
        if value not in get_args(tp):
            if isinstance(value, str):  # `precision: FP32` -> did you mean 'fp32'?
                hint = suggest(value, [a for a in get_args(tp) if isinstance(a, str)])
                raise ConfigError(f"{wrong}{hint}")
            raise wrong
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise wrong
        (item_tp,) = get_args(tp)[:1]
        return tuple(_coerce(item_tp, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        booleans = [k for k in value if isinstance(k, bool)]
        if booleans:
            raise ConfigError(
                f"{where}: the key {booleans[0]!r} is a YAML boolean (unquoted yes, no, on, "
                "off, true and false are read as booleans); quote the keys, e.g. "
                "'yes': Positive")
        _, val_tp = get_args(tp)
        return {str(k): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong
        return value
    if tp is float:
        if isinstance(value, str) and _looks_numeric(value):
            raise ConfigError(f"{where} must be a number, got the text {value!r} (quoted in "
                              f"the YAML?); write {float(value):.1e}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise wrong
        return value
    raise TypeError(f"unsupported type {tp!r} for {where}")  # our own dataclasses' bug


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from mapping `data`; `where` is the dotted key for messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}.{unknown[0]} is not a known key{suggest(unknown[0], fields)}; known keys "
            f"are: {', '.join(fields)}"
        )
    kwargs = {}
    for name, field in fields.items():
        if name not in data:
            no_default = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if no_default:
                expected = _type_name(hints[name])
                raise ConfigError(f"{where}.{name} is missing; it must be {expected}")
            continue
        kwargs[name] = _coerce(hints[name], data[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # range checks in __post_init__ name the field: "r must be ..."
        raise ConfigError(f"{where}.{err}") from err


def require(condition: bool, field: str, message: str) -> None:
    """Range check for `__post_init__`: `build` prefixes the section, giving `a.b.field ...`."""
    if not condition:
        raise ValueError(f"{field} {message}")
