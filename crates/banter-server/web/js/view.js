/**
 * DOM rendering: the conversation list, the thread header, the messages, the
 * typing line and the connection banner, drawn from a `ChatState`.
 *
 * Every element is built with createElement and textContent; user data never
 * passes through innerHTML. Lists are reconciled by key, so an element on
 * screen (and the keyboard focus on it) survives a redraw, and an element is
 * only rebuilt when what it shows changed.
 */

import { messageText } from './chat.js';
import { dayKey, formatDay, formatFull, formatLastSeen, formatListTime, formatTime, isoTime } from './format.js';

/** Messages of one sender closer together than this form one run. */
const RUN_GAP_MS = 5 * 60 * 1000;
/** How close to the top of the messages older history starts loading. */
const NEAR_TOP_PX = 300;
/** How close to the bottom counts as being at the bottom. */
const NEAR_BOTTOM_PX = 48;
/** How many avatar colours app.css defines. */
const AVATAR_COLOURS = 8;
const URL_PATTERN = /\bhttps?:\/\/[^\s<>"]+/g;

/** What each delivery state of an own message is called, for people and for screen readers. */
const STATE_LABELS = {
  pending: 'Sending',
  sent: 'Sent',
  delivered: 'Delivered',
  read: 'Read',
  failed: 'Not sent',
};

/** The last rendered signature of an element, to skip redraws that change nothing. */
const signatures = new WeakMap();

/**
 * Creates an element. `props` sets `className`, `text` (textContent),
 * `dataset` entries, and any other key as an attribute (skipped when null or false).
 */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'className') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Stroke paths of the small icons drawn from script. */
