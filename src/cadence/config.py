"""Agent profiles and the TOML config file that names them (INTERFACES.md, "Config").

A profile is everything one kind of agent needs: persona, voice, greeting, models, budgets.
Each part reads its own table (`asr`, `llm`, `tts`, `vlm`, `vad`, `turns`, `budgets`).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from cadence.errors import ConfigError

# Chosen by trying several prompts on 23 everyday questions with SmolLM2-135M: this short
# one answered the most correctly (~4 in 5); personas and style rules made it drift.
DEFAULT_INSTRUCTIONS = "You are a helpful assistant. Answer in one short sentence."

Mode = Literal["cascade", "native", "hybrid"]
_PROFILE_KEYS = {
    "instructions",
    "voice",
    "greeting",
    "mode",
    "asr",
    "llm",
    "tts",
    "vlm",
    "vad",
    "turns",
    "sampler",
    "budgets",
    "tools",
    "limits",
}


@dataclass(frozen=True)
class Profile:
    """One agent: persona, voice and the per-part tables of settings."""

    name: str = "default"
    instructions: str = DEFAULT_INSTRUCTIONS
    voice: str = "joe"
    greeting: str | None = None
    mode: Mode = "cascade"
    asr: Mapping[str, Any] = field(default_factory=dict)
    llm: Mapping[str, Any] = field(default_factory=dict)
    tts: Mapping[str, Any] = field(default_factory=dict)
    vlm: Mapping[str, Any] = field(default_factory=dict)
    vad: Mapping[str, Any] = field(default_factory=dict)
    turns: Mapping[str, Any] = field(default_factory=dict)
    sampler: Mapping[str, Any] = field(default_factory=dict)
    budgets: Mapping[str, Any] = field(default_factory=dict)
    tools: tuple[Mapping[str, Any], ...] = ()
    limits: Mapping[str, Any] = field(default_factory=dict)

    def with_instructions(self, instructions: str) -> Profile:
        return replace(self, instructions=instructions)


@dataclass(frozen=True)
class Config:
    default_profile: str = "default"
    profiles: Mapping[str, Profile] = field(default_factory=lambda: {"default": Profile()})

    def profile(self, name: str | None = None) -> Profile:
        key = name or self.default_profile
        if key not in self.profiles:
            known = ", ".join(sorted(self.profiles))
            raise ConfigError(f"unknown agent profile {key!r}; the config defines: {known}")
        return self.profiles[key]


def _profile_from(name: str, table: Mapping[str, Any]) -> Profile:
    unknown = set(table) - _PROFILE_KEYS
    if unknown:
        raise ConfigError(
            f"profile {name!r}: unknown keys {sorted(unknown)}; allowed: {sorted(_PROFILE_KEYS)}"
        )
    mode = table.get("mode", "cascade")
    if mode not in ("cascade", "native", "hybrid"):
        raise ConfigError(f"profile {name!r}: mode {mode!r} is not cascade, native or hybrid")
    for key in ("asr", "llm", "tts", "vlm", "vad", "turns", "sampler", "budgets", "limits"):
        if not isinstance(table.get(key, {}), Mapping):
            raise ConfigError(f"profile {name!r}: [{key}] must be a table")
    tools = table.get("tools", [])
    if not isinstance(tools, list):
        raise ConfigError(f"profile {name!r}: tools must be an array of tables")
    kwargs: dict[str, Any] = {k: v for k, v in table.items() if k != "tools"}
    return Profile(name=name, tools=tuple(tools), **kwargs)


def parse_config(data: Mapping[str, Any]) -> Config:
    profiles_table = data.get("profiles", {})
    if not isinstance(profiles_table, Mapping):
        raise ConfigError("[profiles] must be a table of profile tables")
    profiles = {name: _profile_from(name, t) for name, t in profiles_table.items()}
    if not profiles:
        profiles = {"default": Profile()}
    default = data.get("default_profile", next(iter(profiles)))
    config = Config(default_profile=default, profiles=profiles)
    config.profile()  # the default must exist
    return config


def load_config(path: str | Path | None) -> Config:
    """Read a TOML config; no path gives the built-in default profile."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    return parse_config(data)
