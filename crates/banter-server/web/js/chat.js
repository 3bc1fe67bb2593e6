/**
 * The state of the signed-in user's chats: conversations, their messages,
 * receipts, presence, typing and user names. No DOM and no network: the
 * application feeds it from the HTTP API and the realtime session, and it
 * answers `change` events that the view redraws from.
 *
 * Messages of a conversation are held by `message_id`, so a message that
 * comes twice (a push and a history page, a retry) is kept once. The user's
 * own messages start as `pending` under their `client_msg_id` and keep that
 * key once stored, so their element on screen stays the same as their tick
 * goes from pending to sent, delivered and read.
 */

/** How long "typing…" stays up after the last typing notice. */
const TYPING_TTL_MS = 6_000;

/**
 * @typedef {object} MessageRecord
 * @property {string} key Stable identity on screen: the `message_id`, or `c:` + `client_msg_id` for own sends.
 * @property {string} conversation_id
 * @property {string|null} message_id Null until stored.
 * @property {number|null} seq Null until stored.
 * @property {string} sender_id
 * @property {string} client_msg_id
 * @property {number} ts Server time once stored; local time while pending.
 * @property {object} content
 * @property {'pending'|'stored'|'failed'} status
 * @property {string} [error] Why a send failed.
 */

export class ChatState extends EventTarget {
  /** @type {Map<string, object>} */
  conversations = new Map();
  /** @type {Map<string, string>} user id → username */
  users = new Map();
  /** @type {Map<string, {status: string, last_seen: number|null}>} */
  presence = new Map();
  #lookups = new Set();
  #lookupUser;
  /** @type {Map<string, Map<string, number>>} conversation → user → typing timer */
  #typing = new Map();
  /** @type {Map<string, Map<string, {delivered: number, read: number}>>} conversation → member → positions */
  #receipts;
  #receiptsKey;
  #changeQueued = false;

  /**
   * @param {object} options
   * @param {{user_id: string, username: string}} options.me The signed-in user.
   * @param {(userId: string) => Promise<{username: string}>} options.lookupUser Resolves a user id.
   */
  constructor({ me, lookupUser }) {
    super();
    this.me = me;
    this.#lookupUser = lookupUser;
    this.users.set(me.user_id, me.username);
    this.#receiptsKey = `banter.receipts.${me.user_id}`;
    this.#receipts = loadReceipts(this.#receiptsKey);
  }

  /** Announces a change once per task, however many happened. */
  #changed() {
    if (this.#changeQueued) return;
    this.#changeQueued = true;
    queueMicrotask(() => {
      this.#changeQueued = false;
      this.dispatchEvent(new Event('change'));
    });
  }

  // Users.

