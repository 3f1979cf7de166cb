"""Tools an agent can call: Python functions (JSON schema from their type hints) the server
runs off the event loop with a timeout, and functions a Realtime client declares and runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import importlib
import inspect
import json
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from cadence.errors import ConfigError, InputError

DEFAULT_TIMEOUT_S = 10.0  # past it the call fails with a timeout output; the turn goes on
MAX_OUTPUT_CHARS = 4000  # a tool output goes into the prompt: bound it
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what OpenAI accepts as a function name


@dataclass(frozen=True)
class ToolSpec:
    """What the model sees of a tool, and how the runtime treats it."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )
    side_effects: bool = False  # changes the world (a booking): never re-run silently
    client: bool = False  # declared and executed by a Realtime client
    timeout_s: float = DEFAULT_TIMEOUT_S
    keywords: tuple[str, ...] = ()  # extra words a request may use to ask for this tool

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"tool name {self.name[:80]!r} must be 1-64 letters, digits, _ or -")
        if self.parameters.get("type", "object") != "object":
            raise ConfigError(f"tool {self.name}: parameters must be a JSON schema object")
        if not self.timeout_s > 0:
            raise ConfigError(f"tool {self.name}: timeout_s must be > 0, not {self.timeout_s}")

    def to_realtime(self) -> dict[str, Any]:
        """As a Realtime `session.tools` entry."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }


@dataclass(frozen=True)
class ToolResult:
    """One call's outcome; `output` is what the model and the client get (JSON text)."""

    output: str
    status: Literal["completed", "failed"]
    elapsed_ms: float
    timed_out: bool = False


@dataclass(frozen=True)
class _Tool:
    spec: ToolSpec
    func: Callable[..., Any] | None  # None for client tools
    hints: Mapping[str, Any] = field(default_factory=dict)


# ---- JSON schema from type hints -----------------------------------------------------------


def _json_type(values: Sequence[Any]) -> dict[str, Any]:
    kinds = {type(v) for v in values}
    names = {str: "string", bool: "boolean", int: "integer", float: "number"}
    return {"type": names[kinds.pop()]} if len(kinds) == 1 and next(iter(kinds)) in names else {}


def type_schema(hint: Any, where: str) -> dict[str, Any]:
    """JSON schema of one annotation: str, int, float, bool, Literal, Enum, Optional, list."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        schema = type_schema(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        return {**schema, "description": notes[0]} if notes else schema
    if hint is str:
        return {"type": "string"}
    if hint is bool:  # before int: a bool is an int to Python, not to JSON schema
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer"}
    if hint is float:
        return {"type": "number"}
    if origin is Literal:
        return {**_json_type(args), "enum": list(args)}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [member.value for member in hint]
        return {**_json_type(values), "enum": values}
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if len(options) == 1 and len(args) == 2:
            return {"anyOf": [type_schema(options[0], where), {"type": "null"}]}
    if origin in (list, Sequence, tuple) and args and (origin is not tuple or args[-1] is ...):
        return {"type": "array", "items": type_schema(args[0], where)}
    raise ConfigError(
        f"{where}: type {hint!r} has no JSON schema here; use str, int, float, bool, "
        "Literal, an Enum, list[...] or Optional[...]"
    )


def _doc_parts(func: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The docstring's first paragraph, and `name: text` lines of its Args section."""
    doc = inspect.getdoc(func) or ""
    paragraphs = re.split(r"\n\s*\n", doc.strip())
    summary = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""
    if re.match(r"^(Args|Arguments|Parameters):", summary):
        summary = ""
    params: dict[str, str] = {}
    in_args = False
    for line in doc.splitlines():
        if re.match(r"^\s*(Args|Arguments|Parameters):\s*$", line):
            in_args = True
            continue
        if in_args:
            found = re.match(r"^\s+(\w+)\s*(?:\([^)]*\))?:\s*(.+)$", line)
            if found:
                params[found[1]] = found[2].strip()
            elif line.strip() and not line.startswith((" ", "\t")):
                in_args = False
    return summary, params


