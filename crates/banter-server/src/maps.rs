//! Hash maps and sets for the hot paths, keyed by ids.
//!
//! The standard library hashes with SipHash, made to withstand keys chosen
//! to collide. The maps here are keyed by ids the server assigns (users,
//! devices, conversations) and hold only entries the server made, and they
//! are looked up for every push and every ack, so they use foldhash, a fast
//! hasher seeded at random per map.

/// A `HashMap` with the fast hasher.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A `HashSet` with the fast hasher.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
