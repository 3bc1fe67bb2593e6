//! The SQLite store against the store contract (`conformance`): seqs,
//! idempotency, cursors, membership, and what survives a reopen.

mod conformance;

use banter_store::sqlite::{SqliteStore, Synchronous};
use banter_store::Store;
use conformance::{conformance_tests, Backend};
use std::sync::Arc;

/// A temporary data directory; each `open` opens the store in it anew.
struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite { dir: tempfile::tempdir().expect("a temporary directory") }
    }
}

impl Backend for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(self.dir.path(), Synchronous::Full).expect("open the SQLite store"))
    }
}

conformance_tests!(Sqlite::new());
