/**
 * The realtime session: one WebSocket at a time at /v1/ws, kept alive and
 * replaced when it dies, with the guarantees the protocol leaves to clients.
 *
 * - Reconnect: a lost connection is retried with exponential backoff and full
 *   jitter; the browser's `offline` event drops the socket at once (Chromium
 *   keeps a socket "open" while the network is gone) and `online` retries at once.
 *   A socket that stays silent after a heartbeat is given up too.
 * - Outbox: every send is kept, in localStorage, under its `client_msg_id`
 *   until a `sent` confirms it, and is written again after each reconnect with
 *   the same id. The server stores a repeated id once, so nothing goes out twice.
 * - Order and gaps: the `Sequencer` hands messages on in seq order per
 *   conversation, drops what it already holds, and asks for a gap to be filled
 *   from the history endpoint when a push skips seqs.
 * - Acks: after a message has been handed to the application, the
 *   conversation's contiguous seq is acknowledged (cumulatively, batched).
 *   In a group above the welcome's `receipts_up_to`, which keeps no receipts,
 *   the ack may wait up to the welcome's `lazy_ack_ms` (`LazyAcks`).
 *
 * It mirrors the Rust SDK (`crates/banter-client`): `driver.rs`, `outbox.rs`,
 * `sequencer.rs`, `backoff.rs` and `lazy.rs`. The application listens for events:
 * `status`, `welcome`, `message`, `sent`, `sendfailed`, `receipt`, `typing`,
 * `presence`, `conversation` and `ended` (a close that must not be retried).
 */

/** The first reconnection delay's ceiling; it doubles per failure up to the maximum. */
const INITIAL_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
/** A connection that lasted this long resets the backoff. */
const STABLE_CONNECTION_MS = 10_000;
/** How long an opening connection may take to reach `welcome`. */
const CONNECT_TIMEOUT_MS = 10_000;
/** How long to wait for any frame after a heartbeat before giving the socket up (bounds). */
const MIN_REPLY_TIMEOUT_MS = 2_000;
const MAX_REPLY_TIMEOUT_MS = 10_000;
/** How long acknowledgements gather before one `ack` per conversation goes out. */
const ACK_DELAY_MS = 25;
/** How long a send refused for now (`rate_limited`, `unavailable`) waits before the outbox is written again. */
const RESEND_AFTER_REFUSAL_MS = 1_000;
/** Send errors that are worth retrying with the same `client_msg_id`. */
const TRANSIENT_SEND_ERRORS = new Set(['rate_limited', 'unavailable', 'internal']);
/** Page size of gap fills (the server's cap). */
const FILL_PAGE = 200;
/** Most users per `presence_subscribe` frame. */
const PRESENCE_CHUNK = 1_000;
/** Own messages a conversation without a baseline may hold before the lowest becomes the baseline. */
const OWN_BASELINE_AFTER = 256;
/** Close codes after which reconnecting is wrong: a refused token, and another connection of this device. */
const TERMINAL_CLOSES = new Map([
  [4001, 'unauthorized'],
  [4002, 'replaced'],
]);

/** Reconnection delays: exponential backoff with full jitter. */
export class Backoff {
  #attempt = 0;

  constructor(initialMs = INITIAL_BACKOFF_MS, maxMs = MAX_BACKOFF_MS) {
    this.initialMs = initialMs;
    this.maxMs = Math.max(maxMs, initialMs);
  }

  /** A delay drawn uniformly below `min(max, initial × 2^attempt)`; each call raises the ceiling. */
  next(random = Math.random) {
    const ceiling = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.#attempt, 30));
    this.#attempt += 1;
    return Math.round(random() * ceiling);
  }

  reset() {
    this.#attempt = 0;
  }
}

/**
 * Sends not confirmed yet, in the order they were written, persisted so that
 * a reload or a crash of the tab does not lose them.
 */
export class Outbox {
  /** @type {Array<{conversation_id: string, client_msg_id: string, content: object, created_at: number}>} */
  #entries = [];

