// The web client holds its acks of large groups, but the flow-control window
// is the device's, across all its conversations: once a quarter of it is
// held, over any number of large groups, every held ack goes at once.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertClean, http, openUser, serverAndBrowser, signIn, waitFor, watchFrames } from './helpers.js';

// Groups of more than two members are large; the smallest window (64, so a
// quarter is 16); and an ack timeout long enough that a held ack would wait
// (lazy_ack_ms, a tenth of it) far longer than this test.
const env = serverAndBrowser([
  '--fanout-sync-threshold', '2',
  '--delivery-window', '64',
  '--ack-timeout-ms', '600000',
]);

test('held acks of two large groups go together once they hold a quarter of the window', async () => {
  const api = http(env.server);
  const ann = await api.account('ann');
  const ben = await api.account('ben');
  const cat = await api.account('cat');
  const create = (title) =>
    api.call('POST', '/conversations', { kind: 'group', title, members: [ben.user_id, cat.user_id] }, ann.token);
  const first = await create('first');
  const second = await create('second');

  const user = await openUser(env.browser, env.server);
  const frames = watchFrames(user.page);
  await signIn(user.page, 'ben');
  await user.page.locator('.conv').nth(1).waitFor();
  frames.sent.length = 0;
  const acks = () => frames.sent.filter((f) => f.type === 'ack');
  const pushed = () => frames.received.filter((f) => f.type === 'message').length;

  const post = (conversation, n) =>
    api.call(
      'POST',
      `/conversations/${conversation.conversation_id}/messages`,
      { client_msg_id: `m-${conversation.conversation_id}-${n}`, content: { type: 'text', text: `message ${n}` } },
      ann.token,
    );
  // 15 held: 10 in one group, 5 in the other; each alone, and both together, under 16.
  for (let n = 1; n <= 10; n++) await post(first, n);
  for (let n = 1; n <= 5; n++) await post(second, n);
  await waitFor('15 messages pushed', () => pushed() === 15);
  // A page turn or two for the client to take them in; an ack would go 25 ms after.
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.deepEqual(acks(), [], 'acks of large groups are held below a quarter of the window');

  // The 16th makes a quarter: both groups are acknowledged, each up to its last message.
  await post(second, 6);
  const acked = (conversation, seq) =>
    acks().some((a) => a.conversation_id === conversation.conversation_id && a.seq === seq);
  await waitFor('both groups acknowledged', () => acked(first, 10) && acked(second, 6));
  assertClean(assert, user);
  await user.context.close();
});
