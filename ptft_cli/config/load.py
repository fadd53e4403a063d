"""Reading a config: YAML (safe_load semantics) with the line of every key, `--set` overrides and
typed command-line values, conversion and checks against the schema.

`load(path, overrides, values)` returns a typed `Config` or raises one `ConfigError` that lists every
problem, each naming the file and line. Only this package knows YAML.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ptft_cli.config import aliases
from ptft_cli.config.schema import HUB_ID, Config, reference, type_name
from ptft_cli.errors import ConfigError

# --------------------------------------------------------------------------------------------
# Loading


def load(
    path: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, tuple[str, Any]] | None = None,
) -> Config:
    """Read, override, type-check and validate a config file. Raises ConfigError listing every problem.

    `overrides` are `--set key=value` strings (the value parsed as YAML); `values` maps a key to
    (the option that set it, a typed value) for options such as `--input PATH`, which are taken as
    they are, never parsed as YAML (`a #1.txt` stays a file name).
    """
    path = Path(path).expanduser()
    try:
        raw_bytes = path.read_bytes() if path.is_file() else None
    except OSError as e:
        raise ConfigError(f"cannot read the config: {e.strerror}", where=str(path)) from None
    if raw_bytes is None:
        if not path.exists():
            problem, hint = "config file not found", "check the path; configs/ holds examples"
        elif path.is_dir():
            problem, hint = "is a directory, not a file", "pass a YAML file"
        else:
            problem, hint = "is not a regular file", "pass a YAML file"
        raise ConfigError(problem, where=str(path), hint=hint)
    try:
        text = raw_bytes.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw_bytes[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw_bytes[e.start]:02x})",
            where=f"{path}:{line}",
            hint="save the config as UTF-8",
        ) from None
    problems: list[ConfigError] = []
    raw, lines = _parse_yaml(text, path, problems)
    source = path.resolve()
    cfg = Config(source=source, lines=lines)
    return _build(cfg, raw, source.parent, (overrides, values), problems)


def load_dict(
    data: dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, tuple[str, Any]] | None = None,
    *,
    origin: str = "<dict>",
) -> Config:
    """`load` for a config given as Python data (the API's `ptft.finetune({...})`): the same schema,
    checks and messages, with `origin` where a file would be named. Relative paths resolve against
    the working directory; a key may also be dotted (`{"training.batch_size": 8}`)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"a config must be a mapping of keys, got {type(data).__name__}",
            where=origin,
            hint="e.g. {'task': 'classification', 'output_dir': 'runs/x', ...}",
        )
    _check_size(data, Path(origin))  # before anything walks it: a dict may contain itself
    problems: list[ConfigError] = []
    raw: dict[str, Any] = {}
    for key, value in _plain_data(data).items():
        if isinstance(key, str) and "." in key:
            _set(raw, key, value, origin, problems)
        elif isinstance(raw.get(key), dict) and isinstance(value, dict):
            raw[key].update(value)  # a section given both ways: {"training": {...}, "training.x": 1}
        else:
            raw[key] = value
    raw.pop("__overridden__", None)  # dotted keys name the dict itself, which `where` says anyway
    # every key the dict sets, with no line: "set by the user" (a default may be adjusted, a set value not)
    lines = {key: 0 for key in _keys(raw, "")}
    cfg = Config(source=None, lines=lines, origin=origin)
    return _build(cfg, raw, Path.cwd(), (overrides, values), problems)


def _keys(raw: dict, prefix: str) -> list[str]:
    """The dotted keys of nested data, at most 3 levels deep (as `_record_lines` records a file's)."""
    keys = []
    for name, value in raw.items():
        keys.append(f"{prefix}{name}")
        if isinstance(value, dict) and prefix.count(".") < 2:
            keys += _keys(value, f"{prefix}{name}.")
    return keys