  /** A user's name, or null while it is being looked up. */
  userName(userId) {
    const name = this.users.get(userId);
    if (name !== undefined) return name;
    if (!this.#lookups.has(userId)) {
      this.#lookups.add(userId);
      this.#lookupUser(userId)
        .then((user) => {
          this.users.set(userId, user.username);
          this.#changed();
        })
        .catch(() => this.#lookups.delete(userId));
    }
    return null;
  }

  rememberUser(user) {
    this.users.set(user.user_id, user.username);
  }

  // Conversations.

  /** Replaces the list with the server's; conversations not in it were left elsewhere. */
  setConversations(list) {
    const ids = new Set(list.map((c) => c.conversation_id));
    for (const id of this.conversations.keys()) if (!ids.has(id)) this.conversations.delete(id);
    for (const wire of list) this.upsertConversation(wire);
    this.#changed();
  }

  /** Adds a conversation or updates it from a conversation object; answers the record. */
  upsertConversation(wire) {
    let conversation = this.conversations.get(wire.conversation_id);
    if (!conversation) {
      conversation = newConversation(wire);
      this.conversations.set(wire.conversation_id, conversation);
    } else {
      Object.assign(conversation, {
        kind: wire.kind,
        title: wire.title ?? null,
        members: wire.members ?? null,
        member_count: wire.member_count,
        last_seq: Math.max(conversation.last_seq, wire.last_seq),
        read_seq: Math.max(conversation.read_seq, wire.read_seq),
        last_activity: Math.max(conversation.last_activity, wire.last_activity ?? wire.created_at),
      });
    }
    this.#changed();
    return conversation;
  }

  removeConversation(conversationId) {
    this.conversations.delete(conversationId);
    this.#changed();
  }

  /** Conversations, most recent activity first (then the newest conversation first). */
  sortedConversations() {
    return [...this.conversations.values()].sort(
      (a, b) => b.last_activity - a.last_activity || compareIds(b.conversation_id, a.conversation_id),
    );
  }

  /** The other member of a direct conversation. */
  peerId(conversation) {
    if (conversation.kind !== 'direct') return null;
    return conversation.members?.find((id) => id !== this.me.user_id) ?? null;
  }

  /** What a conversation is called: the peer's name, the group's title, or its members' names. */
  displayName(conversation) {
    if (conversation.kind === 'direct') {
      return this.userName(this.peerId(conversation) ?? '') ?? 'Direct chat';
    }
    if (conversation.title) return conversation.title;
    const others = (conversation.members ?? []).filter((id) => id !== this.me.user_id);
    const names = others.slice(0, 3).map((id) => this.userName(id) ?? '…');
    if (names.length === 0) return 'Group';
    const more = others.length - names.length;
    return more > 0 ? `${names.join(', ')} and ${more} more` : names.join(', ');
  }

  /**
   * Messages the user has not read: those above the read position and above
   * the user's own latest message, since writing in a conversation (from any
   * device) means having seen it.
   */
  unread(conversation) {
    return Math.max(0, conversation.last_seq - Math.max(conversation.read_seq, conversation.own_seq));
  }

  /** Moves the user's read position up; answers whether it rose. */
  markRead(conversationId, seq) {
    const conversation = this.conversations.get(conversationId);
    if (!conversation || seq <= conversation.read_seq) return false;
    conversation.read_seq = seq;
    this.#changed();
    return true;
  }

  // Messages.

  /** The messages of a conversation in display order: stored by seq, then unsent ones as written. */
  orderedMessages(conversation) {
    conversation.ordered ??= [...conversation.messages.values()].sort(compareMessages);
    return conversation.ordered;
  }

  /** The lowest stored seq held, or null. */
  oldestSeq(conversation) {
    return this.orderedMessages(conversation).find((m) => m.seq !== null)?.seq ?? null;
  }

  /** The highest stored seq held, or 0. */
  newestSeq(conversation) {
    const stored = this.orderedMessages(conversation).filter((m) => m.seq !== null);
    return stored.at(-1)?.seq ?? 0;
  }

  /** The newest message, for the list's preview. */
  lastMessage(conversation) {
    return this.orderedMessages(conversation).at(-1) ?? null;
  }

  /**
   * Takes in stored messages (pushed, fetched or from history pages).
   * `live` ones are news: they move the conversation's activity and end the sender's typing.
   * Answers the records that were new.
   */
  addMessages(conversationId, messages, { live = false } = {}) {
    const conversation = this.conversations.get(conversationId);
    if (!conversation) return [];
    const added = [];
    for (const message of messages) {
      const record = this.#insertStored(conversation, message);
      if (!record) continue;
      added.push(record);
      if (!live) continue;
      conversation.last_activity = Math.max(conversation.last_activity, message.ts);
      this.#stopTyping(conversationId, message.sender_id);
    }
    if (added.length) this.#changed();
    return added;
  }

  #insertStored(conversation, message) {
    if (conversation.byMessageId.has(message.message_id)) return null;
    conversation.last_seq = Math.max(conversation.last_seq, message.seq);
    if (message.sender_id === this.me.user_id) conversation.own_seq = Math.max(conversation.own_seq, message.seq);
    const ownKey = message.sender_id === this.me.user_id ? conversation.byClientId.get(message.client_msg_id) : undefined;
    const own = ownKey && conversation.messages.get(ownKey);
    if (own) {
      // The stored form of a message this page sent: same element on screen.
      Object.assign(own, storedFields(message), { status: 'stored', error: undefined });
      conversation.byMessageId.set(message.message_id, own.key);
      conversation.ordered = null;
      this.#changed();
      return null;
    }
    const record = { key: message.message_id, ...storedFields(message), status: 'stored' };
    conversation.messages.set(record.key, record);
    conversation.byMessageId.set(record.message_id, record.key);
    conversation.ordered = null;
    return record;
  }

