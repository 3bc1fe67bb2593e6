// Unit tests of the client's pure parts (connection.js: Sequencer, Outbox,
// Backoff, LazyAcks), run in the browser on the module the server serves, like the
// Rust SDK's tests of sequencer.rs, outbox.rs, backoff.rs and lazy.rs.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openUser, serverAndBrowser } from './helpers.js';

const env = serverAndBrowser();
/** One page for every test of this file, opened by the first. */
let page;

/**
 * Runs `body` in the page with the exports of connection.js and `m(seq)`,
 * which makes a message of conversation "a".
 */
async function inPage(body) {
  page ??= (await openUser(env.browser, env.server)).page;
  return page.evaluate(`(async () => {
    const { Backoff, LazyAcks, Outbox, Sequencer } = await import('/js/connection.js');
    const m = (seq) => ({ conversation_id: 'a', message_id: 'id' + seq, seq, sender_id: '1', content: {} });
    const seqs = (out) => out.deliver.map((message) => message.seq);
    ${body}
  })()`);
}

test('the first push sets the baseline, without asking for older messages', async () => {
  const result = await inPage(`
    const s = new Sequencer();
    const before = s.baseline('a');
    const first = s.accept(m(40), 'pushed');
    const next = s.accept(m(41), 'pushed');
    return { first: seqs(first), fill: first.fill, next: seqs(next), contiguous: s.contiguous('a'),
             ackable: [s.ackable('a', 39), s.ackable('a', 40)], baseline: [before, s.baseline('a')] };
  `);
  assert.deepEqual(result, {
    first: [40], fill: null, next: [41], contiguous: 41, ackable: [false, true], baseline: [null, 39],
  });
});

test('a repeated message is dropped and asks for the ack again', async () => {
  const result = await inPage(`
    const s = new Sequencer();
    s.accept(m(1), 'pushed');
    const again = s.accept(m(1), 'pushed');
    return { deliver: seqs(again), duplicate: again.duplicate, advanced: again.advanced };
  `);
  assert.deepEqual(result, { deliver: [], duplicate: true, advanced: false });
});

test('a gap asks for a fill, and the fill delivers in order', async () => {
  const result = await inPage(`
    const s = new Sequencer();
    s.accept(m(1), 'pushed');
    const gap = s.accept(m(4), 'pushed');
    const during = s.accept(m(5), 'pushed');
    const two = s.accept(m(2), 'fetched');
    const three = s.accept(m(3), 'fetched');
    const done = s.fillDone('a', 3, false);
    return { gap: [seqs(gap), gap.fill], during: [seqs(during), during.fill], two: seqs(two), three: seqs(three),
             done: done.fill, contiguous: s.contiguous('a') };
  `);
  assert.deepEqual(result, {
    gap: [[], { after: 1, until: 3 }],
    during: [[], null],
    two: [2],
    three: [3, 4, 5],
    done: null,
    contiguous: 5,
  });
});

test('a hole the history cannot fill is skipped', async () => {
  const result = await inPage(`
    const s = new Sequencer();
    s.accept(m(1), 'pushed');
    s.accept(m(4), 'pushed');
    const done = s.fillDone('a', 3, true);
    return { deliver: seqs(done), contiguous: s.contiguous('a') };
  `);
  assert.deepEqual(result, { deliver: [4], contiguous: 4 });
});

test('own messages fill the run silently and never start a fill', async () => {
  const result = await inPage(`
    const s = new Sequencer();
    s.accept(m(1), 'pushed');
    const own = s.accept(m(3), 'own');
    const two = s.accept(m(2), 'pushed');
    const back = s.accept(m(3), 'pushed');
    return { own: [seqs(own), own.fill], two: seqs(two), contiguous: s.contiguous('a'), back: seqs(back) };
  `);
  assert.deepEqual(result, { own: [[], null], two: [2], contiguous: 3, back: [] });
});

test('own messages before any push leave the baseline to the backlog', async () => {
  const result = await inPage(`
    const s = new Sequencer();
    s.accept(m(7), 'own');
    const before = s.contiguous('a');
    const five = s.accept(m(5), 'pushed');
    const six = s.accept(m(6), 'pushed');
    return { before, five: seqs(five), six: seqs(six), contiguous: s.contiguous('a') };
  `);
  assert.deepEqual(result, { before: null, five: [5], six: [6], contiguous: 7 });
});

test('the outbox keeps its entries in order across a reload of the page', async () => {
  const result = await inPage(`
    localStorage.removeItem('test.outbox');
    const entry = (id) => ({ conversation_id: 'c', client_msg_id: id, content: { type: 'text', text: id }, created_at: 0 });
    const outbox = new Outbox('test.outbox');
    outbox.add(entry('x'));
    outbox.add(entry('y'));
    outbox.add(entry('z'));
    const wrongConversation = outbox.remove('other', 'y');
    const removed = outbox.remove('c', 'y');
    const reloaded = new Outbox('test.outbox').entries().map((e) => e.client_msg_id);
    outbox.clear();
    return { wrongConversation, removed: removed.client_msg_id, reloaded,
             cleared: localStorage.getItem('test.outbox'), corrupt: (localStorage.setItem('bad', '{'), new Outbox('bad').size) };
  `);
  assert.deepEqual(result, { wrongConversation: null, removed: 'y', reloaded: ['x', 'z'], cleared: null, corrupt: 0 });
});

test('backoff ceilings double up to the maximum, with full jitter below them', async () => {
  const result = await inPage(`
    const top = new Backoff(100, 1000);
    const ceilings = Array.from({ length: 6 }, () => top.next(() => 1));
    const bottom = new Backoff(100, 1000);
    const low = Array.from({ length: 3 }, () => bottom.next(() => 0));
    top.reset();
    return { ceilings, low, afterReset: top.next(() => 1) };
  `);
  assert.deepEqual(result, { ceilings: [100, 200, 400, 800, 1000, 1000], low: [0, 0, 0], afterReset: 100 });
});

test('acks of a group above receipts_up_to wait lazy_ack_ms, until a quarter of the window is unacknowledged across such groups', async () => {
  const result = await inPage(`
    const lazy = new LazyAcks();
    const before = lazy.delay('big', new Map([['big', 1]]));
    lazy.configure({ receipts_up_to: 500, lazy_ack_ms: 500, window: 256 });
    lazy.members('big', 501);
    lazy.members('small', 500);
    lazy.members('big2', 10000);
    const older = new LazyAcks();
    older.configure({ window: 256 });
    older.members('big', 501);
    return {
      before,
      unknown: lazy.delay('other', new Map([['other', 1]])),
      small: lazy.delay('small', new Map([['small', 1]])),
      big: lazy.delay('big', new Map([['big', 1]])),
      bigBusy: lazy.delay('big', new Map([['big', 63]])),
      bigQuarter: lazy.delay('big', new Map([['big', 64]])),
      // The window is the device's: two large groups' held acks count together, a small group's do not.
      twoLarge: lazy.delay('big', new Map([['big', 40], ['big2', 24]])),
      twoLargeUnder: lazy.delay('big', new Map([['big', 40], ['big2', 23], ['small', 100]])),
      olderServer: older.delay('big', new Map([['big', 1]])),
    };
  `);
  assert.deepEqual(result, {
    before: 25, unknown: 25, small: 25, big: 500, bigBusy: 500, bigQuarter: 25,
    twoLarge: 25, twoLargeUnder: 500, olderServer: 25,
  });
});
