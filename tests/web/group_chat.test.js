// Three people in a group: it is created from the dialog, appears for the
// others, everyone sees every message in the same order, a member is added,
// and one member leaves.

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
  unlabelledControls,
  waitFor,
  waitForState,
} from './helpers.js';

const env = serverAndBrowser();

test('a group of three chats, grows by one, and loses one', async () => {
  const api = http(env.server);
  for (const name of ['ann', 'ben', 'cat']) await api.account(name);
  const dan = await api.account('dan');
  const [ann, ben, cat] = await Promise.all([1, 2, 3].map(() => openUser(env.browser, env.server)));
  await signIn(ann.page, 'ann');
  await signIn(ben.page, 'ben');
  await signIn(cat.page, 'cat');

  // Escape closes a dialog without doing anything.
  await ann.page.click('#new-chat');
  await ann.page.locator('#dialog-new-chat').waitFor({ state: 'visible' });
  await ann.page.keyboard.press('Escape');
  await ann.page.locator('#dialog-new-chat').waitFor({ state: 'hidden' });

  // Ann creates the group; an unknown name is refused first.
  await ann.page.click('#new-group');
  await ann.page.fill('#new-group-title', 'Weekend trip');
  await ann.page.fill('#new-group-members', 'ben, nobody');
  await ann.page.click('#dialog-new-group button[type="submit"]');
  await waitFor('the unknown-user error', async () =>
    (await ann.page.textContent('#dialog-new-group .form-error')) === 'No user named nobody.',
  );
  assert.deepEqual(await unlabelledControls(ann.page), [], 'every control in the dialog is labelled');
  await screenshot(ann.page, 'group-dialog');
  await ann.page.fill('#new-group-members', 'ben, @cat');
  await ann.page.press('#new-group-members', 'Enter');
  await waitFor('the group to open', async () => (await ann.page.textContent('#thread-title')) === 'Weekend trip');
  assert.equal(await ann.page.textContent('#thread-subtitle'), '3 members: you, ben, cat');

  // The others see it appear, and everyone sees everything in one order.
  await openConversation(ben.page, 'Weekend trip');
  await openConversation(cat.page, 'Weekend trip');
  const lines = [
    [ann, "Who's driving?"],
    [ben, 'I can drive'],
    [cat, "I'll bring snacks"],
    [ann, 'Perfect, see you Saturday'],
  ];
  for (const [user, text] of lines) {
    await sendMessage(user.page, text);
    await waitForState(user.page, text, 'read');
  }
  const expected = lines.map(([, text]) => text);
  for (const user of [ann, ben, cat]) {
    await waitFor('every message', async () => (await messageTexts(user.page)).length === expected.length);
    assert.deepEqual(await messageTexts(user.page), expected);
  }
  assert.deepEqual(
    await ann.page.$$eval('.msg-sender', (nodes) => nodes.map((n) => n.textContent)),
    ['ben', 'cat'],
    'incoming group messages name their sender',
  );
  await screenshot(ann.page, 'group-chat');

  // Ann adds Dan.
  await ann.page.click('#add-members');
  await ann.page.fill('#add-members-names', 'dan');
  await ann.page.press('#add-members-names', 'Enter');
  await waitFor('four members', async () => (await ann.page.textContent('#thread-subtitle')).startsWith('4 members'));
  const dansList = await api.call('GET', '/conversations', undefined, dan.token);
  assert.deepEqual(dansList.conversations.map((c) => c.title), ['Weekend trip']);

  // Cat leaves, after confirming.
  await cat.page.click('#leave');
  await cat.page.locator('#dialog-confirm').waitFor({ state: 'visible' });
  assert.equal(await cat.page.textContent('#dialog-confirm-title'), 'Leave Weekend trip?');
  await screenshot(cat.page, 'group-leave-confirm');
  await cat.page.click('#dialog-confirm-ok');
  await waitFor('the group to leave cat’s list', async () => (await cat.page.locator('.conv').count()) === 0);
  assert.ok(await cat.page.isVisible('#list-empty'), 'the empty state is back');
  await sendMessage(ann.page, 'Cat left');
  await waitFor('ben to get it', async () => (await messageTexts(ben.page)).includes('Cat left'));
  assert.equal(await cat.page.locator('.conv').count(), 0, 'no messages reach a member who left');

  assertClean(assert, ann, ben, cat);
});