def _plain_data(value: Any) -> Any:
    """A copy of the user's data that YAML could have produced: paths become strings, tuples lists
    (the user's own dict is never changed)."""
    if isinstance(value, dict):
        return {k: _plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_data(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _build(
    cfg: Config,
    raw: dict,
    base: Path,
    changes: tuple[list[str] | tuple[str, ...], dict[str, tuple[str, Any]] | None],
    problems: list[ConfigError],
) -> Config:
    """Apply overrides and typed values to the raw data, fill `cfg` and check it: every problem of
    the config is gathered into one ConfigError (wrong types and impossible combinations together)."""
    overrides, values = changes
    for item in overrides:
        _apply_override(raw, item, problems)
    for key, (option, value) in (values or {}).items():
        _set(raw, key, value, option, problems)
    cfg.overridden = raw.pop("__overridden__", {})
    _fill(cfg, raw, "", base, cfg, problems)
    _resolve_default_paths(cfg, base)
    _check_semantics(cfg, problems)
    if problems:
        raise ConfigError.many(problems)
    return cfg


def _parse_yaml(text: str, path: Path, problems: list[ConfigError]) -> tuple[dict, dict[str, int]]:
    """safe_load the text and record the line of every key (`section.key` -> line); keys that
    appear twice are added to `problems`."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters: can raise too
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"invalid YAML: {problem}", where=where, hint="check indentation and quoting"
        ) from None
    except RecursionError:
        raise ConfigError(
            f"values nested more than {MAX_DEPTH} levels deep",
            where=str(path),
            hint="a config is two levels deep",
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    _check_size(data, path)
    if data is None:
        raise ConfigError("config file is empty", where=str(path), hint="start from a file in configs/")
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of keys, got {type(data).__name__}",
            where=f"{path}:1",
            hint="e.g. `task: classification`",
        )
    lines: dict[str, int] = {}
    _record_lines(node, "", lines, (path, problems))
    return data, lines


MAX_VALUES = 100_000  # a config holds a few hundred values; aliases must not blow that up
MAX_DEPTH = 20


def _check_size(data: Any, path: Path) -> None:
    """Refuse YAML aliases that refer to themselves or expand beyond any sane config, before
    anything walks the values (an alias bomb doubles its size with each level)."""
    count, stack = 0, [(data, 0, ())]
    while stack:
        value, depth, parents = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"the values expand to more than {MAX_VALUES:,} (YAML aliases?)",
                where=str(path),
                hint="write the values out; a config needs no aliases of that size",
            )
        if depth > MAX_DEPTH:
            raise ConfigError(
                f"values nested more than {MAX_DEPTH} levels deep",
                where=str(path),
                hint="a config is two levels deep",
            )
        if isinstance(value, (dict, list)):
            if id(value) in parents:
                raise ConfigError(
                    "a YAML alias refers to itself", where=str(path), hint="remove the recursive alias"
                )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1, (*parents, id(value))) for child in children)


def _record_lines(
    node: yaml.Node, prefix: str, lines: dict[str, int], report: tuple[Path, list[ConfigError]]
) -> None:
    if not isinstance(node, yaml.MappingNode) or prefix.count(".") >= 2:  # keys are at most 3 levels deep
        return
    path, problems = report
    seen: set[str] = set()
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        if key in seen:
            problems.append(
                ConfigError(
                    f"key appears twice (first on line {lines[key]})",
                    where=f"{path}:{key_node.start_mark.line + 1}",
                    key=key,
                    hint="keep one of them",
                )
            )
            continue
        seen.add(key)
        lines[key] = key_node.start_mark.line + 1
        _record_lines(value_node, key + ".", lines, report)


def _apply_override(raw: dict, item: str, problems: list[ConfigError]) -> None:
    """Apply `a.b.c=value` to the raw dict; the value is parsed as a YAML scalar/list."""
    if "=" not in item:
        problems.append(
            ConfigError(
                f"expected key=value, got {item!r}",
                where="--set",
                hint="e.g. --set training.learning_rate=3e-5",
            )
        )
        return
    key, _, text = item.partition("=")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    except RecursionError:
        problems.append(ConfigError("the value is nested too deeply", where="--set", key=key.strip()))
        return
    _set(raw, key.strip(), value, "--set", problems)


def _set(raw: dict, key: str, value: Any, option: str, problems: list[ConfigError]) -> None:
    """Put `value` at the dotted `key` of the raw config, remembering which option set it."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            problems.append(ConfigError(f"{part!r} is not a section", where=option, key=key))
            return
        node = child
    node[parts[-1]] = value
    raw.setdefault("__overridden__", {})[key] = option


def _fill(target: Any, raw: dict, prefix: str, base: Path, cfg: Config, problems: list[ConfigError]) -> None:
    """Copy raw values into the dataclass `target`, converting and checking each against its field
    (a refused value leaves the default in place and adds a problem naming its key)."""
    fields = {f.name: f for f in dataclasses.fields(target) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(type(target))
    for name, value in raw.items():
        key = f"{prefix}{name}"
        where = cfg.where(key)
        if name not in fields:
            hint = aliases.suggest(str(name), prefix, list(fields), _every_key())
            problems.append(ConfigError("unknown key", where=where, key=key, hint=hint))
            continue
        f, hint_type = fields[name], hints[name]
        if dataclasses.is_dataclass(hint_type):
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(
                    ConfigError(f"must be a section of keys, got {_show(value)}", where=where, key=key)
                )
                continue
            _fill(getattr(target, name), value, key + ".", base, cfg, problems)
            continue
        # Command-line values resolve against the working directory, file values against the config's folder.
        relative_to = Path.cwd() if key in cfg.overridden else base
        try:
            converted = _convert(value, hint_type, blank_ok=f.metadata.get("blank_ok", False))
            _check_bounds(converted, f.metadata)
            converted = _resolve_paths(converted, f.metadata, relative_to)
        except ValueError as e:
            problems.append(ConfigError(str(e), where=where, key=key, hint=_allowed(f, hint_type)))
            continue
        setattr(target, name, converted)


def _resolve_default_paths(section: Any, base: Path) -> None:
    """Schema defaults that are paths (e.g. `~/.cache/ptft`) get the same treatment as written ones."""
    for f in dataclasses.fields(section):
        if f.metadata.get("internal"):
            continue
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            _resolve_default_paths(value, base)
        elif f.metadata.get("path") and isinstance(value, str) and value == f.default:
            setattr(section, f.name, _resolve_paths(value, f.metadata, base))


@functools.cache
def _every_key() -> list[str]:
    return [row[0] for row in reference()]


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxstring, _SHOW.maxother = 2, 4, 4, 40, 40


def _show(value: Any) -> str:
    """A short, bounded rendering of a value for messages (never the whole of a huge value)."""
    return _SHOW.repr(value)


def _allowed(f: dataclasses.Field, tp: Any) -> str:
    bounds = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    limits = [f"{sym} {f.metadata[k]}" for k, sym in bounds.items() if k in f.metadata]
    text = f"allowed: {type_name(tp)}"
    return text + (f" ({', '.join(limits)})" if limits else "")


def _convert(value: Any, tp: Any, *, blank_ok: bool = False) -> Any:
    """Convert a YAML value to the annotated type or raise ValueError saying what was wrong.

    Strings must not be empty; with `blank_ok` whitespace-only ones pass (stop strings such as "\\n").
    """
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ValueError("must not be null")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, blank_ok=blank_ok)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(
            errors[0] if len(errors) == 1 else f"expected {type_name(tp)}, got {_show(value)}{_braces(value)}"
        )
    if value is None:
        raise ValueError("must not be null")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        extra = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{_show(value)} is not one of {', '.join(map(str, choices))}{extra}")
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {_show(value)}")
        return {_convert(k, key_type): _convert(v, value_type) for k, v in value.items()}
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {type_name(item_type)}, got {_show(value)}")
        return [_convert(v, item_type, blank_ok=blank_ok) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"expected an integer, got {_show(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise ValueError(f"{_show(value)} is out of range") from None
        elif isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string; accept it as a number.
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is not None and not math.isfinite(number):
            raise ValueError(f"{_show(value)} is not a finite number")
        if number is not None:
            return number
        raise ValueError(f"expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            if not (value if blank_ok else value.strip()):
                raise ValueError("must not be empty")
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {_show(value)}{_braces(value)}")
    raise TypeError(f"schema type {tp} not handled")  # a bug in the schema, not user input


def _braces(value: Any) -> str:
    """YAML reads an unquoted `{question}` as a mapping; a format string was meant."""
    if isinstance(value, dict) and value and all(v is None for v in value.values()):
        name = next(iter(value))
        return f' (YAML reads {{{name}}} as a mapping: quote the format string, e.g. "{{{name}}}")'
    return ""


def _check_bounds(value: Any, meta: dict) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for key, ok, word in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        if key in meta and not ok(value, meta[key]):
            raise ValueError(f"{_show(value)} is out of range: must be {word} {meta[key]:,}")


def _resolve_paths(value: Any, meta: dict, base: Path) -> Any:
    """Make relative paths absolute against `base`; leave Hub ids alone."""
    try:
        return _resolve(value, meta, base)
    except (OSError, RuntimeError) as e:  # a symlink loop, a name too long for the file system
        raise ValueError(
            f"{_show(value)} is not a usable path ({getattr(e, 'strerror', None) or e})"
        ) from None


def _resolve(value: Any, meta: dict, base: Path) -> Any:
    if value is None:
        return None
    if meta.get("path"):
        if value == meta.get("keyword"):  # e.g. `resume: auto`
            return value
        if isinstance(value, list):
            return [_resolve(v, meta, base) for v in value]
        return str((base / Path(value).expanduser()).resolve()) if "://" not in value else value
    if meta.get("model_ref"):
        local = (base / Path(value).expanduser()).resolve()
        looks_local = value.startswith((".", "/", "~")) or not HUB_ID.match(value)
        return str(local) if local.exists() or looks_local else value
    return value


# --------------------------------------------------------------------------------------------
# Cross-field checks (impossible combinations) that hold for every task. A task's own rules live in
# its module (`tasks/<task>.py: check_config`); file existence is checked by the task's preflight,
# which knows which files the command needs.


def _check_semantics(cfg: Config, problems: list[ConfigError]) -> None:
    """Impossible combinations. A check is skipped when a key it reads has a problem already (a
    refused value holds its default, so the check would report a combination the user never wrote)."""
    t = cfg.training
    failed = {p.key for p in problems if p.key}

    def bad(key: str, message: str, hint: str | None = None, reads: tuple[str, ...] = ()) -> None:
        if any(k == f or k.startswith(f + ".") for k in (key, *reads) for f in failed):
            return
        problems.append(ConfigError(message, where=cfg.where(key), key=key, hint=hint))

    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        bad("device", f"{_show(cfg.device)} is not a device", "allowed: auto, cpu, cuda, cuda:N, mps")
    if cfg.output_dir is None:
        bad("output_dir", "is required", "e.g. `output_dir: runs/my-run` (relative to the config's folder)")
    if t.warmup_steps is not None and t.warmup_ratio > 0:
        bad(
            "training.warmup_steps",
            "set either warmup_steps or warmup_ratio, not both",
            reads=("training.warmup_ratio",),
        )
    if len(t.adam_betas) != 2 or not all(0 <= b < 1 for b in t.adam_betas):
        bad("training.adam_betas", f"{t.adam_betas} must be two numbers in [0, 1)", "e.g. [0.9, 0.999]")
    if isinstance(t.eval_every, int) and t.eval_every < 1:
        bad("training.eval_every", f"{t.eval_every} must be >= 1 or `epoch`")
    if isinstance(t.save_every, int) and t.save_every < 1:
        bad("training.save_every", f"{t.save_every} must be >= 1 or `eval`")
    if t.min_learning_rate > t.learning_rate:
        bad(
            "training.min_learning_rate",
            f"{t.min_learning_rate} is above learning_rate {t.learning_rate}",
            reads=("training.learning_rate",),
        )
    if t.early_stopping_patience is not None and t.best_metric is None:
        bad(
            "training.early_stopping_patience",
            "needs training.best_metric to know what 'better' means",
            reads=("training.best_metric",),
        )
    d = cfg.data
    m, tok, o = cfg.model, cfg.tokenizer, cfg.objective
    if m.architecture and m.name_or_path:
        bad(
            "model.architecture",
            "set either model.architecture (a new model) or model.name_or_path (a pretrained one), not both",
            reads=("model.name_or_path",),
        )
    if m.hidden_size % m.num_heads:
        bad(
            "model.num_heads",
            f"{m.num_heads} does not divide hidden_size {m.hidden_size}",
            reads=("model.hidden_size",),
        )
    if m.num_kv_heads is not None and m.num_heads % m.num_kv_heads:
        bad(
            "model.num_kv_heads",
            f"{m.num_kv_heads} does not divide num_heads {m.num_heads}",
            reads=("model.num_heads",),
        )
    if m.max_position_embeddings is not None and m.max_position_embeddings < tok.max_length:
        bad(
            "model.max_position_embeddings",
            f"{m.max_position_embeddings} is shorter than tokenizer.max_length {tok.max_length}",
            reads=("tokenizer.max_length",),
        )
    if tok.type and tok.name_or_path:
        bad(
            "tokenizer.type",
            "set either tokenizer.type (train a new one) or tokenizer.name_or_path, not both",
            reads=("tokenizer.name_or_path",),
        )
    roles = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")
    for role in tok.special_tokens or {}:
        if role not in roles:
            bad("tokenizer.special_tokens", f"unknown role {role!r}", f"allowed roles: {', '.join(roles)}")
    if o.mask_replace_ratio + o.random_replace_ratio > 1:
        bad(
            "objective.random_replace_ratio",
            f"mask_replace_ratio + random_replace_ratio = {o.mask_replace_ratio + o.random_replace_ratio:g} exceeds 1",
            reads=("objective.mask_replace_ratio",),
        )
    if d.streaming and t.max_steps is None:
        bad(
            "data.streaming",
            "a stream has no known length, so training needs training.max_steps",
            reads=("training.max_steps",),
        )
    if d.streaming and not d.validation and not d.dataset and d.validation_fraction > 0:
        bad(
            "data.streaming",
            "a stream cannot hold out a fraction",
            "set data.validation to a file, or data.validation_fraction: 0",
            reads=("data.validation", "data.dataset", "data.validation_fraction"),
        )
    if d.dataset and d.train:
        bad(
            "data.dataset",
            "set either data.dataset (Hub) or data.train (local file), not both",
            reads=("data.train",),
        )
    if cfg.model.freeze_backbone and cfg.model.train_top_k_layers is not None:
        bad(
            "model.train_top_k_layers",
            "conflicts with model.freeze_backbone: choose one",
            reads=("model.freeze_backbone",),
        )
    if d.labels is not None and len(set(d.labels)) != len(d.labels):
        bad("data.labels", "label names must be distinct")
    if d.labels is not None and len(d.labels) < 2:
        bad("data.labels", "a classifier needs at least 2 labels")


def dump(cfg: Config) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def resume_changes(saved_yaml: str, cfg: Config) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every key that differs from a checkpoint's resolved config
    and may not change on resume (see `schema.resume_safe_keys`)."""
    from ptft_cli.config.schema import resume_safe_keys

    loaded = yaml.safe_load(saved_yaml.split("\n", 1)[1] if saved_yaml.startswith("#") else saved_yaml) or {}
    if not isinstance(loaded, dict):
        raise ValueError("its config.yaml is not a mapping")
    # A key the checkpoint's config lacks (written before the key existed) had its default then.
    saved = {**_flatten(Config().to_dict()), **_flatten(loaded)}
    now = _flatten(cfg.to_dict())
    safe = set(resume_safe_keys())
    return [
        (k, saved.get(k), now.get(k))
        for k in sorted(saved.keys() | now.keys())
        if k not in safe and saved.get(k) != now.get(k)
    ]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("special_tokens",):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out
