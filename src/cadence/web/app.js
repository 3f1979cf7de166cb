// cadence demo page: a WebRTC call to the agent (OpenAI Realtime WebRTC flow), no build step.
// Mic (and optionally camera/screen) go up as media; agent speech comes back as media; the
// "oai-events" data channel carries transcripts, agent state and per-turn latency.
"use strict";

const $ = (id) => document.getElementById(id);

// What the page knows, also exposed as window.cadence for tests and curious users.
const call = {
  pc: null, channel: null, local: [], hangupUrl: null, analyser: null, meter: null,
  state: "idle", turns: [], latencies: [], events: 0, turn: null,
  // browser latency: end of user speech on this clock, and whether a reply is awaited
  speechEndAt: null, responseSince: false, uplinkMs: 0,
};
window.cadence = call;

function setState(state) {
  call.state = state;
  const el = $("state");
  el.textContent = state;
  el.className = "state " + state;
}

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function tokenFromHash() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : "";
}

async function listDevices() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    for (const [kind, select] of [["audioinput", $("mic")], ["videoinput", $("camera")]]) {
      const keep = select.value;
      select.length = 1;
      for (const d of devices.filter((d) => d.kind === kind && d.deviceId)) {
        select.add(new Option(d.label || `${kind} ${select.length}`, d.deviceId));
      }
      select.value = keep;
    }
  } catch (err) {
    console.warn("cannot list devices", err);
  }
}

// ---- transcript -------------------------------------------------------------------------

const items = new Map(); // item id → <li>

function entry(id, who) {
  let li = items.get(id);
  if (!li) {
    li = document.createElement("li");
    li.className = who;
    li.dataset.item = id;
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who === "user" ? "you" : "agent";
    li.append(label, document.createElement("span"));
    $("transcript").append(li);
    items.set(id, li);
  }
  return li;
}

function setText(li, text) {
  li.lastChild.textContent = text;
  li.scrollIntoView({ block: "nearest" });
}

// ---- latency ----------------------------------------------------------------------------

function ms(value) {
  return typeof value === "number" ? Math.round(value) : "–";
}

const rows = new WeakMap(); // turn → its <tr>

function newTurn() {
  const turn = { n: call.latencies.length + 1, browser: null, server: null };
  call.latencies.push(turn);
  return turn;
}

function renderTurn(turn) {
  let row = rows.get(turn);
  if (!row) {
    row = document.createElement("tr");
    rows.set(turn, row);
    $("latency-rows").prepend(row);
    while ($("latency-rows").rows.length > 20) $("latency-rows").deleteRow(-1);
  }
  const server = turn.server || {};
  row.replaceChildren(...[turn.n, ms(turn.browser), ms(server.v2v), ms(server.endpoint),
    ms(server.asr_final), ms(server.llm_first_token), ms(server.tts_first_audio)].map((cell) => {
    const td = document.createElement("td");
    td.textContent = cell;
    return td;
  }));
}

// The first loud agent audio after the user's speech ended: measured on arrival here.
function watchRemoteAudio(stream) {
  const ctx = new AudioContext();
  const source = ctx.createMediaStreamSource(stream);
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 512;
  source.connect(analyser);
  call.analyser = analyser;
  const data = new Float32Array(analyser.fftSize);
  call.meter = setInterval(() => {
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    const rms = Math.sqrt(sum / data.length);
    const turn = call.turn;
    if (rms > 0.01 && turn && turn.browser === null && call.speechEndAt !== null && call.responseSince) {
      turn.browser = performance.now() - call.speechEndAt;
      call.speechEndAt = null;
      $("v2v").textContent = Math.round(turn.browser);
      renderTurn(turn);
    }
  }, 5);
}

async function updateUplink() {
  // Half the ICE round trip: how long ago, on this clock, the server heard our audio.
  if (!call.pc) return;
  const stats = await call.pc.getStats();
  stats.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
      call.uplinkMs = (s.currentRoundTripTime * 1000) / 2;
    }
  });
}

// ---- server events ----------------------------------------------------------------------

