// In a group above the fan-out threshold the web client holds its ack (up
// to the welcome's lazy_ack_ms); in a direct chat it acks at once. Both
// messages arrive together, so the direct chat's ack must leave first.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertClean, http, openUser, serverAndBrowser, signIn, waitFor, watchFrames } from './helpers.js';

// Groups of more than two members are large here.
const env = serverAndBrowser(['--fanout-sync-threshold', '2']);

test('a large group is acknowledged after a direct chat that got its message at the same time', async () => {
  const api = http(env.server);
  const ann = await api.account('ann');
  const ben = await api.account('ben');
  const cat = await api.account('cat');
  const create = (body) => api.call('POST', '/conversations', body, ann.token);
  const group = await create({ kind: 'group', title: 'big', members: [ben.user_id, cat.user_id] });
  const direct = await create({ kind: 'direct', members: [ben.user_id] });

  const user = await openUser(env.browser, env.server);
  const frames = watchFrames(user.page);
  await signIn(user.page, 'ben');
  await user.page.locator('.conv').nth(1).waitFor();
  frames.sent.length = 0;
  const acks = () => frames.sent.filter((f) => f.type === 'ack').map((f) => f.conversation_id);

  const post = (conversation, text) =>
    api.call(
      'POST',
      `/conversations/${conversation.conversation_id}/messages`,
      { client_msg_id: text, content: { type: 'text', text } },
      ann.token,
    );
  await post(group, 'to the group');
  await post(direct, 'to ben');
  await waitFor('both acks', () => acks().includes(group.conversation_id) && acks().includes(direct.conversation_id));
  assert.deepEqual(acks(), [direct.conversation_id, group.conversation_id]);
  assertClean(assert, user);
  await user.context.close();
});
