// The chat page in a real browser (Debian's chromium through playwright-core):
// send a message, watch the answer stream in, see the session listed and the
// tokens/s figure, and keep a screenshot (build/test-artifacts/chat-page.png).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import { artifactsDir, baseUrl, requirePackage } from "../common.mjs";

const { chromium } = requirePackage("playwright-core");
const MESSAGE = "Tell me a story about a dog";
const ANSWER_TIMEOUT_MS = 60_000;

let browser;
let page;
const pageErrors = [];

before(async () => {
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true });
  page = await browser.newPage({ viewport: { width: 1100, height: 720 } });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });
  page.on("response", (r) => { if (r.status() >= 400) pageErrors.push(`${r.status()} ${r.url()}`); });
});

after(async () => {
  if (browser) await browser.close();
});

test("a message gets a streamed answer, a session entry and a tokens/s figure", async () => {
  const response = await page.goto(baseUrl + "/");
  assert.equal(response.status(), 200);
  assert.equal(await page.title(), "assistd chat");
  assert.match(await page.locator("#session-label").textContent(), /new session/);

  // Every length the answer takes on, recorded as the DOM changes (before the send).
  await page.evaluate(() => {
    window.answerLengths = [];
    new MutationObserver(() => {
      const answers = document.querySelectorAll("#messages .msg.assistant .text");
      if (answers.length === 0) return;
      const n = answers[answers.length - 1].textContent.length;
      if (n !== window.answerLengths.at(-1)) window.answerLengths.push(n);
    }).observe(document.getElementById("messages"), { childList: true, subtree: true, characterData: true });
  });

  // stories260K answers at thousands of tokens/s, so over loopback the whole
  // stream can land in one or two reads and a page that waited for the end
  // would look the same as one that streams. A slow link (DevTools network
  // emulation, ~48 KB/s: about a second for the answer's events) delivers the
  // response in many pieces, as a remote user's connection would; the page
  // must show each piece as it comes.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 20, downloadThroughput: 48 * 1024, uploadThroughput: -1,
  });

  await page.locator("#input").fill(MESSAGE);
  await page.locator("#input").press("Enter");
  await page.locator("#messages .msg.user").filter({ hasText: MESSAGE }).waitFor();
  // The send button is disabled while the answer streams and enabled again when it is done.
  await page.waitForFunction(() => !document.getElementById("send").disabled &&
                                   document.querySelector("#messages .msg.assistant"),
                             null, { timeout: ANSWER_TIMEOUT_MS });

  const answer = await page.locator("#messages .msg").last();
  assert.match(await answer.getAttribute("class"), /\bassistant\b/, "the answer is no error");
  const text = await answer.locator(".text").textContent();
  assert.ok(text.length > 20, `stories260K tells a story: ${JSON.stringify(text)}`);

  const lengths = await page.evaluate(() => window.answerLengths);
  const growing = lengths.filter((n) => n > 0);
  assert.ok(growing.length >= 3, `the answer grew in steps while streaming, saw lengths ${JSON.stringify(lengths)}`);
  for (let i = 1; i < growing.length; ++i) assert.ok(growing[i] > growing[i - 1], "and only grew");
  assert.equal(growing.at(-1), text.length);
  console.log(`the answer grew in ${growing.length} steps to ${text.length} characters`);

  await cdp.send("Network.emulateNetworkConditions", {
    offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1,
  });

  // The session list shows the new session, titled by the message and marked current.
  const entry = page.locator("#sessions li", { hasText: MESSAGE });
  await entry.waitFor();
  assert.match(await entry.getAttribute("class"), /\bactive\b/);

  assert.match(await page.locator("#session-label").textContent(), /^session [0-9a-f-]+$/);
  const speed = await page.locator("#speed").textContent();
  assert.match(speed, /^\d+ tokens, \d+(\.\d+)? tokens\/s, first token after \d+ ms$/);
  const [, tokens, rate] = /^(\d+) tokens, (\S+) tokens\/s/.exec(speed);
  assert.ok(Number(tokens) >= 2 && Number(rate) > 0, speed);

  fs.mkdirSync(artifactsDir, { recursive: true });
  const shot = path.join(artifactsDir, "chat-page.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log("screenshot: " + shot);
  assert.ok(fs.statSync(shot).size > 10_000, "the screenshot holds a rendered page");

  // The server kept the conversation: "New session" clears the page, the list reopens it.
  await page.locator("#new-session").click();
  assert.equal(await page.locator("#messages .msg").count(), 0);
  await entry.click();
  await page.locator("#messages .msg.assistant").waitFor();
  assert.deepEqual(await page.locator("#messages .msg .text").allTextContents(), [MESSAGE, text]);

  assert.deepEqual(pageErrors, [], "the page logged no errors");
});
