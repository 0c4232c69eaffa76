// The assistd chat page: sessions from /v1/sessions, answers streamed from
// /v1/chat/completions (SSE over fetch). No framework, no external URLs.
// A server with API keys needs one: the key typed in the sidebar is kept in
// this browser's localStorage and sent as "Authorization: Bearer <key>".
"use strict";

const els = {
  sessions: document.getElementById("sessions"),
  messages: document.getElementById("messages"),
  form: document.getElementById("composer"),
  input: document.getElementById("input"),
  send: document.getElementById("send"),
  label: document.getElementById("session-label"),
  speed: document.getElementById("speed"),
  apiKey: document.getElementById("api-key"),
  apiKeyHint: document.getElementById("api-key-hint"),
};

const API_KEY_STORAGE = "assistd.apiKey";

function storedApiKey() {
  try {
    return localStorage.getItem(API_KEY_STORAGE) || "";
  } catch (_) {
    return "";  // storage disabled: the key lives in the field only
  }
}

// Headers for an API request: the key, when one was entered.
function apiHeaders(extra) {
  const headers = Object.assign({}, extra || {});
  const key = els.apiKey.value.trim();
  if (key) headers["Authorization"] = "Bearer " + key;
  return headers;
}

// A 401 asks for a key; anything else clears the hint.
function noteAuth(response) {
  els.apiKeyHint.textContent = response.status === 401 ? "(needed: enter a valid key)" : "";
}

let current = null;  // the session id messages go to
let busy = false;

function newSessionId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return "s-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 10);
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const label = document.createElement("span");
  label.className = "role";
  label.textContent = role;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  div.append(label, body);
  els.messages.append(div);
  els.messages.scrollTop = els.messages.scrollHeight;
  return body;
}

async function errorText(response) {
  try {
    const j = await response.json();
    return (j.error && j.error.message) || response.statusText;
  } catch (_) {
    return response.status + " " + response.statusText;
  }
}

async function loadSessions() {
  const response = await fetch("/v1/sessions", { headers: apiHeaders() });
  noteAuth(response);
  if (!response.ok) {
    if (response.status === 401) els.sessions.replaceChildren();
    return;
  }
  const list = await response.json();
  els.sessions.replaceChildren();
  for (const s of list.data) {
    const li = document.createElement("li");
    li.textContent = s.title || s.id;
    li.title = s.id + " (" + s.message_count + " messages)";
    if (s.id === current) li.className = "active";
    li.addEventListener("click", () => openSession(s.id));
    els.sessions.append(li);
  }
}

async function openSession(id) {
  current = id;
  els.messages.replaceChildren();
  els.label.textContent = "session " + id;
  els.speed.textContent = "";
  const response = await fetch("/v1/sessions/" + encodeURIComponent(id), { headers: apiHeaders() });
  noteAuth(response);
  if (response.ok) {
    const session = await response.json();
    for (const m of session.messages) addMessage(m.role, m.content);
  } else if (response.status !== 404) {
    addMessage("error", await errorText(response));
  }
  loadSessions();
}

function startNewSession() {
  current = newSessionId();
  els.messages.replaceChildren();
  els.label.textContent = "new session " + current;
  els.speed.textContent = "";
  loadSessions();
  els.input.focus();
}

// Reads an SSE body; calls onData with each "data:" payload.
async function readSse(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (line.startsWith("data: ")) onData(line.slice(6));
      }
    }
  }
}

async function send(text) {
  if (!current) current = newSessionId();
  busy = true;
  els.send.disabled = true;
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  const started = performance.now();
  let firstAt = 0;
  let tokens = 0;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: apiHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify({
        session_id: current,
        messages: [{ role: "user", content: text }],
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    noteAuth(response);
    if (!response.ok) {
      answer.parentElement.className = "msg error";
      answer.textContent = await errorText(response);
      return;
    }
    els.label.textContent = "session " + current;  // admitted: the server now keeps it
    await readSse(response, (data) => {
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) {
        answer.parentElement.className = "msg error";
        answer.textContent += "\n" + chunk.error.message;
        return;
      }
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      for (const choice of chunk.choices || []) {
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          if (!firstAt) firstAt = performance.now();
          if (!chunk.usage) tokens += 1;  // one chunk per token; the final usage frame is exact
          answer.textContent += piece;
          els.messages.scrollTop = els.messages.scrollHeight;
          showSpeed(tokens, started, firstAt);
        }
      }
    });
    showSpeed(tokens, started, firstAt);
  } catch (e) {
    answer.parentElement.className = "msg error";
    answer.textContent += "\n" + e;
  } finally {
    busy = false;
    els.send.disabled = false;
    loadSessions();
  }
}

function showSpeed(tokens, started, firstAt) {
  if (!firstAt) return;
  const seconds = (performance.now() - firstAt) / 1000;
  const rate = seconds > 0 ? (tokens - 1) / seconds : 0;
  els.speed.textContent = tokens + " tokens, " + rate.toFixed(1) + " tokens/s, first token after " +
    Math.round(firstAt - started) + " ms";
}

els.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.input.value.trim();
  if (!text || busy) return;
  els.input.value = "";
  send(text);
});
els.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    els.form.requestSubmit();
  }
});
document.getElementById("new-session").addEventListener("click", startNewSession);
els.apiKey.value = storedApiKey();
els.apiKey.addEventListener("change", () => {
  const key = els.apiKey.value.trim();
  try {
    if (key) localStorage.setItem(API_KEY_STORAGE, key);
    else localStorage.removeItem(API_KEY_STORAGE);
  } catch (_) {
    // storage disabled: the key still works for this page
  }
  startNewSession();  // another key may be another tenant with other sessions
});

startNewSession();