  /** @param {string|null} storageKey Where the entries are kept; null keeps them in memory only. */
  constructor(storageKey) {
    this.storageKey = storageKey;
    this.#entries = this.#load();
  }

  /** Every entry, oldest first. */
  entries() {
    return [...this.#entries];
  }

  get size() {
    return this.#entries.length;
  }

  /** The entry with this `client_msg_id`, if queued. */
  get(clientMsgId) {
    return this.#entries.find((e) => e.client_msg_id === clientMsgId) ?? null;
  }

  add(entry) {
    this.#entries.push(entry);
    this.#save();
  }

  /** Removes and answers the entry of this conversation and `client_msg_id`, if queued. */
  remove(conversationId, clientMsgId) {
    const index = this.#entries.findIndex(
      (e) => e.client_msg_id === clientMsgId && e.conversation_id === conversationId,
    );
    if (index < 0) return null;
    const [entry] = this.#entries.splice(index, 1);
    this.#save();
    return entry;
  }

  clear() {
    this.#entries = [];
    this.#save();
  }

  #load() {
    if (!this.storageKey) return [];
    try {
      const stored = JSON.parse(localStorage.getItem(this.storageKey) ?? '[]');
      return Array.isArray(stored) ? stored.filter(isOutboxEntry) : [];
    } catch {
      return [];
    }
  }

  #save() {
    if (!this.storageKey) return;
    try {
      if (this.#entries.length) localStorage.setItem(this.storageKey, JSON.stringify(this.#entries));
      else localStorage.removeItem(this.storageKey);
    } catch {
      // Storage full or disabled: the outbox still works for this page's life.
    }
  }
}

function isOutboxEntry(e) {
  return (
    e && typeof e.conversation_id === 'string' && typeof e.client_msg_id === 'string' && typeof e.content === 'object'
  );
}

/**
 * Per-conversation ordering of the messages a session learns of: pushed by
 * the server, fetched to fill a gap, or its own (from `sent`).
 *
 * The first message pushed in a conversation sets its baseline: pushes of one
 * conversation arrive in ascending seq, so nothing older is owed to this
 * device (older messages come from the history endpoint when shown). Above the
 * contiguous seq, messages wait until the ones below them are there.
 * Own messages never start a fill: the server does not push a device its own
 * sends, and a `sent` may overtake the push of a message stored just before.
 */
export class Sequencer {
  /** @type {Map<string, {contiguous: number|null, baseline: number|null, pending: Map<number, {message: object, emit: boolean}>, filling: boolean}>} */
  #conversations = new Map();

  /** The conversations seen so far. */
  conversationIds() {
    return [...this.#conversations.keys()];
  }

  /** The highest seq up to which every message is held, or null before a baseline. */
  contiguous(conversationId) {
    return this.#conversations.get(conversationId)?.contiguous ?? null;
  }

  /** The seq below the first message pushed on this page, or null before one. */
  baseline(conversationId) {
    return this.#conversations.get(conversationId)?.baseline ?? null;
  }

  /** Whether `seq` may be acknowledged: the baseline itself is not held. */
  ackable(conversationId, seq) {
    const baseline = this.#conversations.get(conversationId)?.baseline ?? 0;
    return seq > baseline;
  }

  /**
   * Takes in one message; `origin` is `pushed`, `fetched` or `own`.
   * Answers `{deliver, advanced, duplicate, fill}`: the messages now due to the
   * application in seq order, whether the contiguous seq moved, whether this
   * was a repeat (the server retries what it believes unacknowledged), and a
   * range `{after, until}` to fetch.
   */
  accept(message, origin) {
    const state = this.#state(message.conversation_id);
    const out = { deliver: [], advanced: false, duplicate: false, fill: null };
    if (state.contiguous !== null && message.seq <= state.contiguous) {
      out.duplicate = origin !== 'own';
      return out;
    }
    if (state.pending.has(message.seq)) return out;
    state.pending.set(message.seq, { message, emit: origin !== 'own' });
    if (state.contiguous === null) {
      if (origin === 'own' && state.pending.size <= OWN_BASELINE_AFTER) return out;
      state.contiguous = state.baseline = lowestKey(state.pending) - 1;
    }
    drain(state, out);
    if (origin === 'pushed' && !state.filling) out.fill = gap(state);
    return out;
  }

  /**
   * Closes a fill that fetched everything up to `until`, or all there was when
   * `exhausted`. A hole the history could not fill is skipped (the server has
   * no message for it); a hole opened above `until` meanwhile asks for another fill.
   */
  fillDone(conversationId, until, exhausted) {
    const out = { deliver: [], advanced: false, duplicate: false, fill: null };
    const state = this.#conversations.get(conversationId);
    if (!state) return out;
    state.filling = false;
    if (state.contiguous === null || state.pending.size === 0) return out;
    const lowest = lowestKey(state.pending);
    if (lowest > state.contiguous + 1 && (exhausted || lowest - 1 <= until)) {
      state.contiguous = lowest - 1;
      out.advanced = true;
      drain(state, out);
    }
    out.fill = gap(state);
    return out;
  }

  #state(conversationId) {
    let state = this.#conversations.get(conversationId);
    if (!state) {
      state = { contiguous: null, baseline: null, pending: new Map(), filling: false };
      this.#conversations.set(conversationId, state);
    }
    return state;
  }
}