function onEvent(event) {
  call.events += 1;
  switch (event.type) {
    case "cadence.state":
      setState(event.state);
      break;
    case "input_audio_buffer.speech_started":
      setText(entry(event.item_id, "user"), "…");
      entry(event.item_id, "user").classList.add("partial");
      break;
    case "input_audio_buffer.speech_stopped":
      call.speechEndAt = performance.now() - (event.cadence_ms_ago || 0) - call.uplinkMs;
      call.responseSince = false;
      call.turn = null; // a turn starts when the agent answers this speech
      updateUplink();
      break;
    case "conversation.item.input_audio_transcription.delta": {
      const li = entry(event.item_id, "user");
      li.dataset.partial = (li.dataset.partial || "") + event.delta;
      setText(li, li.dataset.partial);
      break;
    }
    case "conversation.item.input_audio_transcription.completed": {
      const li = entry(event.item_id, "user");
      li.classList.remove("partial");
      setText(li, event.transcript);
      call.turns.push({ role: "user", text: event.transcript });
      break;
    }
    case "response.created":
      call.responseSince = true;
      call.turn = newTurn();
      break;
    case "response.output_audio_transcript.delta":
    case "response.output_text.delta": {
      const li = entry(event.item_id, "agent");
      li.dataset.text = (li.dataset.text || "") + event.delta;
      setText(li, li.dataset.text);
      break;
    }
    case "response.done": {
      const response = event.response;
      const out = response.output && response.output[0];
      if (out) {
        const li = entry(out.id, "agent");
        if (response.status === "cancelled" && !li.dataset.text) {
          li.remove(); // a reply dropped before a word was heard: nothing to show
          items.delete(out.id);
          break;
        }
        li.classList.toggle("interrupted", response.status === "cancelled");
        const content = out.content && out.content[0];
        if (content) call.turns.push({ role: "agent", text: content.transcript || content.text || "" });
      }
      break;
    }
    case "cadence.latency": {
      const turn = call.turn && !call.turn.server ? call.turn : newTurn();
      turn.server = event.latency;
      renderTurn(turn);
      break;
    }
    case "error":
      status(`server: ${event.error.message}`, true);
      break;
    default:
      break;
  }
}

// ---- the call ---------------------------------------------------------------------------

async function mintToken() {
  const token = $("token").value.trim();
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/v1/realtime/client_secrets", { method: "POST", headers, body: "{}" });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || `token refused (${response.status})`);
  }
  return response.json();
}

async function localMedia() {
  const processing = $("ec").checked;
  const audio = {
    echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing,
  };
  if ($("mic").value) audio.deviceId = { exact: $("mic").value };
  const mic = await navigator.mediaDevices.getUserMedia({ audio });
  const tracks = [mic.getAudioTracks()[0]];
  const mode = $("video").value;
  if (mode === "camera") {
    const video = $("camera").value ? { deviceId: { exact: $("camera").value } } : true;
    tracks.push((await navigator.mediaDevices.getUserMedia({ video })).getVideoTracks()[0]);
  } else if (mode === "screen") {
    tracks.push((await navigator.mediaDevices.getDisplayMedia({ video: true })).getVideoTracks()[0]);
  }
  return tracks;
}

function iceGatheringComplete(pc, timeoutMs = 3000) {
  // aiortc has no trickle ICE: the offer must carry every candidate.
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

async function start() {
  $("start").disabled = true;
  setState("connecting");
  status("connecting…");
  try {
    const secret = await mintToken();
    const tracks = await localMedia();
    call.local = tracks;
    listDevices();
    const video = tracks.find((t) => t.kind === "video");
    if (video) {
      $("preview").srcObject = new MediaStream([video]);
      $("preview").hidden = false;
    }
    const pc = new RTCPeerConnection({ iceServers: secret.cadence ? secret.cadence.ice_servers : [] });
    call.pc = pc;
    for (const track of tracks) pc.addTrack(track, new MediaStream(tracks));
    const channel = pc.createDataChannel("oai-events");
    call.channel = channel;
    channel.onmessage = (msg) => onEvent(JSON.parse(msg.data));
    pc.ontrack = (ev) => {
      if (ev.track.kind !== "audio") return;
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      $("remote").srcObject = stream;
      watchRemoteAudio(stream);
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") status("connected — talk to the agent");
      if (pc.connectionState === "failed") { status("the connection failed", true); stop(); }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    const model = $("model").value.trim();
    const url = "/v1/realtime/calls" + (model ? `?model=${encodeURIComponent(model)}` : "");
    const response = await fetch(url, {
      method: "POST",
      body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${secret.value}` },
    });
    if (response.status !== 201) {
      const body = await response.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || `call refused (${response.status})`);
    }
    call.hangupUrl = response.headers.get("Location");
    call.secret = secret.value;
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    $("stop").disabled = false;
  } catch (err) {
    status(String(err.message || err), true);
    await stop();
  }
}

async function stop() {
  $("stop").disabled = true;
  if (call.hangupUrl && call.secret) {
    fetch(call.hangupUrl + "/hangup", {
      method: "POST", headers: { Authorization: `Bearer ${call.secret}` },
    }).catch(() => {});
  }
  call.hangupUrl = null;
  if (call.meter) clearInterval(call.meter);
  if (call.pc) call.pc.close();
  call.pc = null;
  for (const track of call.local) track.stop();
  call.local = [];
  $("preview").hidden = true;
  setState("idle");
  $("start").disabled = false;
}

// Inbound audio as WebRTC stats see it (tests read this).
call.inboundAudio = async () => {
  if (!call.pc) return null;
  let found = null;
  (await call.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      found = { bytes: s.bytesReceived, packets: s.packetsReceived,
        energy: s.totalAudioEnergy || 0, samples: s.totalSamplesReceived || 0 };
    }
  });
  return found;
};

document.addEventListener("DOMContentLoaded", () => {
  $("token").value = tokenFromHash();
  $("start").addEventListener("click", start);
  $("stop").addEventListener("click", stop);
  listDevices();
});
