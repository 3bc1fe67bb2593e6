/**
 * The web client's entry point: signing in and out, and the wiring between
 * the HTTP API (api.js), the realtime session (connection.js), the chat state
 * (chat.js) and the DOM (view.js).
 *
 * The signed-in session (token, user and device ids) is kept in localStorage,
 * so a reload stays signed in as the same device. The open conversation is in
 * the URL's fragment (`#/c/ID`), so the browser's back button leaves it.
 */

import { Api, ApiError } from './api.js';
import { ChatState, messageText } from './chat.js';
import { Outbox, Session } from './connection.js';
import {
  ThreadView,
  bindDialog,
  openDialog,
  paintAvatar,
  renderBanner,
  renderConversationList,
  renderThreadHeader,
  renderTyping,
} from './view.js';

const SESSION_KEY = 'banter.session';
/** History page size when scrolling back. */
const HISTORY_PAGE = 50;
/** Preview fetches running at once after the conversation list loads. */
const PREVIEW_CONCURRENCY = 4;
/** How often a typing notice is repeated while the user keeps typing. */
const TYPING_REPEAT_MS = 3_000;
/** How long to wait before retrying a history page that failed. */
const HISTORY_RETRY_MS = 3_000;
/** The longest text the server accepts, in UTF-8 bytes. */
const MAX_TEXT_BYTES = 16_384;
const USERNAME_PATTERN = /^[a-z0-9_.-]{3,32}$/;
const ROUTE_PATTERN = /^#\/c\/(\d{1,19})$/;

const $ = (id) => document.getElementById(id);

// Signing in.

/** The stored session of this browser, if any. */
function storedSession() {
  try {
    const stored = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null');
    return stored?.token && stored?.user_id ? stored : null;
  } catch {
    return null;
  }
}

/** A name for the device this browser becomes, shown nowhere yet but stored by the server. */
function deviceName() {
  const platform = navigator.userAgentData?.platform || navigator.platform || '';
  return `Web browser${platform ? ` on ${platform}` : ''}`.slice(0, 128);
}

function showAuth(message = '') {
  $('app').hidden = true;
  $('auth').hidden = false;
  $('auth-error').textContent = message;
  document.title = 'Banter';
  $('auth-username').focus();
}

function setAuthMode(signup) {
  $('mode-signin').setAttribute('aria-pressed', String(!signup));
  $('mode-signup').setAttribute('aria-pressed', String(signup));
  $('auth-submit').textContent = signup ? 'Create account' : 'Sign in';
  $('auth-password').autocomplete = signup ? 'new-password' : 'current-password';
  $('auth-username-hint').hidden = !signup;
  $('auth-password-hint').hidden = !signup;
  $('auth-error').textContent = '';
  $('auth-form').dataset.mode = signup ? 'signup' : 'signin';
}

/** Checks what the server would refuse, so people learn the rules before sending. */
function authProblem(signup, username, password) {
  if (!username || !password) return 'Enter a username and a password.';
  if (!signup) return '';
  if (!USERNAME_PATTERN.test(username)) {
    return 'Usernames are 3 to 32 characters: lowercase letters, digits, and _ . -';
  }
  if (new TextEncoder().encode(password).length < 8) return 'Passwords have at least 8 characters.';
  return '';
}

function authErrorText(error) {
  switch (error.code) {
    case 'invalid_credentials':
      return 'Wrong username or password.';
    case 'username_taken':
      return 'That username is taken. Try another one.';
    default:
      return error.message;
  }
}

async function onAuthSubmit(event) {
  event.preventDefault();
  const signup = $('auth-form').dataset.mode === 'signup';
  const username = $('auth-username').value.trim().toLowerCase();
  const password = $('auth-password').value;
  const problem = authProblem(signup, username, password);
  $('auth-error').textContent = problem;
  if (problem) return;
  const submit = $('auth-submit');
  submit.disabled = true;
  try {
    const api = new Api();
    if (signup) await api.register(username, password);
    const login = await api.login(username, password, deviceName());
    const session = { ...login, username };
    localStorage.setItem(SESSION_KEY, JSON.stringify(session));
    $('auth-password').value = '';
    startApp(session);
  } catch (error) {
    $('auth-error').textContent = error instanceof ApiError ? authErrorText(error) : String(error);
  } finally {
    submit.disabled = false;
  }
}

// The signed-in application.