function lowestKey(map) {
  let lowest = Infinity;
  for (const key of map.keys()) lowest = Math.min(lowest, key);
  return lowest;
}

/** Hands out the pending messages that continue the contiguous run. */
function drain(state, out) {
  let next = state.contiguous + 1;
  while (state.pending.has(next)) {
    const { message, emit } = state.pending.get(next);
    state.pending.delete(next);
    if (emit) out.deliver.push(message);
    next += 1;
  }
  if (next - 1 > state.contiguous) {
    state.contiguous = next - 1;
    out.advanced = true;
  }
}

/** The fill that the hole below the lowest pending message calls for, if any. */
function gap(state) {
  if (state.contiguous === null || state.pending.size === 0) return null;
  const lowest = lowestKey(state.pending);
  if (lowest <= state.contiguous + 1) return null;
  state.filling = true;
  return { after: state.contiguous, until: lowest - 1 };
}

/** A fresh `client_msg_id`: 128 random bits in hex (crypto.randomUUID needs a secure context). */
/**
 * Which conversations' acks may wait, and how long: those with more members
 * than the welcome's `receipts_up_to` keep no receipts, so an ack there may
 * wait the welcome's `lazy_ack_ms`, unless a quarter of the window is
 * unacknowledged (docs/protocol.md, "Acknowledging a large group"). A
 * conversation whose member count is not known yet is acked promptly.
 */
export class LazyAcks {
  #upTo = null;
  #waitMs = 0;
  #window = 0;
  /** @type {Map<string, number>} */
  #members = new Map();

  /** Takes `receipts_up_to`, `lazy_ack_ms` and `window` from a welcome (a server without them gets prompt acks). */
  configure({ receipts_up_to: upTo, lazy_ack_ms: waitMs, window }) {
    this.#upTo = Number.isInteger(upTo) ? upTo : null;
    this.#waitMs = Number.isInteger(waitMs) && waitMs > 0 ? waitMs : 0;
    this.#window = Number.isInteger(window) ? window : 0;
  }

  /** Records a conversation's member count (from the conversation list or a `conversation` frame). */
  members(conversationId, count) {
    if (Number.isInteger(count)) this.#members.set(conversationId, count);
  }

  /** Whether acks of `conversationId` may wait: its member count is known and above `receipts_up_to`. */
  holds(conversationId) {
    const count = this.#members.get(conversationId);
    return this.#upTo !== null && this.#waitMs > 0 && count !== undefined && count > this.#upTo;
  }