const ICON_PATHS = {
  pending: ['M12 7v5l3 2', 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z'],
  sent: ['M5 12.5l4.5 4.5L19 7.5'],
  delivered: ['M1.5 12.5L6 17l9.5-10', 'M11.5 16l1 1L22 7'],
  failed: ['M12 8v5', 'M12 16.5v.5', 'M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z'],
};
ICON_PATHS.read = ICON_PATHS.delivered;

function icon(name) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  for (const d of ICON_PATHS[name]) {
    const path = document.createElementNS(SVG_NS, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}

/** Fills an avatar: the first letter of the name, on a colour picked from the seed. */
export function paintAvatar(node, name, seed) {
  node.textContent = (name ?? '?').charAt(0).toLocaleUpperCase() || '?';
  node.className = `avatar avatar-c${hash(seed ?? name ?? '') % AVATAR_COLOURS}`;
}

function hash(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return h;
}

/**
 * Reconciles the children of `parent` with `items`: existing children are
 * matched by `data-key`, kept, updated, and moved into order; missing ones are
 * created; the rest are removed.
 */
function reconcile(parent, items, { key, create, update }) {
  const existing = new Map();
  for (const child of parent.children) existing.set(child.dataset.key, child);
  let cursor = parent.firstElementChild;
  for (const item of items) {
    const k = key(item);
    let node = existing.get(k);
    if (node) existing.delete(k);
    else {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    if (node === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(node, cursor);
  }
  for (const node of existing.values()) node.remove();
}

/** Runs `draw` unless `signature` is what the node was last drawn from. */
function redrawIfChanged(node, signature, draw) {
  if (signatures.get(node) === signature) return;
  signatures.set(node, signature);
  draw();
}

// The conversation list.

/** The preview line of a conversation: "You: hi", "bob: hi" in groups, or the text alone. */
function previewOf(state, conversation) {
  const typing = state.typingUsers(conversation.conversation_id);
  if (typing.length) return { text: typingText(state, typing), typing: true };
  const last = state.lastMessage(conversation);
  if (!last) return { text: conversation.last_seq > 0 ? '' : 'No messages yet', typing: false };
  const body = messageText(last.content) ?? '[unsupported content]';
  const oneLine = body.replace(/\s+/g, ' ').trim();
  if (last.sender_id === state.me.user_id) return { text: `You: ${oneLine}`, typing: false };
  if (conversation.kind === 'group') {
    return { text: `${state.userName(last.sender_id) ?? '…'}: ${oneLine}`, typing: false };
  }
  return { text: oneLine, typing: false };
}

/** Draws the conversation list; `selectedId` is the open conversation. */
export function renderConversationList(list, empty, state, selectedId) {
  const conversations = state.sortedConversations();
  empty.hidden = conversations.length > 0;
  list.hidden = conversations.length === 0;
  const now = Date.now();
  reconcile(list, conversations, {
    key: (c) => c.conversation_id,
    create: () => el('li', { className: 'conv' }),
    update: (node, conversation) => {
      const id = conversation.conversation_id;
      const name = state.displayName(conversation);
      const peer = state.peerId(conversation);
      const presence = peer ? (state.presence.get(peer)?.status ?? null) : null;
      const unread = id === selectedId ? 0 : state.unread(conversation);
      const preview = previewOf(state, conversation);
      // A conversation without messages shows no time: its creation is not news.
      const time = state.lastMessage(conversation) ? conversation.last_activity : null;
      const signature = JSON.stringify([name, presence, unread, preview, time && formatListTime(time, now), id === selectedId]);
      redrawIfChanged(node, signature, () => {
        node.dataset.conversationId = id;
        node.dataset.kind = conversation.kind;
        const selected = id === selectedId;
        node.replaceChildren(conversationLink({ id, name, presence, unread, preview, time, now, selected, seed: peer ?? id }));
      });
    },
  });
}

function conversationLink({ id, name, presence, unread, preview, time, now, selected, seed }) {
  const avatar = el('span', { 'aria-hidden': 'true' });
  paintAvatar(avatar, name, seed);
  if (presence) avatar.append(el('span', { className: 'presence-dot', dataset: { presence } }));
  const label = [
    name,
    presence,
    unread ? `${unread} unread` : null,
    preview.text,
    time ? formatListTime(time, now) : null,
  ].filter(Boolean);
  return el(
    'a',
    {
      className: 'conv-link',
      href: `#/c/${encodeURIComponent(id)}`,
      'aria-current': selected ? 'page' : null,
      'aria-label': label.join(', '),
    },
    avatar,
    el(
      'span',
      { className: 'conv-body' },
      el(
        'span',
        { className: 'conv-top' },
        el('span', { className: 'conv-name', text: name }),
        time ? el('time', { className: 'conv-time', datetime: isoTime(time), text: formatListTime(time, now) }) : null,
      ),
      el(
        'span',
        { className: 'conv-bottom' },
        el('span', { className: preview.typing ? 'conv-preview is-typing' : 'conv-preview', text: preview.text }),
        unread ? el('span', { className: 'badge', text: unread > 99 ? '99+' : String(unread) }) : null,
      ),
    ),
  );
}

// The thread header and typing line.

/** "bob is typing…", "bob and carol are typing…", "3 people are typing…". */
function typingText(state, userIds) {
  const names = userIds.map((id) => state.userName(id) ?? 'Someone');
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

/** Draws the header of the open conversation. */
export function renderThreadHeader(elements, state, conversation) {
  const { title, subtitle, avatar, addMembers, leave, region } = elements;
  const name = state.displayName(conversation);
  const peer = state.peerId(conversation);
  title.textContent = name;
  paintAvatar(avatar, name, peer ?? conversation.conversation_id);
  region.setAttribute('aria-label', conversation.kind === 'direct' ? `Messages with ${name}` : `Messages in ${name}`);
  const isGroup = conversation.kind === 'group';
  addMembers.hidden = !isGroup;
  leave.hidden = !isGroup;
  if (peer) {
    // Unknown while disconnected: presence comes with the connection.
    const presence = state.presence.get(peer);
    if (presence) avatar.append(el('span', { className: 'presence-dot', dataset: { presence: presence.status } }));
    subtitle.textContent = presenceLine(presence);
    subtitle.dataset.presence = presence?.status ?? 'unknown';
  } else {
    const members = conversation.members ?? [];
    const others = members.filter((id) => id !== state.me.user_id).map((id) => state.userName(id) ?? '…');
    const names = members.includes(state.me.user_id) ? ['you', ...others] : others;
    const count = `${conversation.member_count} member${conversation.member_count === 1 ? '' : 's'}`;
    subtitle.textContent = names.length ? `${count}: ${names.join(', ')}` : count;
    delete subtitle.dataset.presence;
  }
}

/** "online", "last seen …", "offline" (not seen since the server started), or nothing when unknown. */
function presenceLine(presence) {
  if (!presence) return '';
  if (presence.status === 'online') return 'online';
  return presence.last_seen ? formatLastSeen(presence.last_seen) : 'offline';
}

/** Draws the typing line under the messages. */
export function renderTyping(node, state, conversationId) {
  const typing = state.typingUsers(conversationId);
  node.textContent = typing.length ? typingText(state, typing) : '';
}

// The connection banner.

/**
 * Draws the banner from the session's status; answers whether it shows a
 * countdown, which the caller then redraws every second.
 */
export function renderBanner({ banner, text, action }, session, { everConnected }) {
  let message = '';
  let button = '';
  let countdown = false;
  if (session.status === 'connecting') {
    message = everConnected ? 'Reconnecting…' : 'Connecting…';
  } else if (session.status === 'waiting' && !navigator.onLine) {
    const pending = session.pending().length;
    message = pending
      ? `You are offline. ${pending} message${pending === 1 ? '' : 's'} will be sent when you are back online.`
      : 'You are offline. Messages you write will be sent when you are back online.';
  } else if (session.status === 'waiting') {
    const seconds = Math.max(1, Math.ceil((session.retryAt - Date.now()) / 1000));
    const pending = session.pending().length;
    const waiting = pending ? ` ${pending} message${pending === 1 ? '' : 's'} waiting to be sent.` : '';
    message = `Connection lost. Reconnecting in ${seconds} s…${waiting}`;
    button = 'Reconnect now';
    countdown = true;
  } else if (session.status === 'ended' && session.endReason === 'replaced') {
    message = 'Banter is open in another tab or window with this session.';
    button = 'Use here';
  }
  banner.hidden = message === '';
  banner.dataset.state = session.status;
  text.textContent = message;
  action.hidden = button === '';
  action.textContent = button;
  return countdown;
}

// Messages.

/** The thread's scrolling list of messages, with day separators and history loading at the top. */
export class ThreadView {
  #scroller;
  #list;
  #status;
  #conversationId = null;

  /**
   * @param {object} options
   * @param {HTMLElement} options.scroller The scrolling region.
   * @param {HTMLOListElement} options.list The list inside it.
   * @param {HTMLElement} options.status The line above the list: loading, start of history, errors.
   * @param {() => void} options.onNearTop Called when older messages should load.
   * @param {() => void} options.onScroll Called after the user scrolled.
   */
  constructor({ scroller, list, status, onNearTop, onScroll }) {
    this.#scroller = scroller;
    this.#list = list;
    this.#status = status;
    this.onNearTop = onNearTop;
    scroller.addEventListener(
      'scroll',
      () => {
        if (scroller.scrollTop < NEAR_TOP_PX) onNearTop();
        onScroll();
      },
      { passive: true },
    );
  }

  /** Whether the newest messages are in view. */
  isAtBottom() {
    const s = this.#scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.#scroller.scrollTop = this.#scroller.scrollHeight;
  }

  /**
   * Draws a conversation. The view stays where the reader is: at the bottom
   * when it was there (or `toBottom`), otherwise on the message that was at the top.
   */
  render(state, conversation, { toBottom = false } = {}) {
    const switched = this.#conversationId !== conversation.conversation_id;
    if (switched) {
      this.#list.replaceChildren();
      this.#conversationId = conversation.conversation_id;
    }
    const stick = switched || toBottom || this.isAtBottom();
    const anchor = stick ? null : this.#anchor();
    this.#renderStatus(state, conversation);
    const floor = state.receiptFloor(conversation);
    reconcile(this.#list, threadItems(state, conversation), {
      key: (item) => item.key,
      create: (item) => el('li', { className: item.kind === 'day' ? 'day' : 'msg' }),
      update: (node, item) =>
        item.kind === 'day' ? updateDay(node, item) : updateMessage(node, item, state, conversation, floor),
    });
    if (stick) this.scrollToBottom();
    else if (anchor?.node.isConnected) {
      this.#scroller.scrollTop += anchor.node.getBoundingClientRect().top - anchor.top;
    }
    if (this.#scroller.scrollTop < NEAR_TOP_PX) queueMicrotask(() => this.onNearTop());
  }

  /** Forgets the conversation shown, so the next render starts afresh. */
  clear() {
    this.#conversationId = null;
    this.#list.replaceChildren();
  }

  /** The first list item still in view, and where it is. */
  #anchor() {
    const top = this.#scroller.getBoundingClientRect().top;
    for (const node of this.#list.children) {
      // Day separators stick to the top while scrolling, so they cannot anchor.
      if (node.classList.contains('day')) continue;
      const rect = node.getBoundingClientRect();
      if (rect.bottom > top) return { node, top: rect.top };
    }
    return null;
  }

  #renderStatus(state, conversation) {
    const status = this.#status;
    let text = '';
    let kind = 'idle';
    if (conversation.historyError) {
      text = 'Could not load earlier messages. Scroll up to try again.';
      kind = 'error';
    } else if (conversation.loadingOlder || conversation.hasOlder === null) {
      text = 'Loading messages…';
      kind = 'loading';
    } else if (conversation.hasOlder === false) {
      const name = state.displayName(conversation);
      kind = 'start';
      text =
        state.orderedMessages(conversation).length === 0
          ? 'No messages yet. Say hello!'
          : conversation.kind === 'direct'
            ? `This is the beginning of your conversation with ${name}.`
            : `This is the beginning of ${name}.`;
    }
    status.textContent = text;
    status.dataset.state = kind;
  }
}

/** The items of a thread in order: day separators and messages, each marked when it starts a run. */
function threadItems(state, conversation) {
  const items = [];
  let previous = null;
  for (const record of state.orderedMessages(conversation)) {
    const day = dayKey(record.ts);
    const newDay = !previous || dayKey(previous.ts) !== day;
    if (newDay) items.push({ kind: 'day', key: `d:${day}`, ts: record.ts });
    const runStart =
      newDay || previous.sender_id !== record.sender_id || record.ts - previous.ts > RUN_GAP_MS;
    items.push({ kind: 'message', key: record.key, record, runStart });
    previous = record;
  }
  return items;
}

function updateDay(node, { ts }) {
  const label = formatDay(ts);
  redrawIfChanged(node, label, () => {
    node.replaceChildren(el('span', { className: 'day-label', text: label }));
  });
}

function updateMessage(node, { record, runStart }, state, conversation, floor) {
  const own = record.sender_id === state.me.user_id;
  const deliveryState = own ? state.deliveryState(record, floor) : null;
  const showSender = !own && runStart && conversation.kind === 'group';
  const sender = showSender ? (state.userName(record.sender_id) ?? '…') : null;
  const signature = JSON.stringify([record.ts, record.seq, deliveryState, runStart, sender, record.error ?? null]);
  redrawIfChanged(node, signature, () => {
    node.className = `msg ${own ? 'msg-out' : 'msg-in'}${runStart ? ' msg-first' : ''}`;
    setData(node, {
      state: deliveryState,
      seq: record.seq,
      messageId: record.message_id,
      clientMsgId: record.client_msg_id,
      sender: record.sender_id,
    });
    const meta = el(
      'span',
      { className: 'msg-meta' },
      el('time', { datetime: isoTime(record.ts), title: formatFull(record.ts), text: formatTime(record.ts) }),
      deliveryState ? tick(deliveryState) : null,
    );
    const parts = [el('div', { className: 'bubble' }, messageBody(record.content), meta)];
    if (sender) parts.unshift(el('span', { className: 'msg-sender', text: sender }));
    if (deliveryState === 'failed') parts.push(failure(record));
    node.replaceChildren(...parts);
  });
}

function setData(node, values) {
  for (const [key, value] of Object.entries(values)) {
    if (value === null || value === undefined) delete node.dataset[key];
    else node.dataset[key] = String(value);
  }
}

/** The tick of an own message, labelled for screen readers and on hover. */
function tick(deliveryState) {
  const label = STATE_LABELS[deliveryState];
  const node = el('span', { className: `tick tick-${deliveryState}`, role: 'img', 'aria-label': label, title: label });
  node.append(icon(deliveryState));
  return node;
}

function failure(record) {
  return el(
    'p',
    { className: 'msg-error' },
    `Not sent: ${record.error ?? 'the server refused it'}. `,
    el('button', { type: 'button', className: 'link-btn', dataset: { action: 'remove', key: record.key }, text: 'Remove' }),
  );
}

/** The text of a message with its web links made clickable, or a placeholder for other content. */
function messageBody(content) {
  const text = messageText(content);
  if (text === null) return el('p', { className: 'msg-text msg-unsupported', text: '[unsupported content]' });
  const body = el('p', { className: 'msg-text' });
  let at = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    const url = match[0].replace(/[.,;:!?)\]]+$/, '');
    body.append(text.slice(at, match.index));
    body.append(el('a', { href: url, target: '_blank', rel: 'noopener noreferrer', text: url }));
    at = match.index + url.length;
  }
  body.append(text.slice(at));
  return body;
}

// Dialogs.

/** Opens a modal dialog with its form reset and the focus on its first field. */
export function openDialog(dialog) {
  const form = dialog.querySelector('form');
  form.reset();
  form.querySelector('.form-error').textContent = '';
  dialog.showModal();
  dialog.querySelector('input')?.focus();
}

/**
 * Binds a dialog's form to `action`, which gets the form: the dialog closes
 * when it succeeds and shows its error otherwise. Cancel buttons
 * (`data-close`) and clicks on the backdrop close it; so does Escape, natively.
 */
export function bindDialog(dialog, action) {
  const form = dialog.querySelector('form');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const error = form.querySelector('.form-error');
    const buttons = form.querySelectorAll('button');
    error.textContent = '';
    buttons.forEach((b) => (b.disabled = true));
    try {
      await action(form);
      dialog.close();
    } catch (e) {
      error.textContent = e.message;
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });
  dialog.addEventListener('click', (event) => {
    // The form fills the dialog: a click on the dialog itself lands on the backdrop.
    if (event.target === dialog || event.target.closest('[data-close]')) dialog.close();
  });
}