/** Everything that lives as long as one signed-in session. */
let app = null;

function startApp(stored) {
  const me = { user_id: stored.user_id, username: stored.username };
  const api = new Api({ token: stored.token, onUnauthorized: () => endApp('Your session has ended. Please sign in again.') });
  const state = new ChatState({ me, lookupUser: (id) => api.user(id) });
  const outbox = new Outbox(`banter.outbox.${me.user_id}`);
  const session = new Session({ api, token: stored.token, outbox });
  app = {
    me,
    api,
    state,
    session,
    outbox,
    selectedId: null,
    everConnected: false,
    renderQueued: false,
    toBottom: false,
    focusComposer: false,
    drafts: new Map(),
    lastTypingSent: 0,
    orphans: new Map(),
    fetching: new Set(),
    bannerTimer: null,
    clockTimer: setInterval(() => scheduleRender(), 60_000),
    announcements: [],
    announceTimer: null,
    thread: new ThreadView({
      scroller: $('messages'),
      list: $('message-list'),
      status: $('history-status'),
      onNearTop: () => loadOlder(),
      onScroll: () => {
        $('jump').hidden = app.thread.isAtBottom();
        markReadIfSeen();
      },
    }),
  };
  state.addEventListener('change', () => scheduleRender());
  wireSession(session);

  $('auth').hidden = true;
  $('app').hidden = false;
  $('me-name').textContent = me.username;
  paintAvatar($('me-avatar'), me.username, me.user_id);
  route();
  refreshConversations().finally(() => app?.session === session && session.start());
}

/** Ends the signed-in session on this page and shows the sign-in form. */
function endApp(message) {
  if (!app) return;
  app.session.stop();
  clearInterval(app.clockTimer);
  clearInterval(app.bannerTimer);
  clearTimeout(app.announceTimer);
  app.thread.clear();
  app = null;
  $('conversation-list').replaceChildren();
  $('announcer').textContent = '';
  $('composer-input').value = '';
  localStorage.removeItem(SESSION_KEY);
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  history.replaceState(null, '', location.pathname);
  showAuth(message);
}

function wireSession(session) {
  const on = (type, handler) => session.addEventListener(type, (event) => app?.session === session && handler(event.detail));
  on('status', ({ status }) => {
    if (status !== 'connected') app.state.clearPresence();
    renderConnection();
  });
  on('welcome', () => {
    app.everConnected = true;
    // Conversation events are not replayed: a new connection reloads the list.
    refreshConversations();
  });
  on('message', (message) => takeMessage(message));
  on('sent', (message) => app.state.confirmSent(message));
  on('sendfailed', (failure) => app.state.failSend(failure));
  on('receipt', (receipt) => app.state.applyReceipt(receipt));
  on('typing', ({ conversation_id, user_id }) => app.state.setTyping(conversation_id, user_id));
  on('presence', (presence) => app.state.setPresence(presence));
  on('conversation', ({ conversation }) => loadPreviews([addConversation(conversation)]));
  on('ended', ({ reason }) => {
    if (reason === 'unauthorized') endApp('Your session has ended. Please sign in again.');
    else renderConnection();
  });
}

/** A new message from the session: shown, and announced when someone else wrote it. */
function takeMessage(message) {
  const { state } = app;
  if (!state.conversations.has(message.conversation_id)) {
    // A conversation this page has not heard of yet: hold the message and look the conversation up.
    const held = app.orphans.get(message.conversation_id) ?? [];
    held.push(message);
    app.orphans.set(message.conversation_id, held);
    fetchConversation(message.conversation_id);
    return;
  }
  const added = state.addMessages(message.conversation_id, [message], { live: true });
  for (const record of added) if (record.sender_id !== app.me.user_id) announce(record);
}

async function fetchConversation(conversationId) {
  if (app.fetching.has(conversationId)) return;
  app.fetching.add(conversationId);
  const current = app;
  try {
    const wire = await current.api.conversation(conversationId);
    if (app === current) loadPreviews([addConversation(wire)]);
  } catch {
    current.orphans.delete(conversationId);
  } finally {
    current.fetching.delete(conversationId);
  }
}

