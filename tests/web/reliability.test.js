// Faults on the wire, made by routing one browser's WebSocket through a proxy
// in the test: a lost push (a gap, filled from the history endpoint), a
// repeated push (dropped by message_id), a connection that goes silent
// (given up after a heartbeat gets no answer), and a page reloaded while
// messages wait in the outbox.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean,
  http,
  messageTexts,
  openConversation,
  openUser,
  sendMessage,
  serverAndBrowser,
  signIn,
  startDirect,
  stateOf,
  storedHistory,
  waitFor,
  waitForState,
} from './helpers.js';

const SOCKET = /\/v1\/ws$/;

// A 3 s presence timeout makes the server ask for a heartbeat every second,
// so a silent connection is noticed within a few seconds.
const env = serverAndBrowser(['--presence-timeout-ms', '3000']);

/** Two signed-in users with a direct chat open on both sides; `route` is installed on the reader's browser first. */
async function pair(writerName, readerName, route) {
  const api = http(env.server);
  await api.account(writerName);
  await api.account(readerName);
  const writer = await openUser(env.browser, env.server);
  const reader = await openUser(env.browser, env.server);
  if (route) await reader.context.routeWebSocket(SOCKET, route);
  await signIn(writer.page, writerName);
  await signIn(reader.page, readerName);
  await startDirect(writer.page, readerName);
  await sendMessage(writer.page, 'first');
  await openConversation(reader.page, writerName);
  await waitForState(writer.page, 'first', 'read');
  return { writer, reader };
}

test('a lost push is filled from history, and a repeated push is shown once', async () => {
  const fills = [];
  const { writer, reader } = await pair('peggy', 'quinn', (client) => {
    const upstream = client.connectToServer();
    client.onMessage((text) => upstream.send(text));
    upstream.onMessage((text) => {
      const frame = JSON.parse(text);
      const body = frame.type === 'message' ? frame.content.text : null;
      if (body === 'dropped') return; // Every push of it, retries included, is lost.
      client.send(text);
      if (body === 'doubled') client.send(text);
    });
  });
  reader.page.on('request', (request) => {
    if (request.url().includes('after=')) fills.push(request.url());
  });

  const lines = ['first', 'dropped', 'after the gap', 'doubled', 'last'];
  for (const text of lines.slice(1)) await sendMessage(writer.page, text);
  await waitForState(writer.page, 'last', 'read');
  await waitFor("quinn's view", async () => (await messageTexts(reader.page)).length >= lines.length);
  assert.deepEqual(await messageTexts(reader.page), lines, 'each once, in order');
  assert.ok(fills.length > 0, 'the gap was filled from the history endpoint');
  assertClean(assert, writer, reader);
});

test('a connection that goes silent is given up and replaced', async () => {
  let silent = false;
  let connections = 0;
  const { writer, reader } = await pair('rosa', 'sam', (client) => {
    const id = ++connections;
    const upstream = client.connectToServer();
    // Once silent, the first connection passes nothing either way. Even when
    // the server gives up on it, the page is not told: only its own
    // heartbeat check can notice.
    const passes = () => !(silent && id === 1);
    client.onMessage((text) => passes() && upstream.send(text));
    upstream.onMessage((text) => passes() && client.send(text));
    upstream.onClose((code, reason) => passes() && client.close({ code, reason }));
  });

  silent = true;
  await waitFor('the banner', () => reader.page.isVisible('#banner'));
  await sendMessage(reader.page, 'written while cut off');
  await waitFor('a new connection', () => connections > 1);
  await waitFor('the banner to go', async () => !(await reader.page.isVisible('#banner')));
  await waitForState(reader.page, 'written while cut off', 'read');
  await waitFor("rosa's view", async () => (await messageTexts(writer.page)).length === 2);
  assert.deepEqual(await messageTexts(writer.page), ['first', 'written while cut off']);
  assertClean(assert, writer, reader);
});

test('messages waiting in the outbox survive a reload', async () => {
  let refuse = false;
  const { writer, reader } = await pair('tina', 'uma', (client) => {
    if (refuse) {
      client.close({ code: 1011, reason: 'unreachable' });
      return;
    }
    const upstream = client.connectToServer();
    client.onMessage((text) => upstream.send(text));
    upstream.onMessage((text) => client.send(text));
  });

  // The server becomes unreachable; Uma writes, and reloads before it is back.
  refuse = true;
  await reader.page.evaluate(() => window.dispatchEvent(new Event('offline')));
  await waitFor('the banner', () => reader.page.isVisible('#banner'));
  await sendMessage(reader.page, 'kept across a reload');
  assert.equal(await stateOf(reader.page, 'kept across a reload'), 'pending');
  await reader.page.reload();
  await openConversation(reader.page, 'tina');
  await waitFor('the pending message after the reload', async () =>
    (await stateOf(reader.page, 'kept across a reload')) === 'pending',
  );

  // Reconnection attempts go on with backoff, and the next one gets through.
  refuse = false;
  await waitForState(reader.page, 'kept across a reload', 'read');
  await waitFor("tina's view", async () => (await messageTexts(writer.page)).length === 2);
  assert.deepEqual(await messageTexts(writer.page), ['first', 'kept across a reload']);
  assert.deepEqual(
    (await storedHistory(writer.page, env.server)).map((m) => m.content.text),
    ['first', 'kept across a reload'],
  );
  assertClean(assert, writer, reader);
});