  /**
   * How long, in ms, an ack of `conversationId` may wait. `unacked` maps
   * conversations to their messages not yet acknowledged; those whose acks
   * may wait count together, since the window is the device's, across all
   * its conversations.
   */
  delay(conversationId, unacked) {
    if (!this.holds(conversationId)) return ACK_DELAY_MS;
    let held = 0;
    for (const [id, count] of unacked) if (this.holds(id)) held += count;
    return held * 4 >= this.#window ? ACK_DELAY_MS : this.#waitMs;
  }
}

export function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One signed-in device's realtime session.
 *
 * `status` is one of `connecting`, `connected`, `waiting` (for the next
 * attempt, at `retryAt`) and `ended` (closed for good, see `endReason`).
 */
export class Session extends EventTarget {
  #api;
  #url;
  #token;
  #outbox;
  #sequencer = new Sequencer();
  #backoff = new Backoff();
  /** @type {WebSocket|null} */
  #ws = null;
  #welcomed = false;
  #connectedAt = 0;
  #stopped = false;
  #heartbeatMs = 20_000;
  #timers = { connect: null, retry: null, heartbeat: null, reply: null, ack: null, resend: null };
  /** Users whose presence is followed; subscribed again on every connection. */
  #followed = new Set();
  /** Read positions given while disconnected, highest per conversation. */
  #reads = new Map();
  /** Conversations to acknowledge, whether to repeat an unchanged seq, and when the ack is due (ms since the epoch). */
  #acksDue = new Map();
  /** The seq last acknowledged per conversation on this connection. */
  #acked = new Map();
  /** When the pending ack flush is due (ms since the epoch), if one is. */
  #ackAt = null;
  #lazy = new LazyAcks();
  #onOnline = () => this.status === 'waiting' && this.reconnectNow();
  #onOffline = () => this.#lost('the browser went offline');
  #onVisible = () => {
    if (document.visibilityState !== 'visible') return;
    if (this.#welcomed) this.#heartbeat();
    else if (this.status === 'waiting') this.reconnectNow();
  };

  status = 'connecting';
  retryAt = 0;
  endReason = '';
  userId = '';

  /**
   * @param {object} options
   * @param {import('./api.js').Api} options.api For gap fills.
   * @param {string} options.token The token said in each `hello`.
   * @param {Outbox} options.outbox Where unconfirmed sends are kept.
   * @param {string} [options.url] The WebSocket URL; by default /v1/ws of this page's origin.
   */
  constructor({ api, token, outbox, url }) {
    super();
    this.#api = api;
    this.#token = token;
    this.#outbox = outbox;
    this.#url = url ?? `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/v1/ws`;
  }

