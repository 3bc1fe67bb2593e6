// Two people in two browsers: sign up, start a direct chat, write both ways,
// and see ticks go delivered then read, "typing…", and presence come and go.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean,
  messageTexts,
  openConversation,
  openPage,
  openUser,
  screenshot,
  sendMessage,
  serverAndBrowser,
  signUp,
  startDirect,
  waitFor,
  waitForState,
} from './helpers.js';

// A short grace makes "offline" show soon after the last tab closes.
const env = serverAndBrowser(['--presence-grace-ms', '300']);

test('two users chat in a direct conversation with receipts, typing and presence', async () => {
  const alice = await openUser(env.browser, env.server);
  const bob = await openUser(env.browser, env.server);
  await screenshot(alice.page, 'auth-sign-in');
  await signUp(alice.page, 'alice');
  await signUp(bob.page, 'bob');
  await waitFor('the empty state', () => alice.page.isVisible('#list-empty'));
  await screenshot(alice.page, 'empty-list');

  // Alice starts the chat; it appears in Bob's list, where he leaves it closed.
  await startDirect(alice.page, 'bob');
  await waitFor("bob's dot online in the header", () =>
    alice.page.isVisible('.thread-header .presence-dot[data-presence="online"]'),
  );
  await bob.page.locator('.conv-name', { hasText: 'alice' }).waitFor();

  // Delivered: Bob's device holds the message but he has not opened the chat.
  await sendMessage(alice.page, 'Hello Bob');
  await waitForState(alice.page, 'Hello Bob', 'delivered');
  await waitFor('the unread badge', async () => (await bob.page.textContent('.conv .badge')) === '1');
  assert.equal(await bob.page.textContent('.conv-preview'), 'Hello Bob');
  await waitFor('the announcement', async () => (await bob.page.textContent('#announcer')) === 'alice: Hello Bob');
  await screenshot(bob.page, 'direct-unread');

  // Read: Bob opens the chat.
  await openConversation(bob.page, 'alice');
  await waitForState(alice.page, 'Hello Bob', 'read');
  assert.equal(await bob.page.locator('.conv .badge').count(), 0, 'no unread badge once read');

  // Typing, then Bob's answer, with a line break from Shift+Enter.
  await bob.page.click('#composer-input');
  await bob.page.keyboard.type('Hi Alice!');
  await waitFor('"bob is typing…"', async () => (await alice.page.textContent('#typing')) === 'bob is typing…');
  await screenshot(alice.page, 'direct-typing');
  await bob.page.keyboard.press('Shift+Enter');
  await bob.page.keyboard.type('How are you?');
  await bob.page.keyboard.press('Enter');
  await waitForState(bob.page, 'Hi Alice!', 'read');
  assert.deepEqual(await messageTexts(alice.page), ['Hello Bob', 'Hi Alice!\nHow are you?']);
  assert.equal(await bob.page.inputValue('#composer-input'), '', 'the composer is emptied');
  await waitFor('the typing line to clear', async () => (await alice.page.textContent('#typing')) === '');

  for (const text of ['Fine, thanks. Lunch at noon?', 'See https://example.org/menu for the menu.']) {
    await sendMessage(alice.page, text);
    await waitForState(alice.page, text, 'read');
  }
  assert.equal(
    await bob.page.getAttribute('#message-list .msg-text a', 'href'),
    'https://example.org/menu',
    'links are clickable',
  );
  await screenshot(alice.page, 'direct-chat');
  await screenshot(bob.page, 'direct-chat-bob');

  // Presence: Bob closes his only tab, then comes back in a new one.
  await bob.page.close();
  await waitFor("bob's dot offline", () =>
    alice.page.isVisible('.conv .presence-dot[data-presence="offline"]'),
  );
  await waitFor('"last seen"', async () => (await alice.page.textContent('#thread-subtitle')).startsWith('last seen'));
  await screenshot(alice.page, 'direct-peer-offline');
  bob.page = await openPage(bob, env.server);
  await waitFor("bob's dot online again", () =>
    alice.page.isVisible('.conv .presence-dot[data-presence="online"]'),
  );
  assert.equal(await alice.page.textContent('#thread-subtitle'), 'online');

  // The reloaded tab is still signed in and shows the history, ticks included.
  await openConversation(bob.page, 'alice');
  await waitFor("bob's history", async () => (await messageTexts(bob.page)).length === 4);
  assert.equal(await bob.page.getAttribute('.msg-out', 'data-state'), 'read', 'receipts survive a reload');

  // Dark mode.
  await alice.page.emulateMedia({ colorScheme: 'dark' });
  await screenshot(alice.page, 'direct-chat-dark');

  assertClean(assert, alice, bob);
});
