/**
 * The HTTP API under /v1: one method per call the web client makes.
 *
 * Every failure becomes an `ApiError` carrying the server's error code
 * (docs/protocol.md section 9), or `network` when the server could not be
 * reached at all, so callers can tell a wrong password from a lost
 * connection. A 401 on an authenticated call means the session is over;
 * `onUnauthorized` lets the application sign out once, in one place.
 */

/** A failed call: the HTTP status (0 when nothing came back) and the server's error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }

  /** Whether trying again later may work: no answer, a server fault, or a busy store. */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export class Api {
  /**
   * @param {object} options
   * @param {string|null} [options.token] The bearer token of the session, if signed in.
   * @param {() => void} [options.onUnauthorized] Called when the server refuses the token.
   */
  constructor({ token = null, onUnauthorized = () => {} } = {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  /** Sends one request and answers its JSON body, or null for 204. */
  async request(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(`/v1${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check your connection.');
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (response.ok) return data;
    const error = new ApiError(
      response.status,
      data?.error?.code ?? 'unknown',
      data?.error?.message ?? `The server answered ${response.status}.`,
    );
    if (error.code === 'unauthorized' && this.token) this.onUnauthorized();
    throw error;
  }

  /** Registers a user: `{user_id, username}`. */
  register(username, password) {
    return this.request('POST', '/users', { username, password });
  }

  /** Signs in as a new device: `{token, user_id, device_id}`. */
  login(username, password, deviceName) {
    return this.request('POST', '/sessions', { username, password, device_name: deviceName });
  }

  /** Signs the current device out; its token stops working at once. */
  logout() {
    return this.request('DELETE', '/sessions/current');
  }

  /** A user by id: `{user_id, username}`. */
  user(userId) {
    return this.request('GET', `/users/${encodeURIComponent(userId)}`);
  }

  /** A user by exact username: `{user_id, username}`. */
  userByName(username) {
    return this.request('GET', `/users?username=${encodeURIComponent(username)}`);
  }

  /** The caller's conversations, most recent activity first. */
  async conversations() {
    const { conversations } = await this.request('GET', '/conversations');
    return conversations;
  }

  /** One conversation as the caller sees it. */
  conversation(conversationId) {
    return this.request('GET', `/conversations/${encodeURIComponent(conversationId)}`);
  }

  /** Finds or creates the direct conversation with one other user. */
  createDirect(userId) {
    return this.request('POST', '/conversations', { kind: 'direct', members: [userId] });
  }

  /** Creates a group; the caller is always a member. */
  createGroup(title, memberIds) {
    const body = { kind: 'group', members: memberIds };
    if (title) body.title = title;
    return this.request('POST', '/conversations', body);
  }

  /** Adds users to a group; answers the conversation as it now is. */
  addMembers(conversationId, userIds) {
    return this.request('POST', `/conversations/${encodeURIComponent(conversationId)}/members`, {
      user_ids: userIds,
    });
  }

  /** Leaves a group. */
  leave(conversationId) {
    return this.request('DELETE', `/conversations/${encodeURIComponent(conversationId)}/members/me`);
  }

  /**
   * A page of history, ascending by seq: `{messages, has_more}`.
   * `before` gives the newest messages below it, `after` the oldest above it,
   * neither the newest of all.
   */
  history(conversationId, { before, after, limit } = {}) {
    const query = new URLSearchParams();
    if (before !== undefined) query.set('before', String(before));
    if (after !== undefined) query.set('after', String(after));
    if (limit !== undefined) query.set('limit', String(limit));
    const suffix = query.size ? `?${query}` : '';
    return this.request('GET', `/conversations/${encodeURIComponent(conversationId)}/messages${suffix}`);
  }
}
