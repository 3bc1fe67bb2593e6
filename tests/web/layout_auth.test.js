// Accounts (sign up with its checks, sign out, sign in with a wrong and a
// right password, staying signed in across a reload), the one-pane layout of
// a narrow window, and the page's accessibility basics.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean,
  http,
  messageTexts,
  openUser,
  screenshot,
  sendMessage,
  serverAndBrowser,
  signIn,
  signUp,
  startDirect,
  unlabelledControls,
  waitFor,
  waitForState,
} from './helpers.js';

const env = serverAndBrowser();

test('signing up, out and in', async () => {
  await http(env.server).account('taken');
  const user = await openUser(env.browser, env.server);
  const { page } = user;

  await page.click('#mode-signup');
  await page.fill('#auth-username', 'No Spaces!');
  await page.fill('#auth-password', 'longenough');
  await page.click('#auth-submit');
  assert.match(await page.textContent('#auth-error'), /lowercase letters, digits/);
  await page.fill('#auth-username', 'taken');
  await page.click('#auth-submit');
  await waitFor('the taken-name error', async () => (await page.textContent('#auth-error')).includes('taken'));
  await screenshot(page, 'auth-sign-up-error');

  await page.fill('#auth-username', 'luke');
  await page.fill('#auth-password', 'short');
  await page.click('#auth-submit');
  assert.equal(await page.textContent('#auth-error'), 'Passwords have at least 8 characters.');
  await signUp(page, 'luke');
  assert.equal(await page.textContent('#me-name'), 'luke');

  await page.reload();
  await waitFor('still signed in after a reload', async () => (await page.textContent('#me-status')) === 'Online');

  await page.click('#sign-out');
  await page.locator('#auth').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => localStorage.getItem('banter.session')), null, 'the token is forgotten');
  assert.equal(await page.textContent('#auth-error'), '', 'signing out is not an error');

  await page.fill('#auth-username', 'luke');
  await page.fill('#auth-password', 'wrong password');
  await page.click('#auth-submit');
  await waitFor('the wrong-password error', async () =>
    (await page.textContent('#auth-error')) === 'Wrong username or password.',
  );
  await signIn(page, 'luke');
  await waitFor('online', async () => (await page.textContent('#me-status')) === 'Online');
  assertClean(assert, user);
});

test('a narrow window shows one pane at a time', async () => {
  await http(env.server).account('mia');
  const user = await openUser(env.browser, env.server, { viewport: { width: 390, height: 780 } });
  const { page } = user;
  await screenshot(page, 'narrow-sign-in');
  await signUp(page, 'noah');
  assert.ok(await page.isVisible('.sidebar'));
  assert.ok(!(await page.isVisible('.thread-pane')), 'no second pane');

  await startDirect(page, 'mia');
  assert.ok(!(await page.isVisible('.sidebar')), 'the list makes room for the conversation');
  assert.ok(await page.isVisible('#back'));
  await sendMessage(page, 'Hi Mia, this is a rather long first message to see how a bubble wraps on a phone.');
  await sendMessage(page, 'Short one');
  await waitForState(page, 'Short one', 'sent');
  assert.deepEqual(await unlabelledControls(page), []);
  await screenshot(page, 'narrow-conversation');

  await page.click('#back');
  await waitFor('the list again', () => page.isVisible('.sidebar'));
  assert.ok(!(await page.isVisible('.thread-pane')));
  assert.equal(
    await page.evaluate(() => document.activeElement?.closest('.conv')?.dataset.kind),
    'direct',
    'the focus returns to the conversation left',
  );
  await screenshot(page, 'narrow-list');

  // The browser's back button goes back into the conversation.
  await page.goBack();
  await waitFor('the conversation again', () => page.isVisible('#thread'));
  assert.equal((await messageTexts(page)).length, 2);
  assertClean(assert, user);
});

test('the page is labelled for assistive technology', async () => {
  const user = await openUser(env.browser, env.server);
  const { page } = user;
  assert.deepEqual(await unlabelledControls(page), [], 'sign-in form');
  await signUp(page, 'olga');
  assert.deepEqual(await unlabelledControls(page), [], 'application');
  assert.equal(await page.getAttribute('#messages', 'role'), 'region');
  assert.equal(await page.getAttribute('#announcer', 'aria-live'), 'polite');
  assert.equal(await page.getAttribute('html', 'lang'), 'en');
  // Keyboard: Tab from the sign-out button reaches "New chat", and Enter opens its dialog.
  await page.focus('#sign-out');
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'new-chat');
  await page.keyboard.press('Enter');
  await page.locator('#dialog-new-chat').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => document.activeElement.id), 'new-chat-username');
  await page.keyboard.press('Escape');
  await page.locator('#dialog-new-chat').waitFor({ state: 'hidden' });
  assertClean(assert, user);
});
