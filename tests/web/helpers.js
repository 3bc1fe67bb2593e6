// Shared set-up of the web client's end-to-end tests: a real `banter serve`
// on a free port with a fresh data directory, headless Chromium from the
// system's packages driven by playwright-core, and small helpers that wait
// for what a person would see instead of sleeping.

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');

/** Where screenshots go; target/ is ignored by git, and CI keeps it as an artifact. */
export const SCREENSHOT_DIR = path.join(repo, 'target', 'web-screenshots');

/** How long any one expectation may take on a slow, busy machine. */
export const TIMEOUT_MS = 20_000;

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * The server and browser of one test file: started before its first test,
 * closed after its last. Their fields are set once the `before` hook has run.
 */
export function serverAndBrowser(extraArgs = []) {
  const env = { server: undefined, browser: undefined };
  before(async () => {
    env.server = await startServer(extraArgs);
    env.browser = await launchBrowser();
  });
  after(async () => {
    await env.browser?.close();
    await env.server?.stop();
  });
  return env;
}

/**
 * Starts `banter serve` ($BANTER_BIN, by default target/debug/banter) and
 * answers `{url, stop}` once it prints its address. `$BANTER_WEB_DIR`, when
 * set, makes it serve the client from that directory instead of the copy
 * embedded in the binary.
 */
export async function startServer(extraArgs = []) {
  const bin = process.env.BANTER_BIN
    ? path.resolve(process.env.BANTER_BIN)
    : path.join(repo, 'target', 'debug', 'banter');
  const dataDir = await mkdtemp(path.join(tmpdir(), 'banter-web-'));
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--argon2-memory-kib', '64', ...extraArgs];
  if (process.env.BANTER_WEB_DIR) args.push('--web-dir', path.resolve(process.env.BANTER_WEB_DIR));
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, BANTER_LOG: 'warn' } });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const url = await new Promise((resolve, reject) => {
    let stdout = '';
    const timer = setTimeout(() => reject(new Error(`banter did not start in time:\n${stderr}`)), TIMEOUT_MS);
    child.once('error', (e) => reject(new Error(`cannot run ${bin}: ${e.message}`)));
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /banter listening on (http:\/\/\S+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    exited.then((code) => reject(new Error(`banter exited with ${code} before listening:\n${stderr}`)));
  });
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(killer);
    }
    await rm(dataDir, { recursive: true, force: true });
  };
  return { url, stop };
}

/** Headless Chromium from /usr/bin/chromium (or $CHROMIUM_PATH); no browser download. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
  });
}

/**
 * A new browser context (one person's browser) with one page on the server.
 * The page records every request to another origin and every error the page
 * raises (uncaught exceptions, Content-Security-Policy refusals); the test
 * checks both are empty with `assertClean`.
 */
export async function openUser(browser, server, { viewport = { width: 1180, height: 760 }, colorScheme = 'light' } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, locale: 'en-GB', timezoneId: 'Europe/London' });
  const user = { context, page: null, foreign: [], errors: [] };
  user.page = await openPage(user, server);
  return user;
}

