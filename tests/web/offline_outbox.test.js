// One person loses the network, writes two messages (shown pending, waiting
// in the outbox), and comes back: the other person receives each exactly
// once, in order, and the server stored each once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean,
  http,
  messageTexts,
  openConversation,
  openUser,
  screenshot,
  sendMessage,
  serverAndBrowser,
  signIn,
  startDirect,
  stateOf,
  storedHistory,
  waitFor,
  waitForState,
} from './helpers.js';

// A short ack timeout makes the server retry unacknowledged pushes quickly,
// so a client that failed to drop repeats would show them within the test.
const env = serverAndBrowser(['--ack-timeout-ms', '300']);

test('messages written offline wait in the outbox and arrive once, in order', async () => {
  const api = http(env.server);
  await api.account('carol');
  await api.account('dave');
  const carol = await openUser(env.browser, env.server);
  const dave = await openUser(env.browser, env.server);
  await signIn(carol.page, 'carol');
  await signIn(dave.page, 'dave');

  await startDirect(carol.page, 'dave');
  await sendMessage(carol.page, 'Are you there?');
  await openConversation(dave.page, 'carol');
  await sendMessage(dave.page, 'Yes, on the train.');
  await waitForState(dave.page, 'Yes, on the train.', 'read');

  // The network goes away: the banner says so, and new messages stay pending.
  await dave.context.setOffline(true);
  await waitFor('the offline banner', () => dave.page.isVisible('#banner'));
  await sendMessage(dave.page, 'Entering a tunnel');
  await sendMessage(dave.page, 'Still in the tunnel');
  assert.equal(await stateOf(dave.page, 'Entering a tunnel'), 'pending');
  assert.equal(await stateOf(dave.page, 'Still in the tunnel'), 'pending');
  await waitFor('the banner to count the unsent messages', async () =>
    (await dave.page.textContent('#banner-text')).includes('2 messages will be sent'),
  );
  assert.deepEqual(
    await dave.page.evaluate(() => JSON.parse(localStorage.getItem(`banter.outbox.${JSON.parse(localStorage.getItem('banter.session')).user_id}`)).map((e) => e.content.text)),
    ['Entering a tunnel', 'Still in the tunnel'],
    'the outbox is kept in localStorage',
  );
  await screenshot(dave.page, 'offline-pending');

  // Back online: the outbox goes out, and Carol sees each message once, in order.
  await dave.context.setOffline(false);
  await waitFor('the banner to go', async () => !(await dave.page.isVisible('#banner')));
  await waitForState(dave.page, 'Entering a tunnel', 'read');
  await waitForState(dave.page, 'Still in the tunnel', 'read');
  const expected = ['Are you there?', 'Yes, on the train.', 'Entering a tunnel', 'Still in the tunnel'];
  await waitFor("carol's view", async () => (await messageTexts(carol.page)).length >= expected.length);
  await screenshot(carol.page, 'offline-received');

  // Let the server's retries (every 300 ms) come and go: nothing may repeat.
  await carol.page.waitForTimeout(1_500);
  assert.deepEqual(await messageTexts(carol.page), expected, 'each message once, in order');
  assert.deepEqual(await messageTexts(dave.page), expected);
  const stored = await storedHistory(carol.page, env.server);
  assert.deepEqual(
    stored.map((m) => m.content.text),
    expected,
    'the server stored each message once',
  );

  assertClean(assert, carol, dave);
});

test('a send whose answer is lost goes again with the same client_msg_id and is stored once', async () => {
  const api = http(env.server);
  await api.account('erin');
  await api.account('frank');
  const erin = await openUser(env.browser, env.server);
  const frank = await openUser(env.browser, env.server);

  // Erin's WebSocket goes through a proxy that loses the `sent` answering
  // the first send of "Lost answer", and drops the connection there.
  const sends = [];
  let lostOne = false;
  await erin.context.routeWebSocket(/\/v1\/ws$/, (client) => {
    const upstream = client.connectToServer();
    client.onMessage((text) => {
      const frame = JSON.parse(text);
      if (frame.type === 'send') sends.push(frame);
      upstream.send(text);
    });
    upstream.onMessage((text) => {
      const frame = JSON.parse(text);
      const lost = sends.find((s) => s.content.text === 'Lost answer');
      if (!lostOne && frame.type === 'sent' && frame.client_msg_id === lost?.client_msg_id) {
        lostOne = true;
        client.close({ code: 1001, reason: 'proxy lost the answer' });
        upstream.close();
        return;
      }
      client.send(text);
    });
  });

  await signIn(erin.page, 'erin');
  await signIn(frank.page, 'frank');
  await startDirect(erin.page, 'frank');
  await openConversation(frank.page, 'erin');
  await sendMessage(erin.page, 'Lost answer');
  await waitFor('the proxy to lose the answer', () => lostOne);
  // Receipts sent while Erin was cut off are not replayed, so only the
  // next message's read receipt shows both as read.
  await waitFor('the replayed send to be confirmed', async () =>
    ['sent', 'delivered', 'read'].includes(await stateOf(erin.page, 'Lost answer')),
  );
  await sendMessage(erin.page, 'After the loss');
  await waitForState(erin.page, 'After the loss', 'read');
  assert.equal(await stateOf(erin.page, 'Lost answer'), 'read');

  const lost = sends.filter((s) => s.content.text === 'Lost answer');
  assert.equal(lost.length, 2, 'the send went out again after reconnecting');
  assert.equal(lost[0].client_msg_id, lost[1].client_msg_id, 'with the same client_msg_id');
  await frank.page.waitForTimeout(1_000);
  assert.deepEqual(await messageTexts(frank.page), ['Lost answer', 'After the loss']);
  assert.deepEqual(await messageTexts(erin.page), ['Lost answer', 'After the loss']);
  const stored = await storedHistory(frank.page, env.server);
  assert.deepEqual(stored.map((m) => m.content.text), ['Lost answer', 'After the loss'], 'stored once');
  assertClean(assert, erin, frank);
});
