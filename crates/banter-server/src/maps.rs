//! Hash maps and sets for the hot paths, keyed by ids.
//!
//! The standard library hashes with SipHash, made to withstand keys chosen
//! to collide. The maps that use these instead (the hub's users, a
//! connection's conversations, the ack buffer) are looked up for every push
//! and every ack, and hold only ids the server assigned and checked (users,
//! devices, conversations the device belongs to), so they use foldhash, a
//! fast hasher seeded at random per map. Maps that take ids a client names
//! (presence subscriptions, the member cache, which a `typing` frame can
//! fill) keep SipHash.

/// A `HashMap` with the fast hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with the fast hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
