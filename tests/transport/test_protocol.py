"""The sans-I/O Realtime protocol: every client event, bad input, and the output mapping.

No event loop, no session, no models: JSON strings in, commands and event dicts out.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cadence.agent import outputs as out
from cadence.audio.chunk import AudioChunk
from cadence.errors import ImageError, LimitExceeded
from cadence.transport import client_events as ce
from cadence.transport.images import load_client_image
from cadence.transport.limits import ServerLimits
from cadence.transport.protocol import RealtimeProtocol, Step


def make(**kw: Any) -> RealtimeProtocol:
    return RealtimeProtocol(model="default", instructions="be brief", voice="joe", **kw)


def send(p: RealtimeProtocol, event: dict[str, Any]) -> Step:
    return p.receive(json.dumps(event))


def pcm_b64(seconds: float, rate: int = 24_000) -> str:
    samples = (np.sin(np.arange(int(seconds * rate)) / 10) * 8000).astype("<i2")
    return base64.b64encode(samples.tobytes()).decode()


def png_data_url(size: tuple[int, int] = (8, 8)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def only_error(step: Step) -> dict[str, Any]:
    assert step.commands == []
    assert [e["type"] for e in step.events] == ["error"]
    return step.events[0]["error"]


def test_session_created_has_ga_shape() -> None:
    (event,) = make().session_created()
    assert event["type"] == "session.created" and event["event_id"].startswith("event_")
    session = event["session"]
    assert session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["output"]["voice"] == "joe"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_event"),
        ("[1, 2]", "invalid_event"),
        ('{"type": 7}', "invalid_event"),
        ('{"event_id": "x"}', "invalid_event"),
        ('{"type": "response.audio.delta"}', "invalid_event"),  # a beta name: unknown in GA
        ('{"type": "nonsense", "event_id": "c1"}', "invalid_event"),
    ],
)
def test_malformed_messages_become_error_events(raw: str, code: str) -> None:
    error = only_error(make().receive(raw))
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]


def test_error_echoes_the_client_event_id_and_param() -> None:
    error = only_error(make().receive('{"type": "nonsense", "event_id": "c1"}'))
    assert error["event_id"] == "c1" and error["param"] == "type"


def test_oversized_message_is_refused_before_parsing() -> None:
    p = make(limits=ServerLimits(max_message_bytes=1000))
    error = only_error(send(p, {"type": "input_audio_buffer.append", "audio": pcm_b64(0.1)}))
    assert error["code"] == LimitExceeded.code and "1000-byte limit" in error["message"]


def test_append_decodes_24khz_pcm16() -> None:
    step = send(make(), {"type": "input_audio_buffer.append", "audio": pcm_b64(0.5)})
    (command,) = step.commands
    assert isinstance(command, ce.AppendAudio) and step.events == []
    assert command.audio.sample_rate == 24_000 and command.audio.frames == 12_000


@pytest.mark.parametrize(
    ("audio", "fragment"),
    [
        ("!!!not base64!!!", "base64"),
        (base64.b64encode(b"\x01\x02\x03").decode(), "16-bit"),  # odd byte count
        (12345, "must be a str"),
    ],
)
def test_bad_audio_is_an_error_event(audio: Any, fragment: str) -> None:
    error = only_error(send(make(), {"type": "input_audio_buffer.append", "audio": audio}))
    assert fragment in error["message"]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_arbitrary_input_never_raises(raw: str | bytes) -> None:
    step = make().receive(raw)
    assert all(isinstance(e, dict) and "type" in e for e in step.events)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["type", "event_id", "audio", "item", "session", "item_id", "audio_end_ms", "response"]
        ),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=20),
            st.sampled_from(sorted(ce.CLIENT_EVENT_TYPES)),
            st.lists(st.integers(), max_size=3),
            st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
        ),
    )
)
def test_arbitrary_events_never_raise(event: dict[str, Any]) -> None:
    make().receive(json.dumps(event))


def test_session_update_turn_detection_null_means_manual() -> None:
    p = make()
    step = send(
        p,
        {
            "type": "session.update",
            "session": {
                "type": "realtime",
                "instructions": "be a pirate",
                "audio": {"input": {"turn_detection": None}},
            },
        },
    )
    assert ce.SetTurnDetection(False) in step.commands
    assert ce.SetInstructions("be a pirate") in step.commands
    (updated,) = step.events
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["turn_detection"] is None
    assert not p.turn_detection


@pytest.mark.parametrize("kind", ["server_vad", "semantic_vad"])
def test_vad_modes_run_cadence_turns_and_echo_tuning(kind: str) -> None:
    p = make()
    step = send(
        p,
        {
            "type": "session.update",
            "session": {
                "audio": {"input": {"turn_detection": {"type": kind, "silence_duration_ms": 555}}}
            },
        },
    )
    assert ce.SetTurnDetection(True) in step.commands
    echoed = step.events[0]["session"]["audio"]["input"]["turn_detection"]
    assert echoed["type"] == kind and echoed["silence_duration_ms"] == 555


@pytest.mark.parametrize(
    "audio",
    [
        {"input": {"format": {"type": "audio/pcm", "rate": 16000}}},
        {"input": {"format": {"type": "audio/pcmu"}}},
        {"output": {"format": {"type": "audio/pcma"}}},
        {"input": {"turn_detection": {"type": "push_to_talk"}}},
    ],
)
def test_unsupported_session_settings_are_refused_whole(audio: dict[str, Any]) -> None:
    p = make()
    before = json.dumps(p.config, sort_keys=True)
    error = only_error(
        send(p, {"type": "session.update", "session": {"instructions": "changed", "audio": audio}})
    )
    assert error["param"].startswith("session.audio")
    assert json.dumps(p.config, sort_keys=True) == before  # nothing applied


def test_transcription_sessions_are_refused() -> None:
    error = only_error(
        send(make(), {"type": "session.update", "session": {"type": "transcription"}})
    )
    assert "transcription" in error["message"]


def test_commit_needs_audio_then_confirms_with_an_item_id() -> None:
    p = make()
    assert only_error(send(p, {"type": "input_audio_buffer.commit"}))["message"].startswith(
        "input audio buffer holds 0 ms"
    )
    send(p, {"type": "input_audio_buffer.append", "audio": pcm_b64(0.3)})
    step = send(p, {"type": "input_audio_buffer.commit"})
    (command,) = step.commands
    (committed,) = step.events
    assert isinstance(command, ce.CommitAudio)
    assert committed["type"] == "input_audio_buffer.committed"
    assert committed["item_id"] == command.item_id


def test_manual_buffer_limit() -> None:
    p = make(limits=ServerLimits(max_buffered_audio_s=1.0))
    send(p, {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    assert send(p, {"type": "input_audio_buffer.append", "audio": pcm_b64(0.8)}).commands
    error = only_error(send(p, {"type": "input_audio_buffer.append", "audio": pcm_b64(0.8)}))
    assert error["code"] == "limit_exceeded"
    step = send(p, {"type": "input_audio_buffer.clear"})
    assert step.commands == [ce.ClearAudio()]
    assert step.events[0]["type"] == "input_audio_buffer.cleared"
    assert send(p, {"type": "input_audio_buffer.append", "audio": pcm_b64(0.8)}).commands


def test_input_text_item_is_parsed_and_confirmed() -> None:
    p = make()
    step = send(
        p,
        {
            "type": "conversation.item.create",
            "event_id": "c9",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What is the capital of France?"}],
            },
        },
    )
    (command,) = step.commands
    assert isinstance(command, ce.CreateItem) and command.kind == "text"
    assert command.text == "What is the capital of France?" and command.event_id == "c9"
    added, done = p.item_added(command)
    assert added["type"] == "conversation.item.added" and done["type"] == "conversation.item.done"
    assert added["item"]["id"].startswith("item_") and added["item"]["status"] == "completed"


def test_input_image_item_carries_decoded_bytes_not_base64_in_the_echo() -> None:
    p = make()
    url = png_data_url()
    step = send(
        p,
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What colour is this?"},
                    {"type": "input_image", "image_url": url},
                ],
            },
        },
    )
    (command,) = step.commands
    assert isinstance(command, ce.CreateItem) and command.kind == "image"
    assert (
        command.image and command.image.startswith(b"\x89PNG") and command.image_mime == "image/png"
    )
    assert command.text == "What colour is this?"
    assert "base64,<" in json.dumps(p.item_added(command))


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ({"type": "input_image", "image_url": "https://example.com/cat.png"}, "data: URL"),
        ({"type": "input_image", "image_url": "data:image/png;base64,@@@@"}, "base64"),
        ({"type": "input_image", "image_url": "data:text/plain;base64,aGk="}, "data:image"),
        ({"type": "input_video"}, "unsupported content"),
    ],
)
def test_bad_item_content(content: dict[str, Any], fragment: str) -> None:
    error = only_error(
        send(
            make(),
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "user", "content": [content]},
            },
        )
    )
    assert fragment in error["message"]


def test_function_call_output_item() -> None:
    step = send(
        make(),
        {
            "type": "conversation.item.create",
            "item": {"type": "function_call_output", "call_id": "call_1", "output": '{"ok": true}'},
        },
    )
    (command,) = step.commands
    assert isinstance(command, ce.CreateItem) and command.kind == "function_call_output"
    assert command.call_id == "call_1" and command.text == '{"ok": true}'


def test_input_audio_item_decodes_audio() -> None:
    step = send(
        make(),
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_audio", "audio": pcm_b64(0.2)}],
            },
        },
    )
    (command,) = step.commands
    assert isinstance(command, ce.CreateItem) and command.kind == "audio"
    assert command.audio is not None and command.audio.frames == 4800
    assert "audio" not in command.item["content"][0]  # not echoed back


def test_image_validation() -> None:
    good = base64.b64decode(png_data_url((32, 16)).split(",", 1)[1])
    image = load_client_image(good, max_bytes=1 << 20, max_pixels=1 << 20)
    assert (image.width, image.height) == (32, 16) and image.png.startswith(b"\x89PNG")
    with pytest.raises(ImageError):
        load_client_image(good[:40], max_bytes=1 << 20, max_pixels=1 << 20)
    with pytest.raises(LimitExceeded):
        load_client_image(good, max_bytes=1 << 20, max_pixels=100)
    with pytest.raises(LimitExceeded):
        load_client_image(good, max_bytes=10, max_pixels=1 << 20)


def _reply(p: RealtimeProtocol, generation: int = 1, seconds: float = 1.0) -> list[dict[str, Any]]:
    events = p.on_output(out.ResponseStarted(generation), 0.0)
    events += p.on_output(out.ResponseText(generation, "The capital of France"), 0.0)
    audio = AudioChunk(np.zeros((int(seconds * 24_000), 1), np.float32), 24_000)
    events += p.on_output(out.ResponseAudio(generation, audio), 0.0)
    events += p.on_output(out.ResponseText(generation, "is Paris."), 0.0)
    return events


def test_response_event_sequence_and_ids() -> None:
    p = make()
    events = _reply(p)
    latency = {"generation": 1, "endpoint": 180, "v2v": 365, "budget_breaches": []}
    events += p.on_output(
        out.ResponseDone(1, "The capital of France is Paris.", "completed", latency), 0
    )
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    response_id = events[0]["response"]["id"]
    item_id = events[1]["item"]["id"]
    for e in events[3:-1]:
        if "response_id" in e:
            assert e["response_id"] == response_id
        if "item_id" in e:
            assert e["item_id"] == item_id
    assert len({e["event_id"] for e in events}) == len(events)
    transcript = "".join(e["delta"] for e in events if e["type"].endswith("transcript.delta"))
    assert transcript == "The capital of France is Paris."
    audio = base64.b64decode(events[5]["delta"])
    assert len(audio) == 24_000 * 2
    done = events[-1]["response"]
    assert (
        done["status"] == "completed"
        and done["output"][0]["content"][0]["transcript"] == transcript
    )
    assert (
        json.loads(done["metadata"]["latency"]) == latency
    )  # a JSON string, as INTERFACES.md says


def test_truncate_maps_to_report_played() -> None:
    p = make()
    events = _reply(p, generation=4, seconds=2.0)
    item_id = events[1]["item"]["id"]
    step = send(
        p,
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 750,
        },
    )
    assert step.commands == [ce.ReportPlayed(4, 750.0)]
    assert step.events[0]["type"] == "conversation.item.truncated"
    assert step.events[0]["audio_end_ms"] == 750
    too_far = send(
        p, {"type": "conversation.item.truncate", "item_id": item_id, "audio_end_ms": 9000}
    )
    assert "outside" in only_error(too_far)["message"]
    unknown = send(p, {"type": "conversation.item.truncate", "item_id": "nope", "audio_end_ms": 1})
    assert only_error(unknown)["param"] == "item_id"


def test_cancel_needs_an_active_response() -> None:
    p = make()
    assert (
        only_error(send(p, {"type": "response.cancel"}))["message"] == "no response is in progress"
    )
    _reply(p)
    assert send(p, {"type": "response.cancel"}).commands == [ce.CancelResponse()]
    events = p.on_output(out.ResponseDone(1, "The capital", "cancelled", {}, "client_cancelled"), 0)
    done = events[-1]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"


def test_response_create() -> None:
    step = send(make(), {"type": "response.create", "response": {"instructions": "shout"}})
    assert step.commands == [ce.RequestResponse("shout")]
    assert send(make(), {"type": "response.create"}).commands == [ce.RequestResponse(None)]


def test_user_speech_turn_events() -> None:
    p = make()
    p.note_input_audio(3000.0, clock_ms=10_000.0)  # 3 s of audio, the last sample at t=10 s
    started = p.on_output(out.UserSpeechStarted(8_000.0), 10_000.0)
    assert started[0]["type"] == "input_audio_buffer.speech_started"
    assert started[0]["audio_start_ms"] == 1000
    stopped = p.on_output(out.UserSpeechStopped(9_500.0), 10_000.0)
    assert stopped[0]["audio_end_ms"] == 2500 and stopped[0]["item_id"] == started[0]["item_id"]
    assert "cadence_ms_ago" not in stopped[0]
    deltas = [
        *p.on_output(out.UserTranscript("What?", False), 0),
        *p.on_output(out.UserTranscript("What is the capital", False), 0),
        *p.on_output(out.UserTranscript("Was it the capital", False), 0),  # a correction
        *p.on_output(out.UserTranscript("What is the capital of France?", False), 0),
    ]
    assert [d["delta"] for d in deltas] == ["What", " is the capital", " of France"]
    committed = p.on_output(out.UserTurnCommitted("what is the capital of France"), 0)
    assert [e["type"] for e in committed] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.done",
    ]
    assert committed[2]["transcript"] == "what is the capital of France"  # the truth, at last
    assert {e.get("item_id", e.get("item", {}).get("id")) for e in committed} == {
        started[0]["item_id"]
    }


def test_webrtc_flavour_sends_no_audio_deltas_but_cadence_extras() -> None:
    p = make(audio_events=False, extensions=True)
    events = _reply(p)
    assert "response.output_audio.delta" not in [e["type"] for e in events]
    events = p.on_output(out.ResponseDone(1, "x", "completed", {"v2v": 300}), 0)
    assert events[-1] == {"type": "cadence.latency", "latency": {"v2v": 300}}
    assert p.on_output(out.StateUpdate("thinking"), 0) == [
        {"type": "cadence.state", "state": "thinking"}
    ]
    assert make().on_output(out.StateUpdate("thinking"), 0) == []  # not over the WebSocket
    stopped = p.on_output(out.UserSpeechStopped(900.0), 1000.0)
    assert stopped[0]["cadence_ms_ago"] == 100.0


def test_text_only_modality() -> None:
    p = make()
    send(p, {"type": "session.update", "session": {"output_modalities": ["text"]}})
    events = _reply(p)
    kinds = [e["type"] for e in events]
    assert "response.output_text.delta" in kinds and "response.output_audio.delta" not in kinds


def test_session_errors_are_error_events() -> None:
    (event,) = make().on_output(out.SessionError("model_error", "the LLM crashed"), 0)
    assert event["type"] == "error" and event["error"]["type"] == "server_error"
    (event,) = make().on_output(out.SessionError("invalid_audio", "bad"), 0)
    assert event["error"]["type"] == "invalid_request_error"


def test_item_memory_is_bounded() -> None:
    p = make(limits=ServerLimits(max_items=4))
    for generation in range(1, 10):
        _reply(p, generation, 0.1)
    assert len(p._items) == 4


def test_the_user_item_is_committed_before_the_response_to_it() -> None:
    """OpenAI's order: committed → user item → response.created, even though cadence
    commits the user turn only when the answer is first heard."""
    p = make()
    events = p.on_output(out.UserSpeechStarted(100.0), 100.0)
    events += p.on_output(out.UserSpeechStopped(1900.0), 1960.0)
    events += p.on_output(out.UserTranscript("What is the capital of France?", True), 2050.0)
    events += p.on_output(out.ResponseStarted(1), 2100.0)
    events += p.on_output(out.UserTurnCommitted("What is the capital of France?"), 2300.0)
    kinds = [e["type"] for e in events]
    created = kinds.index("response.created")
    assert kinds.index("input_audio_buffer.committed") < created
    user_added = [
        i
        for i, e in enumerate(events)
        if e["type"] == "conversation.item.added" and e["item"]["role"] == "user"
    ]
    assert len(user_added) == 1 and user_added[0] < created  # and not echoed again later
    assert events[user_added[0]]["item"]["content"][0]["transcript"].startswith("What is")