  /** Shows an outbox entry as a pending message. */
  addPending(entry) {
    const conversation = this.conversations.get(entry.conversation_id);
    if (!conversation || conversation.byClientId.has(entry.client_msg_id)) return;
    const record = {
      key: `c:${entry.client_msg_id}`,
      conversation_id: entry.conversation_id,
      message_id: null,
      seq: null,
      sender_id: this.me.user_id,
      client_msg_id: entry.client_msg_id,
      ts: entry.created_at,
      content: entry.content,
      status: 'pending',
    };
    conversation.messages.set(record.key, record);
    conversation.byClientId.set(entry.client_msg_id, record.key);
    conversation.last_activity = Math.max(conversation.last_activity, entry.created_at);
    conversation.ordered = null;
    this.#changed();
  }

  /** A `sent` frame: the pending message is stored. */
  confirmSent(message) {
    const conversation = this.conversations.get(message.conversation_id);
    if (!conversation) return;
    if (!conversation.byClientId.has(message.client_msg_id)) this.addPending({ ...message, created_at: message.ts });
    this.#insertStored(conversation, { ...message, sender_id: this.me.user_id });
    conversation.last_activity = Math.max(conversation.last_activity, message.ts);
    this.#changed();
  }

  /** A send the server refused for good. */
  failSend({ conversation_id, client_msg_id, message }) {
    const conversation = this.conversations.get(conversation_id);
    const record = conversation?.messages.get(conversation.byClientId.get(client_msg_id));
    if (!record) return;
    record.status = 'failed';
    record.error = message;
    this.#changed();
  }

  /** Drops a message that failed to send. */
  removeMessage(conversationId, key) {
    const conversation = this.conversations.get(conversationId);
    const record = conversation?.messages.get(key);
    if (!record || record.status !== 'failed') return;
    conversation.messages.delete(key);
    conversation.byClientId.delete(record.client_msg_id);
    conversation.ordered = null;
    this.#changed();
  }

  // Receipts.