/** Adds or updates a conversation, with what depends on it: held messages, pending sends, presence. */
function addConversation(wire) {
  const conversation = app.state.upsertConversation(wire);
  const id = conversation.conversation_id;
  app.session.memberCount(id, wire.member_count);
  const held = app.orphans.get(id);
  app.orphans.delete(id);
  if (held) app.state.addMessages(id, held, { live: true });
  for (const entry of app.session.pending()) if (entry.conversation_id === id) app.state.addPending(entry);
  const peer = app.state.peerId(conversation);
  if (peer) app.session.follow([peer]);
  return conversation;
}

/** Loads the conversation list, then what each conversation needs to be drawn. */
async function refreshConversations() {
  const current = app;
  let list;
  try {
    list = await current.api.conversations();
  } catch {
    return; // The banner already tells about the connection; the next welcome tries again.
  }
  if (app !== current) return;
  current.state.setConversations(list);
  loadPreviews(list.map((wire) => addConversation(wire)));
  if (current.selectedId && !current.state.conversations.has(current.selectedId)) navigate(null);
  scheduleRender();
}

/** Fetches the newest message of conversations that hold none, for the list's preview line. */
async function loadPreviews(conversations) {
  const current = app;
  const queue = conversations.filter((c) => c.last_seq > 0 && c.messages.size === 0);
  const worker = async () => {
    for (let c = queue.shift(); c && app === current; c = queue.shift()) {
      try {
        const page = await current.api.history(c.conversation_id, { limit: 1 });
        current.state.addMessages(c.conversation_id, page.messages);
      } catch {
        // The preview stays empty; opening the conversation loads its history.
      }
    }
  };
  await Promise.all(Array.from({ length: PREVIEW_CONCURRENCY }, worker));
}

/** Loads the page of history before the oldest message held, if there is one to load. */
async function loadOlder() {
  const current = app;
  const conversation = current?.state.conversations.get(current.selectedId);
  if (!conversation || conversation.loadingOlder || conversation.hasOlder === false) return;
  if (conversation.historyError && Date.now() - conversation.historyError < HISTORY_RETRY_MS) return;
  conversation.loadingOlder = true;
  scheduleRender();
  const before = current.state.oldestSeq(conversation);
  try {
    const page = await current.api.history(conversation.conversation_id, {
      before: before ?? undefined,
      limit: HISTORY_PAGE,
    });
    conversation.historyError = null;
    conversation.hasOlder = page.has_more;
    current.state.addMessages(conversation.conversation_id, page.messages);
  } catch {
    conversation.historyError = Date.now();
  } finally {
    conversation.loadingOlder = false;
    scheduleRender();
  }
}

// Drawing.

function scheduleRender() {
  if (!app || app.renderQueued) return;
  app.renderQueued = true;
  queueMicrotask(() => {
    if (!app) return;
    app.renderQueued = false;
    render();
  });
}

function render() {
  const { state, selectedId } = app;
  renderConversationList($('conversation-list'), $('list-empty'), state, selectedId);
  const conversation = state.conversations.get(selectedId);
  $('app').classList.toggle('thread-open', Boolean(conversation));
  $('thread').hidden = !conversation;
  $('no-thread').hidden = Boolean(conversation);
  if (conversation) {
    renderThreadHeader(
      {
        title: $('thread-title'),
        subtitle: $('thread-subtitle'),
        avatar: $('thread-avatar'),
        addMembers: $('add-members'),
        leave: $('leave'),
        region: $('messages'),
      },
      state,
      conversation,
    );
    app.thread.render(state, conversation, { toBottom: app.toBottom });
    renderTyping($('typing'), state, selectedId);
    $('jump').hidden = app.thread.isAtBottom();
    markReadIfSeen();
    if (app.focusComposer) $('composer-input').focus({ preventScroll: true });
    app.focusComposer = false;
  }
  app.toBottom = false;
  renderConnection();
  const unread = [...state.conversations.values()].reduce((sum, c) => sum + state.unread(c), 0);
  document.title = unread ? `(${unread}) Banter` : 'Banter';
}

function renderConnection() {
  const { session } = app;
  const countdown = renderBanner(
    { banner: $('banner'), text: $('banner-text'), action: $('banner-action') },
    session,
    { everConnected: app.everConnected },
  );
  clearInterval(app.bannerTimer);
  if (countdown) app.bannerTimer = setInterval(() => app && renderConnection(), 1_000);
  const labels = { connected: 'Online', connecting: 'Connecting…', waiting: 'Offline', ended: 'Disconnected' };
  $('me-status').textContent = labels[session.status];
  $('me-status').dataset.status = session.status;
}