/** Another tab of the same person. */
export async function openPage(user, server) {
  const page = await user.context.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const origin = new URL(server.url).origin;
  const wsOrigin = origin.replace(/^http/, 'ws');
  page.on('request', (request) => {
    const url = request.url();
    if (url.startsWith('data:') || url.startsWith('blob:')) return;
    const requestOrigin = new URL(url).origin;
    if (requestOrigin !== origin && requestOrigin !== wsOrigin) user.foreign.push(url);
  });
  page.on('websocket', (ws) => {
    if (!ws.url().startsWith(wsOrigin)) user.foreign.push(ws.url());
  });
  page.on('pageerror', (error) => user.errors.push(`uncaught: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/i.test(message.text())) {
      user.errors.push(`csp: ${message.text()}`);
    }
  });
  await page.goto(server.url);
  return page;
}

/**
 * Every frame the page's WebSockets send and receive from now on, parsed, in
 * the order they pass: `{ sent, received }`, arrays a test may read or empty.
 */
export function watchFrames(page) {
  const frames = { sent: [], received: [] };
  page.on('websocket', (ws) => {
    ws.on('framesent', ({ payload }) => frames.sent.push(JSON.parse(payload)));
    ws.on('framereceived', ({ payload }) => frames.received.push(JSON.parse(payload)));
  });
  return frames;
}

/** The page made no request off its own origin and raised no error. */
export function assertClean(assert, ...users) {
  for (const user of users) {
    assert.deepEqual(user.foreign, [], 'requests to other origins');
    assert.deepEqual(user.errors, [], 'errors in the page');
  }
}

/** Polls `probe` until it answers something truthy; fails with `what` after the timeout. */
export async function waitFor(what, probe, timeout = TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Signs a new user up through the form. */
export async function signUp(page, username, password = 'password123') {
  await page.click('#mode-signup');
  await page.fill('#auth-username', username);
  await page.fill('#auth-password', password);
  await page.click('#auth-submit');
  await page.locator('#app').waitFor({ state: 'visible' });
  await waitFor('the connection', async () => (await page.textContent('#me-status')) === 'Online');
}

/** Signs an existing user in through the form. */
export async function signIn(page, username, password = 'password123') {
  await page.click('#mode-signin');
  await page.fill('#auth-username', username);
  await page.fill('#auth-password', password);
  await page.click('#auth-submit');
  await page.locator('#app').waitFor({ state: 'visible' });
}

/** Starts a direct chat with `username` through the "New chat" dialog. */
export async function startDirect(page, username) {
  await page.click('#new-chat');
  await page.fill('#new-chat-username', username);
  await page.press('#new-chat-username', 'Enter');
  await page.locator('#dialog-new-chat').waitFor({ state: 'hidden' });
  await waitFor(`the chat with ${username}`, async () => (await page.textContent('#thread-title')) === username);
}

/** Opens a conversation from the list by its name. */
export async function openConversation(page, name) {
  await page.locator('.conv-link', { has: page.locator('.conv-name', { hasText: name }) }).click();
  await waitFor(`${name} to open`, async () => (await page.textContent('#thread-title')) === name);
}

/** Types a message into the composer and sends it with Enter. */
export async function sendMessage(page, text) {
  await page.fill('#composer-input', text);
  await page.press('#composer-input', 'Enter');
}

/** The texts of the messages shown, in order. */
export function messageTexts(page) {
  return page.$$eval('#message-list .msg .msg-text', (nodes) => nodes.map((n) => n.textContent));
}

/** The delivery state shown on the user's own message with this text. */
export function stateOf(page, text) {
  return page.locator('.msg-out', { has: page.locator('.msg-text', { hasText: text }) }).getAttribute('data-state');
}

/** Waits until the user's own message with this text shows `state`. */
export function waitForState(page, text, state) {
  return waitFor(`"${text}" to be ${state}`, async () => (await stateOf(page, text)) === state);
}

/** Saves a screenshot under target/web-screenshots/NAME.png. */
export async function screenshot(page, name) {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
}

/** A tiny client of the HTTP API, for seeding data without the browser. */
export function http(server) {
  const call = async (method, route, body, token) => {
    const response = await fetch(`${server.url}/v1${route}`, {
      method,
      headers: {
        ...(body ? { 'Content-Type': 'application/json' } : {}),
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    call,
    /** Registers a user and signs in as a new device: `{token, user_id}`. */
    async account(username, password = 'password123') {
      await call('POST', '/users', { username, password });
      return call('POST', '/sessions', { username, password, device_name: 'test' });
    },
  };
}

/** What the server holds of the first conversation in the page's list, read with the page's own token. */
export async function storedHistory(page, server) {
  const conversationId = await page.getAttribute('.conv', 'data-conversation-id');
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem('banter.session')).token);
  const { messages } = await http(server).call('GET', `/conversations/${conversationId}/messages`, undefined, token);
  return messages;
}

/** The visible controls that have no accessible name (no label, aria-label or text). */
export function unlabelledControls(page) {
  return page.evaluate(() => {
    const missing = [];
    for (const control of document.querySelectorAll('button, input, textarea, select, a[href]')) {
      if (!control.checkVisibility()) continue;
      const labels = [...(control.labels ?? [])].map((l) => l.textContent).join('');
      const name = control.getAttribute('aria-label') || control.getAttribute('aria-labelledby') || labels || control.textContent;
      if (!name.trim()) missing.push(control.outerHTML.slice(0, 120));
    }
    return missing;
  });
}
