"""The Realtime `session` object: its defaults and how `session.update` changes it.

An update is validated whole before any of it applies, so a rejected update changes
nothing; what cadence cannot honour (another audio format) is an error, not ignored.
"""

from __future__ import annotations

import copy
from typing import Any

from cadence.errors import AudioFormatError, InputError, ProtocolError
from cadence.transport.client_events import (
    REALTIME_RATE,
    Command,
    Rejected,
    SetInstructions,
    SetTurnDetection,
)
from cadence.transport.tool_events import set_tools_command

VAD_TYPES = ("server_vad", "semantic_vad")
DEFAULT_TURN_DETECTION: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "create_response": True,
    "interrupt_response": True,
}
PCM_FORMAT = {"type": "audio/pcm", "rate": REALTIME_RATE}


def default_session(
    session_id: str, model: str, instructions: str, voice: str, expires_at: int
) -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": ["audio"],
        "instructions": instructions,
        "audio": {
            "input": {
                "format": dict(PCM_FORMAT),
                "transcription": {"model": "cadence-asr"},
                "noise_reduction": None,
                "turn_detection": dict(DEFAULT_TURN_DETECTION),
            },
            "output": {"format": dict(PCM_FORMAT), "voice": voice, "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "expires_at": expires_at,
    }


def _check_format(value: Any, where: str, event_id: str | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Rejected(ProtocolError(f"{where} must be an object"), event_id, where)
    kind, rate = value.get("type"), value.get("rate", REALTIME_RATE)
    if kind != "audio/pcm" or rate != REALTIME_RATE:
        raise Rejected(
            AudioFormatError(
                f"{where} {kind}@{rate} is not supported; "
                "use {'type': 'audio/pcm', 'rate': 24000}"
            ),
            event_id,
            where,
        )
    return dict(PCM_FORMAT)


def _table(parent: dict[str, Any], key: str, where: str, event_id: str | None) -> dict[str, Any]:
    value = parent.get(key, {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise Rejected(ProtocolError(f"{where} must be an object"), event_id, where)
    return value


def apply_update(
    current: dict[str, Any], event: dict[str, Any]
) -> tuple[dict[str, Any], list[Command]]:
    """Validate a `session.update` against `current`; return the new session and commands."""
    event_id = event.get("event_id")
    patch = event.get("session")
    if not isinstance(patch, dict):
        raise Rejected(
            ProtocolError("session.update needs a `session` object"), event_id, "session"
        )
    if patch.get("type", "realtime") != "realtime":
        raise Rejected(
            ProtocolError("only `realtime` sessions are served (not transcription sessions)"),
            event_id,
            "session.type",
        )
    new = copy.deepcopy(current)
    commands: list[Command] = []
    if "instructions" in patch:
        if not isinstance(patch["instructions"], str):
            raise Rejected(
                ProtocolError("instructions must be a string"), event_id, "session.instructions"
            )
        new["instructions"] = patch["instructions"]
        commands.append(SetInstructions(patch["instructions"]))
    if "output_modalities" in patch:
        modalities = patch["output_modalities"]
        if (
            not isinstance(modalities, list)
            or not modalities
            or not set(modalities) <= {"text", "audio"}
        ):
            raise Rejected(
                ProtocolError("output_modalities must be ['audio'] or ['text']"),
                event_id,
                "session.output_modalities",
            )
        new["output_modalities"] = ["audio"] if "audio" in modalities else ["text"]
    audio = _table(patch, "audio", "session.audio", event_id)
    audio_in = _table(audio, "input", "session.audio.input", event_id)
    audio_out = _table(audio, "output", "session.audio.output", event_id)
    new_in, new_out = new["audio"]["input"], new["audio"]["output"]
    if "format" in audio_in:
        new_in["format"] = _check_format(audio_in["format"], "session.audio.input.format", event_id)
    if "format" in audio_out:
        new_out["format"] = _check_format(
            audio_out["format"], "session.audio.output.format", event_id
        )
    if "turn_detection" in audio_in:
        detection = audio_in["turn_detection"]
        if detection is None:
            new_in["turn_detection"] = None
            commands.append(SetTurnDetection(False))
        elif isinstance(detection, dict) and detection.get("type", "server_vad") in VAD_TYPES:
            # Tuning fields are echoed back; cadence's own turn controller and budgets decide.
            new_in["turn_detection"] = {**DEFAULT_TURN_DETECTION, **detection}
            commands.append(SetTurnDetection(True))
        else:
            raise Rejected(
                ProtocolError("turn_detection must be null, server_vad or semantic_vad"),
                event_id,
                "session.audio.input.turn_detection",
            )
    for key in ("transcription", "noise_reduction"):
        if key in audio_in:
            new_in[key] = audio_in[key]
    if "voice" in audio_out:
        if not isinstance(audio_out["voice"], str | dict):
            raise Rejected(
                ProtocolError("voice must be a string"), event_id, "session.audio.output.voice"
            )
        new_out["voice"] = audio_out["voice"]
    if "speed" in audio_out:
        new_out["speed"] = audio_out["speed"]
    if "tools" in patch:
        if not isinstance(patch["tools"], list):
            raise Rejected(ProtocolError("tools must be a list"), event_id, "session.tools")
        new["tools"] = patch["tools"]
    for key in ("tool_choice", "max_output_tokens", "tracing", "truncation", "prompt", "include"):
        if key in patch:
            new[key] = patch[key]
    if "tools" in patch or "tool_choice" in patch:
        try:
            commands.append(set_tools_command(new))
        except InputError as exc:
            raise Rejected(exc, event_id, "session.tools") from None
    return new, commands