/** Queues a polite announcement of a message; bursts are summed up in one line. */
function announce(record) {
  const { state } = app;
  const conversation = state.conversations.get(record.conversation_id);
  const sender = state.userName(record.sender_id) ?? 'Someone';
  const text = messageText(record.content) ?? 'a message';
  const where = conversation?.kind === 'group' ? ` in ${state.displayName(conversation)}` : '';
  app.announcements.push(`${sender}${where}: ${text}`);
  clearTimeout(app.announceTimer);
  app.announceTimer = setTimeout(() => {
    if (!app) return;
    const lines = app.announcements.splice(0);
    $('announcer').textContent = lines.length === 1 ? lines[0] : `${lines.length} new messages`;
  }, 400);
}

/** Tells the server the open conversation is read, when its newest message is in view of a visible page. */
function markReadIfSeen() {
  if (!app?.selectedId || document.visibilityState !== 'visible' || !app.thread.isAtBottom()) return;
  const conversation = app.state.conversations.get(app.selectedId);
  if (!conversation) return;
  const seq = app.state.newestSeq(conversation);
  if (app.state.markRead(conversation.conversation_id, seq)) app.session.read(conversation.conversation_id, seq);
}

// Navigation.

function navigate(conversationId) {
  const hash = conversationId ? `#/c/${conversationId}` : '#/';
  if (location.hash !== hash) location.hash = hash;
  else route();
}

/** Opens the conversation the URL names, if any. */
function route() {
  if (!app) return;
  const match = ROUTE_PATTERN.exec(location.hash);
  const previous = app.selectedId;
  app.selectedId = match ? match[1] : null;
  if (previous !== app.selectedId) {
    // Each conversation keeps its unsent draft.
    const input = $('composer-input');
    if (previous) app.drafts.set(previous, input.value);
    input.value = app.drafts.get(app.selectedId) ?? '';
    resizeComposer();
    app.thread.clear();
    app.focusComposer = app.selectedId !== null;
  }
  scheduleRender();
  if (!app.selectedId && previous) {
    // Back to the list: put the focus where the reader left it.
    queueMicrotask(() => document.querySelector(`.conv[data-key="${previous}"] .conv-link`)?.focus());
  }
}

// Composing.

function onComposerKeydown(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
}

function onComposerInput() {
  resizeComposer();
  const input = $('composer-input');
  input.setCustomValidity('');
  if (!app?.selectedId || !input.value.trim()) return;
  if (Date.now() - app.lastTypingSent >= TYPING_REPEAT_MS) {
    app.lastTypingSent = Date.now();
    app.session.typing(app.selectedId);
  }
}

/** Grows the composer with its text where CSS cannot (`field-sizing`). */
function resizeComposer() {
  if (CSS.supports('field-sizing', 'content')) return;
  const input = $('composer-input');
  input.rows = Math.min(6, input.value.split('\n').length);
}

function onComposerSubmit(event) {
  event.preventDefault();
  const input = $('composer-input');
  const text = input.value.trim();
  if (!app?.selectedId || !text) return;
  if (new TextEncoder().encode(text).length > MAX_TEXT_BYTES) {
    input.setCustomValidity('This message is too long. Split it into several.');
    input.reportValidity();
    return;
  }
  const entry = app.session.send(app.selectedId, { type: 'text', text });
  app.state.addPending(entry);
  app.toBottom = true;
  app.lastTypingSent = 0;
  input.value = '';
  resizeComposer();
  input.focus();
}

// Dialogs.

/** Usernames typed into a field: split on commas and spaces, lower-cased, without "@", once each. */
function parseUsernames(text) {
  const names = text
    .split(/[\s,;]+/)
    .map((n) => n.replace(/^@/, '').toLowerCase())
    .filter(Boolean);
  return [...new Set(names)];
}

/** Looks users up by name; fails with one message naming every unknown one. */
async function resolveUsers(names) {
  const results = await Promise.allSettled(names.map((n) => app.api.userByName(n)));
  const missing = names.filter((_, i) => results[i].status === 'rejected' && results[i].reason?.code === 'not_found');
  if (missing.length) throw new Error(`No user named ${missing.join(', ')}.`);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  const users = results.map((r) => r.value);
  for (const user of users) app.state.rememberUser(user);
  return users;
}

