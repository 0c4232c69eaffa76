// The official `openai` npm package against a running assistd (stories260K):
// every call goes through the SDK exactly as an application makes it, so what
// the SDK parses, reassembles and raises is what is checked.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { baseUrl, requirePackage } from "../common.mjs";

// Usage of the same request asked twice agrees, except for the prompt tokens
// the prefix cache served the second time (OpenAI's cached_tokens).
function assertSameUsage(actual, expected) {
  const { prompt_tokens_details: details, ...counts } = actual;
  const { prompt_tokens_details: _unused, ...expectedCounts } = expected;
  assert.deepEqual(counts, expectedCounts);
  assert.equal(typeof details.cached_tokens, "number");
  assert.ok(details.cached_tokens >= 0 && details.cached_tokens < actual.prompt_tokens,
            `cached_tokens ${details.cached_tokens} of ${actual.prompt_tokens}`);
}

const { OpenAI, APIError, BadRequestError, NotFoundError } = requirePackage("openai");

// No retries: a retried 429/5xx would hide the status the server sent.
const client = new OpenAI({ baseURL: baseUrl + "/v1", apiKey: "unused", maxRetries: 0, timeout: 60_000 });
const MODEL = "stories260K";
const STORY = [{ role: "user", content: "Tell me a story about a cat" }];
// Greedy, so every run of the same request gives the same tokens.
const GREEDY = { temperature: 0, seed: 7 };

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

