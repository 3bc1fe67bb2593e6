//! What the PostgreSQL tests need around the store: a database of their own
//! ([`TestDb`]) and a connection that can be cut or stalled ([`Proxy`]).

mod proxy;
mod test_db;

pub use proxy::Proxy;
pub use test_db::TestDb;