  /** Opens the first connection and starts watching the network. */
  start() {
    addEventListener('online', this.#onOnline);
    addEventListener('offline', this.#onOffline);
    document.addEventListener('visibilitychange', this.#onVisible);
    this.#connect();
  }

  /** Closes the session for good (sign out). */
  stop() {
    this.#stopped = true;
    removeEventListener('online', this.#onOnline);
    removeEventListener('offline', this.#onOffline);
    document.removeEventListener('visibilitychange', this.#onVisible);
    this.#dropSocket();
    for (const name of Object.keys(this.#timers)) this.#clear(name);
  }

  /** Connects now instead of waiting out the backoff; after `ended`, takes the device back. */
  reconnectNow() {
    if (this.#stopped || this.status === 'connecting' || this.status === 'connected') return;
    this.#backoff.reset();
    this.#connect();
  }

  /** Sends not confirmed yet, oldest first. */
  pending() {
    return this.#outbox.entries();
  }

  /**
   * Queues a message; it goes out now if connected, or after the next `welcome`.
   * Answers the outbox entry, whose `client_msg_id` names the message until it is stored.
   */
  send(conversationId, content) {
    const entry = {
      conversation_id: conversationId,
      client_msg_id: newClientMsgId(),
      content,
      created_at: Date.now(),
    };
    this.#outbox.add(entry);
    if (this.#welcomed) this.#write(sendFrame(entry));
    return entry;
  }

  /** Says that the user has read a conversation up to `seq`; kept for later while disconnected. */
  read(conversationId, seq) {
    if (this.#welcomed) {
      this.#write({ type: 'read', conversation_id: conversationId, seq });
    } else {
      this.#reads.set(conversationId, Math.max(seq, this.#reads.get(conversationId) ?? 0));
    }
  }

  /** Says that the user is typing; dropped while disconnected, since it would be stale. */
  typing(conversationId) {
    if (this.#welcomed) this.#write({ type: 'typing', conversation_id: conversationId });
  }

  /** Tells the session a conversation's member count, which decides whether its acks may wait (`LazyAcks`). */
  memberCount(conversationId, count) {
    this.#lazy.members(conversationId, count);
  }

  /** Follows the presence of these users, now and on every later connection. */
  follow(userIds) {
    const fresh = userIds.filter((id) => !this.#followed.has(id));
    for (const id of fresh) this.#followed.add(id);
    if (this.#welcomed && fresh.length) this.#subscribe(fresh);
  }

  // Connection life cycle.

  #connect() {
    this.#clear('retry');
    this.#dropSocket();
    this.#setStatus('connecting');
    const ws = new WebSocket(this.#url);
    this.#ws = ws;
    this.#welcomed = false;
    this.#timers.connect = setTimeout(() => this.#lost('the server did not answer in time'), CONNECT_TIMEOUT_MS);
    ws.onopen = () => ws === this.#ws && ws.send(JSON.stringify({ type: 'hello', token: this.#token }));
    ws.onmessage = (event) => ws === this.#ws && this.#onFrame(event.data);
    ws.onclose = (event) => ws === this.#ws && this.#onClose(event.code, event.reason);
  }

  #onClose(code, reason) {
    const terminal = TERMINAL_CLOSES.get(code);
    if (!terminal) {
      this.#lost(reason || describeClose(code));
      return;
    }
    this.#ws = null;
    this.#welcomed = false;
    this.#stopTimers();
    this.endReason = terminal;
    this.#setStatus('ended');
    this.dispatchEvent(new CustomEvent('ended', { detail: { code, reason: terminal } }));
  }

  /** Gives the current socket up and schedules the next attempt. */
  #lost(reason) {
    if (this.#stopped || this.status === 'ended') return;
    if (this.#welcomed && Date.now() - this.#connectedAt >= STABLE_CONNECTION_MS) this.#backoff.reset();
    this.#dropSocket();
    this.#stopTimers();
    this.#clear('retry');
    const delay = this.#backoff.next();
    this.retryAt = Date.now() + delay;
    this.#timers.retry = setTimeout(() => this.#connect(), delay);
    this.#setStatus('waiting', reason);
  }

  /** Forgets the current socket, closing it if it is still there; its handlers then do nothing. */
  #dropSocket() {
    const ws = this.#ws;
    this.#ws = null;
    this.#welcomed = false;
    if (ws && ws.readyState <= WebSocket.OPEN) {
      try {
        ws.close(1000);
      } catch {
        // Already closing.
      }
    }
  }

  #stopTimers() {
    for (const name of ['connect', 'heartbeat', 'reply', 'ack', 'resend']) this.#clear(name);
  }

  #clear(name) {
    clearTimeout(this.#timers[name]);
    clearInterval(this.#timers[name]);
    this.#timers[name] = null;
    if (name === 'ack') this.#ackAt = null;
  }

  #setStatus(status, reason = '') {
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: { status, reason, retryAt: this.retryAt } }));
  }

  // Frames.

  #write(frame) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(frame));
  }

  #onFrame(text) {
    this.#clear('reply');
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!this.#welcomed) {
      if (frame.type === 'welcome') this.#onWelcome(frame);
      return;
    }
    switch (frame.type) {
      case 'message': {
        const { type: _, ...message } = frame;
        this.#takeIn(message, 'pushed');
        break;
      }
      case 'sent':
        this.#onSent(frame);
        break;
      case 'error':
        this.#onError(frame);
        break;
      case 'receipt':
      case 'typing':
      case 'presence':
      case 'conversation':
        this.dispatchEvent(new CustomEvent(frame.type, { detail: frame }));
        break;
      default:
        // heartbeat_ack, and frames of newer servers: hearing them is enough.
        break;
    }
  }

  #onWelcome(welcome) {
    this.#clear('connect');
    this.#welcomed = true;
    this.#connectedAt = Date.now();
    this.userId = welcome.user_id;
    this.#heartbeatMs = welcome.heartbeat_interval_ms || this.#heartbeatMs;
    this.#lazy.configure(welcome);
    this.#timers.heartbeat = setInterval(() => this.#heartbeat(), this.#heartbeatMs);
    this.#setStatus('connected');
    this.dispatchEvent(new CustomEvent('welcome', { detail: welcome }));
    this.#resume();
  }

  /** Restores the session on a new connection: presence, reads given offline, acks, then the outbox. */
  #resume() {
    if (this.#followed.size) this.#subscribe([...this.#followed]);
    for (const [conversationId, seq] of this.#reads) {
      this.#write({ type: 'read', conversation_id: conversationId, seq });
    }
    this.#reads.clear();
    this.#acked.clear();
    for (const conversationId of this.#sequencer.conversationIds()) {
      this.#acksDue.set(conversationId, { force: false, due: 0 });
    }
    this.#flushAcks();
    this.#writeOutbox();
  }

  #subscribe(userIds) {
    for (let i = 0; i < userIds.length; i += PRESENCE_CHUNK) {
      this.#write({ type: 'presence_subscribe', user_ids: userIds.slice(i, i + PRESENCE_CHUNK) });
    }
  }

  /** Writes every unconfirmed send, oldest first, each with its own `client_msg_id`. */
  #writeOutbox() {
    for (const entry of this.#outbox.entries()) this.#write(sendFrame(entry));
  }

  /** Sends a heartbeat and expects some frame back in time; otherwise the socket is dead. */
  #heartbeat() {
    if (!this.#welcomed) return;
    this.#write({ type: 'heartbeat' });
    if (this.#timers.reply === null) {
      const timeout = Math.min(MAX_REPLY_TIMEOUT_MS, Math.max(MIN_REPLY_TIMEOUT_MS, this.#heartbeatMs));
      this.#timers.reply = setTimeout(() => this.#lost('no answer from the server'), timeout);
    }
  }

  #onSent(frame) {
    const entry = this.#outbox.remove(frame.conversation_id, frame.client_msg_id);
    // Without an entry, this answers a replay of a send that was already confirmed.
    if (!entry) return;
    const message = {
      conversation_id: frame.conversation_id,
      message_id: frame.message_id,
      seq: frame.seq,
      sender_id: this.userId,
      client_msg_id: frame.client_msg_id,
      ts: frame.ts,
      content: entry.content,
    };
    this.#apply(message.conversation_id, this.#sequencer.accept(message, 'own'));
    this.dispatchEvent(new CustomEvent('sent', { detail: message }));
  }

  #onError(frame) {
    const entry = frame.ref ? this.#outbox.get(frame.ref) : null;
    if (!entry) {
      console.warn('banter: server error', frame.code, frame.message, frame.ref ?? '');
      return;
    }
    if (TRANSIENT_SEND_ERRORS.has(frame.code)) {
      // Refused for now, not for good: keep it and write the outbox again shortly.
      this.#timers.resend ??= setTimeout(() => {
        this.#timers.resend = null;
        this.#writeOutbox();
      }, RESEND_AFTER_REFUSAL_MS);
      return;
    }
    this.#outbox.remove(entry.conversation_id, entry.client_msg_id);
    this.dispatchEvent(
      new CustomEvent('sendfailed', { detail: { ...entry, code: frame.code, message: frame.message } }),
    );
  }

  // Ordering, gap fills and acknowledgements.

  #takeIn(message, origin) {
    this.#apply(message.conversation_id, this.#sequencer.accept(message, origin));
  }