// Calls fn, which must throw an instance of cls; returns the error.
async function expectError(cls, fn) {
  try {
    await fn();
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e && e.constructor && e.constructor.name}: ${e}`);
    return e;
  }
  assert.fail(`expected ${cls.name}, but the call succeeded`);
}

// The fields OpenAI's error JSON carries, as the SDK exposes them.
function assertErrorShape(e, { status, type = "invalid_request_error", code, param }) {
  assert.equal(e.status, status);
  assert.equal(e.type, type);
  assert.equal(e.error.type, type);
  if (code !== undefined) assert.equal(e.code, code);
  if (param !== undefined) assert.equal(e.param, param);
  assert.equal(typeof e.error.message, "string");
  assert.ok(e.error.message.length > 0);
  assert.ok("param" in e.error && "code" in e.error, "param and code are always present (null when unset)");
}

describe("models", () => {
  test("list names the served model", async () => {
    const page = await client.models.list();
    assert.equal(page.data.length, 1);
    const [m] = page.data;
    assert.equal(m.id, MODEL);
    assert.equal(m.object, "model");
    assert.equal(typeof m.created, "number");
    assert.equal(typeof m.owned_by, "string");
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    assert.deepEqual(ids, [MODEL]);
  });

  test("retrieve returns it; an unknown id is NotFoundError", async () => {
    const m = await client.models.retrieve(MODEL);
    assert.equal(m.id, MODEL);
    assert.equal(m.object, "model");
    const e = await expectError(NotFoundError, () => client.models.retrieve("gpt-4o"));
    assertErrorShape(e, { status: 404, code: "model_not_found", param: "model" });
  });
});

describe("chat.completions", () => {
  let reference;  // the non-streamed greedy answer the streamed ones must equal

  before(async () => {
    reference = await client.chat.completions.create({ model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY });
  });

  test("non-streamed: one choice, an assistant message, consistent usage", () => {
    const r = reference;
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.object, "chat.completion");
    assert.equal(r.model, MODEL);
    assert.ok(Number.isInteger(r.created) && r.created > 1_600_000_000, "created is Unix seconds");
    assert.equal(r.choices.length, 1);
    const [c] = r.choices;
    assert.equal(c.index, 0);
    assert.equal(c.message.role, "assistant");
    assert.equal(typeof c.message.content, "string");
    assert.ok(c.message.content.length > 0, "stories260K answers with text");
    assert.ok(["stop", "length"].includes(c.finish_reason));
    assert.equal(c.logprobs, null, "sent as null, as OpenAI does");
    assert.equal(c.message.refusal, null);
    const u = r.usage;
    assert.ok(u.prompt_tokens > 5, "the templated prompt has more tokens than that");
    assert.ok(u.completion_tokens > 0 && u.completion_tokens <= 40);
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    if (c.finish_reason === "length") assert.equal(u.completion_tokens, 40);
  });

  test("the same request answers the same at temperature 0", async () => {
    const again = await client.chat.completions.create({ model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY });
    assert.equal(again.choices[0].message.content, reference.choices[0].message.content);
    assert.notEqual(again.id, reference.id, "every completion has its own id");
  });

  test("streamed: deltas reassemble to the non-streamed text; include_usage adds a final usage chunk", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY, stream: true, stream_options: { include_usage: true },
    });
    const chunks = await collect(stream);
    assert.ok(chunks.length >= 4, `a 40-token answer comes in pieces, got ${chunks.length} chunks`);
    for (const ch of chunks) {
      assert.equal(ch.object, "chat.completion.chunk");
      assert.equal(ch.id, chunks[0].id, "one id for the whole stream");
      assert.equal(ch.model, MODEL);
    }
    assert.match(chunks[0].id, /^chatcmpl-/);
    assert.equal(chunks[0].choices[0].delta.role, "assistant");

    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], "the usage chunk has no choices");
    assertSameUsage(last.usage, reference.usage);
    for (const ch of chunks.slice(0, -1)) {
      assert.equal(ch.usage, null, "with include_usage, the other chunks carry usage: null");
      assert.equal(ch.choices.length, 1);
      assert.equal(ch.choices[0].index, 0);
      assert.equal(ch.choices[0].logprobs, null);
    }

    const withChoices = chunks.slice(0, -1);
    const finishes = withChoices.filter((ch) => ch.choices[0].finish_reason !== null);
    assert.equal(finishes.length, 1, "exactly one chunk carries the finish_reason");
    assert.equal(finishes[0], withChoices.at(-1), "and it is the last choice chunk");
    assert.equal(finishes[0].choices[0].finish_reason, reference.choices[0].finish_reason);

    const text = withChoices.map((ch) => ch.choices[0].delta.content ?? "").join("");
    assert.equal(text, reference.choices[0].message.content);
    // One chunk per token (a token whose text is held back, e.g. half a character, shares the next one's).
    const contentChunks = withChoices.filter((ch) => ch.choices[0].delta.content);
    assert.ok(contentChunks.length <= reference.usage.completion_tokens);
    assert.ok(contentChunks.length >= reference.usage.completion_tokens * 0.75,
              `${contentChunks.length} content chunks for ${reference.usage.completion_tokens} tokens`);
  });

  test("streamed without include_usage: no usage anywhere", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL, messages: STORY, max_tokens: 8, ...GREEDY, stream: true,
    });
    const chunks = await collect(stream);
    assert.ok(chunks.length >= 2);
    for (const ch of chunks) {
      assert.ok(ch.usage === undefined || ch.usage === null);
      assert.equal(ch.choices.length, 1);
    }
    assert.equal(chunks.at(-1).choices[0].finish_reason, "length");
  });

  test("the SDK's stream helper accumulates the same message", async () => {
    const runner = client.chat.completions.stream({ model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY });
    const deltas = [];
    runner.on("content", (delta) => deltas.push(delta));
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, reference.choices[0].message.content);
    assert.equal(deltas.join(""), reference.choices[0].message.content);
  });

  test("max_tokens and max_completion_tokens both cap the answer", async () => {
    for (const limit of [{ max_tokens: 5 }, { max_completion_tokens: 5 }]) {
      const r = await client.chat.completions.create({ model: MODEL, messages: STORY, ...GREEDY, ...limit });
      assert.equal(r.usage.completion_tokens, 5, JSON.stringify(limit));
      assert.equal(r.choices[0].finish_reason, "length");
      assert.ok(reference.choices[0].message.content.startsWith(r.choices[0].message.content),
                "a greedy answer cut short is a prefix of the longer one");
    }
  });

  test("a stop string ends the answer before it, non-streamed and streamed", async () => {
    const full = reference.choices[0].message.content;
    // A stop string from the middle of the reference answer: the answer must end just before its first occurrence.
    const words = full.split(/\s+/).filter((w) => w.length >= 3);
    assert.ok(words.length >= 3, `the reference answer has words to stop on: ${JSON.stringify(full)}`);
    const stop = words[Math.floor(words.length / 2)];
    const expected = full.slice(0, full.indexOf(stop));

    const r = await client.chat.completions.create({ model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY, stop });
    assert.equal(r.choices[0].message.content, expected, `stop ${JSON.stringify(stop)}`);
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.ok(r.usage.completion_tokens < reference.usage.completion_tokens);

    const chunks = await collect(await client.chat.completions.create({
      model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY, stop: ["zzzz-never", stop], stream: true,
    }));
    assert.equal(chunks.map((ch) => ch.choices[0].delta.content ?? "").join(""), expected);
    assert.equal(chunks.at(-1).choices[0].finish_reason, "stop");
  });

  test("sampling with a seed is reproducible", async () => {
    const params = { model: MODEL, messages: STORY, max_tokens: 24, temperature: 1, top_p: 0.9, seed: 1234 };
    const a = await client.chat.completions.create(params);
    const b = await client.chat.completions.create(params);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  });

  test("concurrent streams each get their own answer, equal to the sequential one", async () => {
    const one = () => client.chat.completions.create({ model: MODEL, messages: STORY, max_tokens: 40, ...GREEDY,
                                                       stream: true }).then(collect);
    const results = await Promise.all([one(), one(), one()]);
    for (const chunks of results)
      assert.equal(chunks.map((ch) => ch.choices[0].delta.content ?? "").join(""),
                   reference.choices[0].message.content);
    assert.equal(new Set(results.map((chunks) => chunks[0].id)).size, 3);
  });

  test("message content as an array of text parts, and a system message", async () => {
    const r = await client.chat.completions.create({
      model: MODEL, max_tokens: 40, ...GREEDY,
      messages: [{ role: "user", content: [{ type: "text", text: "Tell me a story" }, { type: "text", text: " about a cat" }] }],
    });
    assert.equal(r.choices[0].message.content, reference.choices[0].message.content);
    const sys = await client.chat.completions.create({
      model: MODEL, max_tokens: 4, ...GREEDY,
      messages: [{ role: "developer", content: "Be brief." }, ...STORY],
    });
    assert.ok(sys.usage.prompt_tokens > reference.usage.prompt_tokens, "the system message is part of the prompt");
  });

  test("non-ASCII messages stream the same text as the non-streamed answer", async () => {
    const messages = [{ role: "user", content: "Érase una vez un gato 🐱 — 猫の話をして" }];
    const whole = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 40, ...GREEDY });
    const chunks = await collect(await client.chat.completions.create({
      model: MODEL, messages, max_tokens: 40, ...GREEDY, stream: true,
    }));
    assert.equal(chunks.map((ch) => ch.choices[0].delta.content ?? "").join(""), whole.choices[0].message.content);
    assert.ok(!whole.choices[0].message.content.includes("\ufffd"), "no character split across tokens");
  });

  test("leaving a stream early cancels its generation on the server", async () => {
    const metric = async (name) => {
      const text = await (await fetch(baseUrl + "/metrics")).text();
      const line = text.split("\n").find((l) => l.startsWith(name + " ") || l.startsWith(name + "{"));
      return line === undefined ? undefined : Number(line.split(" ").at(-1));
    };
    const CLOSED = 'assistd_http_requests_total{route="/v1/chat/completions",status="499"}';
    const closedBefore = (await metric(CLOSED)) ?? 0;
    const tokensBefore = await metric("assistd_tokens_generated_total");
    const stream = await client.chat.completions.create({
      model: MODEL, messages: STORY, max_tokens: 1500, ...GREEDY, stream: true,
    });
    let seen = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0].delta.content && ++seen === 3) break;  // break aborts the request
    }
    const until = Date.now() + 5_000;
    let running;
    while ((running = await metric("assistd_running_sequences")) !== 0 && Date.now() < until)
      await new Promise((r) => setTimeout(r, 20));
    assert.equal(running, 0, "the abandoned stream no longer runs");
    assert.equal(await metric(CLOSED), closedBefore + 1, "the server saw the client leave mid-stream (499)");
    const generated = (await metric("assistd_tokens_generated_total")) - tokensBefore;
    assert.ok(generated < 1000, `generation stopped early: ${generated} of up to 1500 tokens`);
  });

  test("withResponse exposes the HTTP response", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: MODEL, messages: STORY, max_tokens: 2, ...GREEDY })
      .withResponse();
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /^application\/json/);
    assert.equal(data.usage.completion_tokens, 2);
  });
});

describe("completions", () => {
  const PROMPT = "Once upon a time";
  let reference;

  before(async () => {
    reference = await client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 24, ...GREEDY });
  });

  test("non-streamed: text, finish_reason, usage", () => {
    const r = reference;
    assert.match(r.id, /^cmpl-/);
    assert.equal(r.object, "text_completion");
    assert.equal(r.model, MODEL);
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].index, 0);
    assert.ok(r.choices[0].text.length > 0);
    assert.ok(["stop", "length"].includes(r.choices[0].finish_reason));
    assert.equal(r.usage.prompt_tokens, 5, "BOS + 4 tokens for 'Once upon a time' (llama.cpp agrees)");
    assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 24);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  test("streamed: the text reassembles, then a usage chunk", async () => {
    const chunks = await collect(await client.completions.create({
      model: MODEL, prompt: PROMPT, max_tokens: 24, ...GREEDY, stream: true, stream_options: { include_usage: true },
    }));
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, []);
    assertSameUsage(last.usage, reference.usage);
    const withChoices = chunks.slice(0, -1);
    for (const ch of withChoices) {
      assert.equal(ch.object, "text_completion");
      assert.equal(ch.id, chunks[0].id);
    }
    assert.ok(withChoices.length >= 3);
    assert.equal(withChoices.map((ch) => ch.choices[0].text).join(""), reference.choices[0].text);
    assert.equal(withChoices.at(-1).choices[0].finish_reason, reference.choices[0].finish_reason);
  });

  test("a prompt given as an array of one string", async () => {
    const r = await client.completions.create({ model: MODEL, prompt: [PROMPT], max_tokens: 24, ...GREEDY });
    assert.equal(r.choices[0].text, reference.choices[0].text);
  });
});

describe("errors the SDK raises", () => {
  const chat = (extra) => client.chat.completions.create({ model: MODEL, messages: STORY, max_tokens: 4, ...extra });

  test("bad parameters are BadRequestError naming the param", async () => {
    const cases = [
      [{ temperature: 3 }, "temperature", "invalid_value"],
      [{ top_p: 0 }, "top_p", "invalid_value"],
      [{ n: 2 }, "n", "invalid_value"],
      [{ max_tokens: 0 }, "max_tokens", "invalid_value"],
      [{ max_tokens: "four" }, "max_tokens", "invalid_type"],
      [{ max_completion_tokens: 0 }, "max_completion_tokens", "invalid_value"],
      [{ max_completion_tokens: 1.5 }, "max_completion_tokens", "invalid_type"],
      [{ messages: [] }, "messages", "invalid_type"],
      [{ messages: "hello" }, "messages", "invalid_type"],
      [{ messages: [{ role: "wizard", content: "hi" }] }, "messages[0].role", "invalid_value"],
      [{ messages: [{ role: "user", content: 5 }] }, "messages[0].content", "invalid_type"],
      [{ stop: 5 }, "stop", "invalid_type"],
      [{ stream: "yes" }, "stream", "invalid_type"],
      [{ stream: true, stream_options: { include_usage: "yes" } }, "stream_options.include_usage", "invalid_type"],
      [{ stream_options: { include_usage: true } }, "stream_options", "invalid_value"],  // without stream: true
      [{ precision: "fp8" }, "precision", "invalid_value"],
    ];
    for (const [extra, param, code] of cases) {
      const e = await expectError(BadRequestError, () => chat(extra));
      assertErrorShape(e, { status: 400, param, code });
    }
  });

  test("a lone UTF-16 surrogate in a message is BadRequestError", async () => {
    const e = await expectError(BadRequestError, () => chat({ messages: [{ role: "user", content: "cat \ud800" }] }));
    assertErrorShape(e, { status: 400, param: null });
  });

  test("a streamed request with a bad parameter fails before any chunk", async () => {
    const e = await expectError(BadRequestError, () => chat({ stream: true, temperature: -1 }));
    assertErrorShape(e, { status: 400, param: "temperature", code: "invalid_value" });
  });

  test("an unknown model is NotFoundError", async () => {
    const e = await expectError(NotFoundError, () => chat({ model: "gpt-4o" }));
    assertErrorShape(e, { status: 404, param: "model", code: "model_not_found" });
    const c = await expectError(NotFoundError, () => client.completions.create({ model: "davinci", prompt: "x" }));
    assertErrorShape(c, { status: 404, param: "model", code: "model_not_found" });
  });

  test("more tokens than the context is BadRequestError context_length_exceeded", async () => {
    const e = await expectError(BadRequestError, () => chat({ max_tokens: 100_000 }));
    assertErrorShape(e, { status: 400, param: "messages", code: "context_length_exceeded" });
    const long = "Once upon a time ".repeat(1000);  // 4,001 tokens; stories260K's context is 2,048
    const c = await expectError(BadRequestError,
                                () => client.completions.create({ model: MODEL, prompt: long, max_tokens: 1 }));
    assertErrorShape(c, { status: 400, param: "prompt", code: "context_length_exceeded" });
  });

  test("completions: a prompt of the wrong type is BadRequestError", async () => {
    const e = await expectError(BadRequestError, () => client.completions.create({ model: MODEL, prompt: 42 }));
    assertErrorShape(e, { status: 400, param: "prompt", code: "invalid_type" });
  });

  test("an unknown route is NotFoundError", async () => {
    const e = await expectError(NotFoundError, () => client.get("/assistants"));
    assertErrorShape(e, { status: 404, code: "unknown_url" });
    assert.equal(e.param, null);
  });

  test("a wrong method is an APIError with status 405", async () => {
    const e = await expectError(APIError, () => client.get("/chat/completions"));
    assertErrorShape(e, { status: 405, code: "method_not_allowed" });
  });
});

describe("sessions (assistd's extension)", () => {
  const id = "compat-" + process.pid + "-" + Date.now();

  test("session_id in the body, then X-Session-Id, continue one conversation", async () => {
    const first = await client.chat.completions.create({
      model: MODEL, max_tokens: 12, ...GREEDY, session_id: id, messages: [{ role: "user", content: "Tell me a story" }],
    });
    assert.equal(first.session_id, id);
    const { data: second, response } = await client.chat.completions
      .create({ model: MODEL, max_tokens: 12, ...GREEDY, messages: [{ role: "user", content: "And then?" }] },
              { headers: { "X-Session-Id": id } })
      .withResponse();
    assert.equal(response.headers.get("x-session-id"), id);
    assert.ok(second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens,
              "the second turn's prompt holds the first turn and its answer");

    const session = await client.get(`/sessions/${id}`);
    assert.equal(session.id, id);
    assert.equal(session.object, "session");
    assert.deepEqual(session.messages.map((m) => m.role), ["user", "assistant", "user", "assistant"]);
    assert.equal(session.messages[1].content, first.choices[0].message.content);
    assert.equal(session.messages[3].content, second.choices[0].message.content);
    assert.equal(session.usage.completion_tokens, first.usage.completion_tokens + second.usage.completion_tokens);

    const list = await client.get("/sessions");
    assert.ok(list.data.some((s) => s.id === id && s.message_count === 4));

    const deleted = await client.delete(`/sessions/${id}`);
    assert.deepEqual(deleted, { id, object: "session.deleted", deleted: true });
    const gone = await expectError(NotFoundError, () => client.get(`/sessions/${id}`));
    assertErrorShape(gone, { status: 404, param: "session_id", code: "session_not_found" });
  });

  test("a streamed turn is stored when the stream ends", async () => {
    const sid = id + "-stream";
    const chunks = await collect(await client.chat.completions.create({
      model: MODEL, max_tokens: 12, ...GREEDY, stream: true, session_id: sid,
      messages: [{ role: "user", content: "Tell me a story" }],
    }));
    const text = chunks.map((ch) => ch.choices[0]?.delta.content ?? "").join("");
    const session = await client.get(`/sessions/${sid}`);
    assert.equal(session.messages.at(-1).content, text);
    await client.delete(`/sessions/${sid}`);
  });

  test("a malformed session id is BadRequestError", async () => {
    const e = await expectError(BadRequestError, () => client.chat.completions.create({
      model: MODEL, max_tokens: 2, session_id: "not valid!", messages: STORY,
    }));
    assertErrorShape(e, { status: 400, param: "session_id", code: "invalid_session_id" });
    const c = await expectError(BadRequestError, () => client.completions.create({
      model: MODEL, prompt: "x", max_tokens: 2, session_id: id,
    }));
    assertErrorShape(c, { status: 400, param: "session_id" });
  });
});