  /** A `receipt` frame: a member's devices received (or the member read) up to `seq`. */
  applyReceipt({ conversation_id, user_id, kind, seq }) {
    let members = this.#receipts.get(conversation_id);
    if (!members) this.#receipts.set(conversation_id, (members = new Map()));
    const position = members.get(user_id) ?? { delivered: 0, read: 0 };
    if (kind === 'read') position.read = Math.max(position.read, seq);
    // Reading implies holding.
    position.delivered = Math.max(position.delivered, kind === 'delivered' ? seq : position.read);
    members.set(user_id, position);
    saveReceipts(this.#receiptsKey, this.#receipts);
    this.#changed();
  }

  /**
   * The seqs up to which every other member has received and read the
   * conversation: the floor of each position over the other members.
   */
  receiptFloor(conversation) {
    const others = (conversation.members ?? []).filter((id) => id !== this.me.user_id);
    if (others.length === 0) return { delivered: 0, read: 0 };
    const positions = this.#receipts.get(conversation.conversation_id);
    let delivered = Infinity;
    let read = Infinity;
    for (const id of others) {
      const position = positions?.get(id) ?? { delivered: 0, read: 0 };
      delivered = Math.min(delivered, position.delivered);
      read = Math.min(read, position.read);
    }
    return { delivered, read };
  }

  /** The tick of one of the user's own messages: pending, failed, sent, delivered or read. */
  deliveryState(record, floor) {
    if (record.status !== 'stored') return record.status;
    if (record.seq <= floor.read) return 'read';
    if (record.seq <= floor.delivered) return 'delivered';
    return 'sent';
  }

  // Typing and presence.

  /** A member is typing; the notice lapses on its own, or when the member's message arrives. */
  setTyping(conversationId, userId) {
    if (userId === this.me.user_id) return;
    let typing = this.#typing.get(conversationId);
    if (!typing) this.#typing.set(conversationId, (typing = new Map()));
    clearTimeout(typing.get(userId));
    typing.set(
      userId,
      setTimeout(() => this.#stopTyping(conversationId, userId), TYPING_TTL_MS),
    );
    this.#changed();
  }

  #stopTyping(conversationId, userId) {
    const typing = this.#typing.get(conversationId);
    if (!typing?.has(userId)) return;
    clearTimeout(typing.get(userId));
    typing.delete(userId);
    this.#changed();
  }

  /** The members typing in a conversation now. */
  typingUsers(conversationId) {
    return [...(this.#typing.get(conversationId)?.keys() ?? [])];
  }

  setPresence({ user_id, status, last_seen }) {
    this.presence.set(user_id, { status, last_seen });
    this.#changed();
  }

  /** Forgets every presence: without a connection it is unknown, and the next one reports it afresh. */
  clearPresence() {
    if (this.presence.size === 0) return;
    this.presence.clear();
    this.#changed();
  }

  /** The direct peers, whose presence the list shows. */
  directPeers() {
    return [...this.conversations.values()].map((c) => this.peerId(c)).filter((id) => id !== null);
  }
}

function newConversation(wire) {
  return {
    conversation_id: wire.conversation_id,
    kind: wire.kind,
    title: wire.title ?? null,
    members: wire.members ?? null,
    member_count: wire.member_count,
    last_seq: wire.last_seq,
    read_seq: wire.read_seq,
    /** The seq of the user's newest message held. */
    own_seq: 0,
    created_at: wire.created_at,
    last_activity: wire.last_activity ?? wire.created_at,
    /** @type {Map<string, MessageRecord>} */
    messages: new Map(),
    /** message_id → key */
    byMessageId: new Map(),
    /** client_msg_id → key, for the user's own sends from this page */
    byClientId: new Map(),
    /** Display order, rebuilt after a change. */
    ordered: null,
    /** Whether older history exists: null until the first page is loaded. */
    hasOlder: wire.last_seq === 0 ? false : null,
    loadingOlder: false,
    historyError: null,
  };
}

function storedFields(message) {
  return {
    conversation_id: message.conversation_id,
    message_id: message.message_id,
    seq: message.seq,
    sender_id: message.sender_id,
    client_msg_id: message.client_msg_id,
    ts: message.ts,
    content: message.content,
  };
}

/** Stored messages by seq, then unsent ones in the order they were written. */
function compareMessages(a, b) {
  if (a.seq !== null && b.seq !== null) return a.seq - b.seq;
  if (a.seq !== null) return -1;
  if (b.seq !== null) return 1;
  return a.ts - b.ts;
}

/** Ids are decimal strings of up to 19 digits: compare them as numbers without losing precision. */
function compareIds(a, b) {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/** The text of a message, or null when its content is not text. */
export function messageText(content) {
  return typeof content?.text === 'string' ? content.text : null;
}

function loadReceipts(key) {
  try {
    const stored = JSON.parse(localStorage.getItem(key) ?? '{}');
    return new Map(
      Object.entries(stored).map(([conversationId, members]) => [conversationId, new Map(Object.entries(members))]),
    );
  } catch {
    return new Map();
  }
}

/**
 * Receipts are not replayed by the server, so the last positions seen are
 * kept here: after a reload, old messages still show delivered and read.
 */
function saveReceipts(key, receipts) {
  const plain = {};
  for (const [conversationId, members] of receipts) plain[conversationId] = Object.fromEntries(members);
  try {
    localStorage.setItem(key, JSON.stringify(plain));
  } catch {
    // Storage full or disabled: ticks fall back to what this page has seen.
  }
}