def schema_from_function(func: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    """(description, parameters schema) of a function from its docstring and type hints."""
    where = getattr(func, "__qualname__", repr(func))
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except (NameError, TypeError) as exc:
        raise ConfigError(f"{where}: its type hints cannot be resolved: {exc}") from None
    summary, notes = _doc_parts(func)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ConfigError(f"{where}: parameter {name!r} must be a plain named parameter")
        if name not in hints:
            raise ConfigError(f"{where}: parameter {name!r} needs a type annotation")
        schema = type_schema(hints[name], f"{where}({name})")
        if name in notes and "description" not in schema:
            schema["description"] = notes[name]
        if param.default is param.empty:
            required.append(name)
        else:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            if isinstance(default, str | int | float | bool | type(None)):
                schema["default"] = default
        properties[name] = schema
    parameters: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        parameters["required"] = required
    return summary, parameters


# ---- running tools ----------------------------------------------------------------------------


def to_output(value: Any) -> str:
    """A tool's return value as output text: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, default=_jsonable)
    if len(text) > MAX_OUTPUT_CHARS:
        text = text[:MAX_OUTPUT_CHARS] + "…(truncated)"
    return text


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _coerce(hint: Any, value: Any) -> Any:
    """JSON values → what the function's hints ask for (Enum members, tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _coerce(args[0], value)
    if value is None:
        return None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is float and isinstance(value, int):
        return float(value)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _coerce(options[0], value) if len(options) == 1 else value
    if origin in (list, Sequence, tuple) and args and isinstance(value, list):
        items = [_coerce(args[0], v) for v in value]
        return tuple(items) if origin is tuple else items
    return value


def check_arguments(schema: Mapping[str, Any], arguments: Any, where: str = "arguments") -> None:
    """Raise `InputError` when `arguments` does not fit the (subset of) JSON schema we use."""
    kind, enum_values = schema.get("type"), schema.get("enum")
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        for alt in alternatives:
            try:
                check_arguments(alt, arguments, where)
                return
            except InputError:
                continue
        raise InputError(f"{where} matches none of its allowed forms")
    if enum_values is not None and arguments not in enum_values:
        raise InputError(f"{where} must be one of {enum_values}, not {arguments!r}")
    checks: dict[str, Callable[[Any], bool]] = {
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if isinstance(kind, str) and kind in checks and not checks[kind](arguments):
        raise InputError(f"{where} must be a JSON {kind}, not {arguments!r}")
    if kind == "object" and isinstance(arguments, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in arguments:
                raise InputError(f"{where} lacks the required {name!r}")
        for name, value in arguments.items():
            if name in properties:
                check_arguments(properties[name], value, f"{where}.{name}")
            elif schema.get("additionalProperties") is False:
                raise InputError(f"{where} has an unknown key {name!r}")
    if kind == "array" and isinstance(arguments, list) and "items" in schema:
        for i, item in enumerate(arguments):
            check_arguments(schema["items"], item, f"{where}[{i}]")


class ToolRegistry:
    """The tools of a session: server-side Python functions and client-declared ones."""

    def __init__(self) -> None:
        self._tools: dict[str, _Tool] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [tool.spec for tool in self._tools.values()]

    def get(self, name: str) -> ToolSpec | None:
        tool = self._tools.get(name)
        return tool.spec if tool else None

    def register(
        self,
        func: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
        side_effects: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        keywords: Iterable[str] = (),
    ) -> Any:
        """Register a sync or async function; usable as `@registry.register` or with options.

        The JSON schema comes from the type hints, the description from the docstring (its
        Args section describes the parameters). Returns the function unchanged."""

        def add(target: Callable[..., Any]) -> Callable[..., Any]:
            summary, parameters = schema_from_function(target)
            spec = ToolSpec(
                name or target.__name__,
                description if description is not None else summary,
                parameters,
                side_effects=side_effects,
                timeout_s=timeout_s,
                keywords=tuple(keywords),
            )
            if spec.name in self._tools:
                raise ConfigError(f"a tool named {spec.name!r} is already registered")
            hints = typing.get_type_hints(target, include_extras=True)
            self._tools[spec.name] = _Tool(spec, target, hints)
            return target

        return add(func) if func is not None else add

    def set_client_tools(self, specs: Iterable[ToolSpec]) -> None:
        """Replace the client-declared tools (a Realtime `session.update` with `tools`)."""
        incoming = list(specs)
        for spec in incoming:
            own = self._tools.get(spec.name)
            if own is not None and not own.spec.client:
                raise InputError(f"tool {spec.name!r} is a server tool; pick another name")
        self._tools = {n: t for n, t in self._tools.items() if not t.spec.client}
        for spec in incoming:
            self._tools[spec.name] = _Tool(dataclasses.replace(spec, client=True), None)

    @classmethod
    def from_config(cls, tables: Iterable[Mapping[str, Any]]) -> ToolRegistry:
        """From a profile's `tools` array: each table names a Python function to import."""
        registry = cls()
        allowed = {"function", "name", "description", "side_effects", "timeout_s", "keywords"}
        for table in tables:
            unknown = set(table) - allowed
            if unknown:
                raise ConfigError(f"[[tools]]: unknown keys {sorted(unknown)}; allowed {allowed}")
            path = table.get("function")
            if not isinstance(path, str) or ":" not in path:
                raise ConfigError('[[tools]] needs function = "package.module:function"')
            module_name, _, attr = path.partition(":")
            try:
                target = getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"[[tools]] cannot import {path!r}: {exc}") from None
            registry.register(
                target,
                name=table.get("name"),
                description=table.get("description"),
                side_effects=bool(table.get("side_effects", False)),
                timeout_s=float(table.get("timeout_s", DEFAULT_TIMEOUT_S)),
                keywords=tuple(table.get("keywords", ())),
            )
        return registry

    async def call(self, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run a server tool: sync functions in a worker thread, all under the tool's timeout.

        Bad arguments, exceptions and timeouts come back as a failed result with an
        `{"error": ...}` output, never as an exception: every call gets exactly one output.
        A timed-out sync function cannot be stopped; its thread finishes on its own and the
        result is dropped, so a tool with side effects says it may have acted."""
        tool = self._tools.get(name)
        start = time.perf_counter()

        def failed(message: str, *, timed_out: bool = False) -> ToolResult:
            body: dict[str, Any] = {"error": message}
            if tool is not None and tool.spec.side_effects and timed_out:
                body["may_have_completed"] = True
            elapsed = (time.perf_counter() - start) * 1000.0
            return ToolResult(to_output(body), "failed", elapsed, timed_out)

        if tool is None or tool.func is None:
            return failed(f"{name} is not a server tool")
        try:
            check_arguments(tool.spec.parameters, dict(arguments))
            kwargs = {k: _coerce(tool.hints.get(k, Any), v) for k, v in arguments.items()}
        except (InputError, ValueError) as exc:
            return failed(f"bad arguments for {name}: {exc}")
        try:
            async with asyncio.timeout(tool.spec.timeout_s):
                if inspect.iscoroutinefunction(tool.func):
                    value = await tool.func(**kwargs)
                else:
                    value = await asyncio.to_thread(tool.func, **kwargs)
        except TimeoutError:
            return failed(f"{name} did not answer within {tool.spec.timeout_s:g} s", timed_out=True)
        except Exception as exc:  # a tool's bug is its output, not the session's crash
            return failed(f"{name} failed: {type(exc).__name__}: {exc}")
        elapsed = (time.perf_counter() - start) * 1000.0
        return ToolResult(to_output(value), "completed", elapsed)
