"""WebRTC media pieces without a peer: the paced agent track, ICE helpers, limits, metrics."""

from __future__ import annotations

import time

import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket
from transport_fakes import tone

from cadence.errors import ConfigError
from cadence.transport.ice import keep_loopback_candidates, parse_ice_server
from cadence.transport.limits import ServerLimits
from cadence.transport.media import (
    AgentAudioTrack,
    VideoFrameBuffer,
    audio_frame_to_chunk,
    listen_without_prefetch,
)
from cadence.transport.metrics import Metrics


async def frames(track: AgentAudioTrack, n: int) -> list[np.ndarray]:
    return [(await track.recv()).to_ndarray()[0] for _ in range(n)]


async def test_track_is_paced_at_real_time_and_silent_when_idle() -> None:
    track = AgentAudioTrack()
    start = time.monotonic()
    got = await frames(track, 15)
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed <= 0.6  # 15 x 20 ms, the first one immediately
    assert all(len(f) == 960 and not f.any() for f in got)


async def test_track_plays_queued_audio_and_reports_position() -> None:
    reports: list[tuple[int, float]] = []
    track = AgentAudioTrack(lambda g, ms: reports.append((g, ms)))
    track.enqueue(3, tone(0.1))  # 24 kHz in, 48 kHz out
    got = await frames(track, 7)
    assert all(np.abs(f).max() > 1000 for f in got[:5]) and not got[5].any()
    assert reports[-1] == (3, 100.0)
    assert track.queued_ms == 0


async def test_pause_holds_and_stop_flushes_immediately() -> None:
    reports: list[tuple[int, float]] = []
    track = AgentAudioTrack(lambda g, ms: reports.append((g, ms)))
    track.enqueue(1, tone(1.0))
    await frames(track, 2)
    track.control(1, "pause")
    paused = await frames(track, 3)
    assert not any(f.any() for f in paused) and track.queued_ms == pytest.approx(960, abs=1)
    track.control(1, "resume")
    assert (await frames(track, 1))[0].any()
    track.control(1, "stop")  # barge-in: nothing of generation 1 is sent after this
    assert track.queued_ms == 0 and not (await frames(track, 1))[0].any()
    assert reports[-1] == (1, 60.0)
    track.enqueue(2, tone(0.04))  # the next generation plays normally
    assert (await frames(track, 1))[0].any()


async def test_stop_keeps_newer_generations() -> None:
    track = AgentAudioTrack()
    track.enqueue(1, tone(0.2))
    track.enqueue(2, tone(0.2))
    track.control(1, "stop")
    assert track.queued_ms == pytest.approx(200)


def test_inbound_frames_become_audio_chunks() -> None:
    import av

    stereo = np.zeros((1, 960 * 2), np.int16)
    stereo[0, ::2] = 1000  # left channel only
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = 48_000
    chunk = audio_frame_to_chunk(frame)
    assert (chunk.sample_rate, chunk.channels, chunk.frames) == (48_000, 2, 960)
    assert chunk.samples[:, 0].min() == 1000 and not chunk.samples[:, 1].any()


def test_video_buffer_keeps_the_latest_frames() -> None:
    buffer = VideoFrameBuffer(3)
    assert buffer.latest() is None
    for i in range(5):
        buffer.push(i)
    assert [f.frame for f in buffer.frames()] == [2, 3, 4] and buffer.received == 5


def test_ice_server_specs() -> None:
    assert parse_ice_server("stun:stun.example.org:3478") == {"urls": "stun:stun.example.org:3478"}
    assert parse_ice_server("turn:alice:s3:cret@turn.example.org:3478?transport=udp") == {
        "urls": "turn:turn.example.org:3478?transport=udp",
        "username": "alice",
        "credential": "s3:cret",
    }
    with pytest.raises(ConfigError):
        parse_ice_server("http://example.org")


def test_local_only_drops_non_loopback_candidates() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
            "a=candidate:2 1 udp 2122260223 192.168.1.20 50001 typ host",
            "a=candidate:3 1 udp 2122260223 0b9a-4c.local 50002 typ host",
            "a=end-of-candidates",
            "",
        ]
    )
    kept = keep_loopback_candidates(sdp)
    assert "127.0.0.1" in kept and "192.168" not in kept and ".local" not in kept
    assert "a=end-of-candidates" in kept


def test_limits_from_config() -> None:
    assert ServerLimits.from_dict({"max_sessions": 4}).max_sessions == 4
    assert ServerLimits.from_dict({"idle_timeout_s": 30}).idle_timeout_s == 30.0
    for bad in ({"max_session": 4}, {"max_sessions": 0}, {"max_sessions": True}):
        with pytest.raises(ConfigError):
            ServerLimits.from_dict(bad)


def test_metrics_text_format() -> None:
    metrics = Metrics()
    metrics.inc("cadence_sessions_total", transport="websocket")
    metrics.add_gauge("cadence_sessions_active", 1, transport="webrtc")
    metrics.observe_v2v(420.0)
    metrics.observe_v2v(9000.0)
    text = metrics.render()
    assert 'cadence_sessions_total{transport="websocket"} 1' in text
    assert 'cadence_v2v_ms_bucket{le="500"} 1' in text
    assert 'cadence_v2v_ms_bucket{le="+Inf"} 2' in text and "cadence_v2v_ms_count 2" in text
    assert text.endswith("\n")


def _packet(n: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=n, timestamp=960 * n, payload=b"opus")
    packet._data = b"opus"  # type: ignore[attr-defined]  # what the receiver depayloads into
    return packet


async def test_inbound_audio_is_released_a_packet_later_not_four() -> None:
    """The mic feeds VAD and ASR, not a speaker: 80 ms of jitter prefetch only delays the
    end of every turn, so a call's audio receivers hold one packet (20 ms) instead."""
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        assert listen_without_prefetch(pc)
        audio, video = (t.receiver for t in pc.getTransceivers())
        buffer = audio._RTCRtpReceiver__jitter_buffer
        assert video._RTCRtpReceiver__jitter_buffer._prefetch == 0  # untouched
        assert buffer._prefetch == 0 and not buffer._is_video
        released = [buffer.add(_packet(n))[1] for n in range(6)]
        assert released[0] is None  # a frame is complete once the next packet starts
        assert [f.timestamp if f else None for f in released[1:]] == [0, 960, 1920, 2880, 3840]
        aiortc_default = JitterBuffer(capacity=16, prefetch=4)
        held = [aiortc_default.add(_packet(n))[1] for n in range(6)]
        assert held[:4] == [None] * 4  # the first packet only leaves when the fifth arrives
    finally:
        await pc.close()