  /** Hands released messages to the application, then schedules their ack and any gap fill. */
  #apply(conversationId, { deliver, advanced, duplicate, fill }) {
    for (const message of deliver) this.dispatchEvent(new CustomEvent('message', { detail: message }));
    if (advanced || duplicate) this.#scheduleAck(conversationId, duplicate);
    if (fill) this.#fill(conversationId, fill.after, fill.until);
  }

  /** Fetches the messages above `after` page by page until `until` is covered or the history ends. */
  async #fill(conversationId, after, until) {
    const backoff = new Backoff(250, 30_000);
    let exhausted = false;
    for (;;) {
      let page;
      try {
        page = await this.#api.history(conversationId, { after, limit: FILL_PAGE });
      } catch (error) {
        if (this.#stopped) return;
        if (error.transient) {
          await sleep(backoff.next());
          continue;
        }
        exhausted = true;
        break;
      }
      if (this.#stopped) return;
      for (const message of page.messages) this.#takeIn(message, 'fetched');
      const last = page.messages.at(-1)?.seq;
      if (last !== undefined && last >= until) break;
      if (last === undefined || !page.has_more || last <= after) {
        exhausted = true;
        break;
      }
      after = last;
    }
    this.#apply(conversationId, this.#sequencer.fillDone(conversationId, until, exhausted));
  }

  #scheduleAck(conversationId, force) {
    // Every conversation with an ack not yet sent, and this one, with what
    // it holds unacknowledged: above the last ack, or, before one, above the
    // baseline (nothing below it was pushed here).
    const unacked = new Map();
    for (const id of [conversationId, ...this.#acksDue.keys()]) {
      const from = this.#acked.get(id) ?? this.#sequencer.baseline(id) ?? 0;
      unacked.set(id, Math.max(0, (this.#sequencer.contiguous(id) ?? 0) - from));
    }
    const now = Date.now();
    const wait = force ? ACK_DELAY_MS : this.#lazy.delay(conversationId, unacked);
    const was = this.#acksDue.get(conversationId);
    const due = Math.min(now + wait, was?.due ?? Infinity);
    this.#acksDue.set(conversationId, { force: force || (was?.force ?? false), due });
    // A quarter of the window held: every held ack goes with this one, since
    // they share the window.
    if (!force && wait === ACK_DELAY_MS && this.#lazy.holds(conversationId)) {
      for (const entry of this.#acksDue.values()) entry.due = Math.min(entry.due, due);
    }
    this.#armAcks();
  }

  /** Sets the flush timer for the earliest ack due, unless it is set for that or sooner. */
  #armAcks() {
    let next = Infinity;
    for (const { due } of this.#acksDue.values()) next = Math.min(next, due);
    if (next === Infinity || (this.#ackAt !== null && this.#ackAt <= next)) return;
    this.#clear('ack');
    this.#ackAt = next;
    this.#timers.ack = setTimeout(() => this.#flushAcks(), Math.max(0, next - Date.now()));
  }

  /** Sends one cumulative `ack` for each conversation whose ack is due, then waits for the next. */
  #flushAcks() {
    this.#clear('ack');
    if (!this.#welcomed) return; // The next welcome acknowledges every conversation again.
    const now = Date.now();
    for (const [conversationId, { force, due }] of this.#acksDue) {
      if (due > now) continue;
      this.#acksDue.delete(conversationId);
      const seq = this.#sequencer.contiguous(conversationId);
      if (seq === null || !this.#sequencer.ackable(conversationId, seq)) continue;
      if (!force && (this.#acked.get(conversationId) ?? -1) >= seq) continue;
      this.#acked.set(conversationId, seq);
      this.#write({ type: 'ack', conversation_id: conversationId, seq });
    }
    this.#armAcks();
  }
}

function sendFrame(entry) {
  return {
    type: 'send',
    client_msg_id: entry.client_msg_id,
    conversation_id: entry.conversation_id,
    content: entry.content,
  };
}

/** A few words on why a connection closed, for the banner. */
function describeClose(code) {
  switch (code) {
    case 1001:
      return 'the server is restarting';
    case 4003:
      return 'the connection was idle for too long';
    case 4004:
      return 'the connection stalled';
    default:
      return 'the connection was lost';
  }
}
