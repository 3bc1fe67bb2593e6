//! Protocol limits shared by the server and its clients. The server enforces
//! each of them in exactly one place; `docs/protocol.md` lists them all.

/// Longest accepted `client_msg_id`, in characters.
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 64;
/// Longest `text` of a `{"type":"text"}` content, in bytes.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Default limit on one WebSocket frame, in bytes (`--max-frame-bytes`).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Most members a group may have.
pub const MAX_GROUP_MEMBERS: usize = 100_000;
/// Above this many members a conversation object omits its `members` list.
pub const MEMBERS_LISTED_UP_TO: usize = 1_000;
/// Most users one connection may subscribe to for presence.
pub const MAX_PRESENCE_SUBSCRIPTIONS: usize = 1_000;
/// Default and largest `limit` of the history endpoint.
pub const HISTORY_DEFAULT_LIMIT: usize = 50;
/// Largest `limit` of the history endpoint.
pub const HISTORY_MAX_LIMIT: usize = 200;
/// Username length bounds, in characters of `a-z 0-9 _ . -`.
pub const USERNAME_CHARS: std::ops::RangeInclusive<usize> = 3..=32;
/// Password length bounds, in bytes.
pub const PASSWORD_BYTES: std::ops::RangeInclusive<usize> = 8..=256;
/// Longest group title, in bytes.
pub const MAX_TITLE_BYTES: usize = 256;
/// Longest device name, in bytes.
pub const MAX_DEVICE_NAME_BYTES: usize = 128;
/// Most user ids one `GET /v1/presence` may ask for.
pub const MAX_PRESENCE_QUERY: usize = 1_000;

/// Whether `name` is an acceptable username.
pub fn valid_username(name: &str) -> bool {
    USERNAME_CHARS.contains(&name.chars().count())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `password` has an acceptable length.
pub fn valid_password(password: &str) -> bool {
    PASSWORD_BYTES.contains(&password.len())
}

/// Whether `id` is an acceptable `client_msg_id`: 1 to 64 characters, none
/// of them a control character (stores refuse NUL, and logs should not
/// carry line breaks from clients).
pub fn valid_client_msg_id(id: &str) -> bool {
    let n = id.chars().count();
    (1..=MAX_CLIENT_MSG_ID_CHARS).contains(&n) && !id.chars().any(char::is_control)
}

/// Whether `title` is an acceptable group title: at most [`MAX_TITLE_BYTES`], no control characters.
pub fn valid_title(title: &str) -> bool {
    title.len() <= MAX_TITLE_BYTES && !title.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_msg_ids_and_titles_refuse_control_characters() {
        assert!(valid_client_msg_id("m-1"));
        assert!(!valid_client_msg_id("a\u{0}b"));
        assert!(!valid_client_msg_id("line\nbreak"));
        assert!(!valid_client_msg_id(""));
        assert!(valid_title("Lunch crew ☕"));
        assert!(!valid_title("nul\u{0}"));
        assert!(!valid_title(&"x".repeat(MAX_TITLE_BYTES + 1)));
    }

    #[test]
    fn usernames() {
        assert!(valid_username("ab_c.d-9"));
        assert!(!valid_username("ab"));
        assert!(!valid_username("Abc"));
        assert!(!valid_username("a b c"));
        assert!(!valid_username(&"a".repeat(33)));
        assert!(valid_username(&"a".repeat(32)));
    }

    #[test]
    fn client_msg_ids() {
        assert!(!valid_client_msg_id(""));
        assert!(valid_client_msg_id(&"é".repeat(64)));
        assert!(!valid_client_msg_id(&"x".repeat(65)));
    }
}
