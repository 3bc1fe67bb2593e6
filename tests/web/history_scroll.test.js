// A conversation with 120 messages stored before the reader signs in: the
// newest page shows first, scrolling up loads the rest page by page while
// the view stays on what the reader was looking at, with no gaps and no
// duplicates.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean,
  http,
  openConversation,
  openUser,
  screenshot,
  serverAndBrowser,
  signIn,
  waitFor,
} from './helpers.js';

const SEEDED = 120;

const env = serverAndBrowser();

/** The seqs of the messages shown, in order. */
function shownSeqs(page) {
  return page.$$eval('#message-list .msg', (nodes) => nodes.map((n) => Number(n.dataset.seq)));
}

test('scrolling up loads older history without gaps or duplicates', async () => {
  const api = http(env.server);
  const hal = await api.account('hal');
  const ivy = await api.account('ivy');
  const conversation = await api.call('POST', '/conversations', { kind: 'direct', members: [ivy.user_id] }, hal.token);
  for (let n = 1; n <= SEEDED; n += 1) {
    const sender = n % 3 === 1 ? hal : ivy;
    await api.call(
      'POST',
      `/conversations/${conversation.conversation_id}/messages`,
      { client_msg_id: `seed-${n}`, content: { type: 'text', text: `Message ${n}` } },
      sender.token,
    );
  }

  const reader = await openUser(env.browser, env.server);
  await signIn(reader.page, 'hal');
  const { page } = reader;
  // Before the chat is opened only its newest message is known, so the count
  // is what lies above Hal's read position.
  await waitFor('the preview', async () => (await page.textContent('.conv-preview')) === 'Message 120');
  assert.equal(await page.textContent('.conv .badge'), '99+');
  await openConversation(page, 'ivy');

  // The newest page first, scrolled to the bottom.
  await waitFor('the newest page', async () => (await shownSeqs(page)).length >= 50);
  const firstPage = await shownSeqs(page);
  assert.deepEqual(firstPage, range(SEEDED - firstPage.length + 1, SEEDED));
  assert.ok(firstPage.length < SEEDED, 'not everything at once');
  assert.ok(await page.$eval('#messages', (s) => s.scrollHeight - s.scrollTop - s.clientHeight < 50), 'at the bottom');
  await waitFor('the badge to clear', async () => (await page.locator('.conv .badge').count()) === 0);

  // Scroll to the top: one more page comes, and the message that was on top stays in view.
  await page.$eval('#messages', (s) => {
    s.scrollTop = 0;
  });
  await waitFor('the second page', async () => (await shownSeqs(page)).length > firstPage.length);
  const offset = await page.$eval(
    '#messages',
    (s, seq) => s.querySelector(`.msg[data-seq="${seq}"]`).getBoundingClientRect().top - s.getBoundingClientRect().top,
    firstPage[0],
  );
  assert.ok(offset >= 0 && offset < 200, `the message that was on top stays in view (at ${offset}px)`);

  // Keep scrolling up until the beginning.
  await waitFor('the beginning of the conversation', async () => {
    await page.$eval('#messages', (s) => {
      s.scrollTop = 0;
    });
    return (await page.getAttribute('#history-status', 'data-state')) === 'start';
  });
  assert.deepEqual(await shownSeqs(page), range(1, SEEDED), 'every message once, in order');
  const texts = await page.$$eval('#message-list .msg-text', (nodes) => nodes.map((n) => n.textContent));
  assert.deepEqual(texts, range(1, SEEDED).map((n) => `Message ${n}`));
  assert.equal(await page.textContent('#history-status'), 'This is the beginning of your conversation with ivy.');
  await screenshot(page, 'history-top');

  // Far from the newest message, a button leads back to it.
  assert.ok(await page.isVisible('#jump'));
  await page.click('#jump');
  await waitFor('the bottom again', async () => !(await page.isVisible('#jump')));
  assert.ok(await page.$eval('#messages', (s) => s.scrollHeight - s.scrollTop - s.clientHeight < 50));

  assertClean(assert, reader);
});

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