/** Asks to confirm; `action` runs on confirmation. */
function confirmAction({ title, text, confirm, action }) {
  app.confirmed = action;
  openDialog($('dialog-confirm'));
  $('dialog-confirm-title').textContent = title;
  $('dialog-confirm-text').textContent = text;
  $('dialog-confirm-ok').textContent = confirm;
  $('dialog-confirm-ok').focus();
}

async function startDirect(form) {
  const [name] = parseUsernames(form.elements.username.value);
  if (!name) throw new Error('Enter a username.');
  if (name === app.me.username) throw new Error('That is you. Enter someone else’s username.');
  const [user] = await resolveUsers([name]);
  const conversation = await app.api.createDirect(user.user_id);
  addConversation(conversation);
  navigate(conversation.conversation_id);
}

async function createGroup(form) {
  const title = form.elements.title.value.trim();
  if (!title) throw new Error('Give the group a title.');
  const names = parseUsernames(form.elements.members.value).filter((n) => n !== app.me.username);
  const users = await resolveUsers(names);
  const conversation = await app.api.createGroup(title, users.map((u) => u.user_id));
  addConversation(conversation);
  navigate(conversation.conversation_id);
}

async function addMembers(form) {
  const names = parseUsernames(form.elements.members.value);
  if (!names.length) throw new Error('Enter at least one username.');
  const users = await resolveUsers(names);
  const conversation = await app.api.addMembers(app.selectedId, users.map((u) => u.user_id));
  addConversation(conversation);
}

function leaveGroup() {
  const id = app.selectedId;
  const conversation = app.state.conversations.get(id);
  if (!conversation) return;
  confirmAction({
    title: `Leave ${app.state.displayName(conversation)}?`,
    text: 'You will stop receiving its messages. A member can add you back later.',
    confirm: 'Leave group',
    action: async () => {
      await app.api.leave(id);
      app.state.removeConversation(id);
      navigate(null);
    },
  });
}

function signOut() {
  const pending = app.session.pending().length;
  const action = () => {
    const { api, outbox, me } = app;
    // The session stops first, so the server's close of a logged-out device
    // is not taken for an expired session.
    app.session.stop();
    outbox.clear();
    localStorage.removeItem(`banter.receipts.${me.user_id}`);
    endApp('');
    api.logout().catch(() => {});
  };
  if (!pending) {
    action();
    return;
  }
  confirmAction({
    title: 'Sign out?',
    text: `${pending} message${pending === 1 ? ' has' : 's have'} not been sent yet and will be lost.`,
    confirm: 'Sign out',
    action,
  });
}

// Start.

function init() {
  $('mode-signin').addEventListener('click', () => setAuthMode(false));
  $('mode-signup').addEventListener('click', () => setAuthMode(true));
  $('auth-form').addEventListener('submit', onAuthSubmit);
  setAuthMode(false);

  $('composer').addEventListener('submit', onComposerSubmit);
  $('composer-input').addEventListener('keydown', onComposerKeydown);
  $('composer-input').addEventListener('input', onComposerInput);
  $('back').addEventListener('click', () => navigate(null));
  $('jump').addEventListener('click', () => {
    app?.thread.scrollToBottom();
    $('composer-input').focus({ preventScroll: true });
  });
  $('new-chat').addEventListener('click', () => openDialog($('dialog-new-chat')));
  $('new-group').addEventListener('click', () => openDialog($('dialog-new-group')));
  $('add-members').addEventListener('click', () => openDialog($('dialog-add-members')));
  $('leave').addEventListener('click', () => leaveGroup());
  $('sign-out').addEventListener('click', () => signOut());
  $('banner-action').addEventListener('click', () => app?.session.reconnectNow());
  $('message-list').addEventListener('click', (event) => {
    const button = event.target.closest('[data-action="remove"]');
    if (button && app) app.state.removeMessage(app.selectedId, button.dataset.key);
  });
  bindDialog($('dialog-new-chat'), startDirect);
  bindDialog($('dialog-new-group'), createGroup);
  bindDialog($('dialog-add-members'), addMembers);
  bindDialog($('dialog-confirm'), () => app.confirmed());

  addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => markReadIfSeen());
  addEventListener('focus', () => markReadIfSeen());

  const stored = storedSession();
  if (stored) startApp(stored);
  else showAuth();
}

init();
