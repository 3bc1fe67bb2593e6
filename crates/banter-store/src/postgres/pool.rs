//! The connection pool: how connections are opened, how long anything may
//! wait for one, and how the pool heals after PostgreSQL comes back.
//!
//! Each node has its own pool. A connection whose server went away is closed
//! by its driver task (at once when the server or the kernel resets it, after
//! `tcp_user_timeout` when the network drops packets instead), and the pool
//! checks `is_closed` before handing a connection out again (deadpool's `Fast`
//! recycling), so a broken connection is replaced by a fresh one without
//! anyone restarting anything.

use super::PgOptions;
use crate::{Result, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::{Config, NoTls};

/// How long an idle connection waits before TCP keepalives probe it, so that
/// idle connections to a vanished server are noticed too.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);

/// The connection settings: `url` plus the timeouts of `options`.
pub(super) fn config(url: &str, options: &PgOptions) -> Result<Config> {
    let mut config: Config = url.parse().map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
    config
        .connect_timeout(options.connect_timeout)
        // Data the server does not acknowledge in this time closes the
        // connection, instead of TCP retransmitting for many minutes.
        .tcp_user_timeout(options.operation_timeout)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE);
    if config.get_application_name().is_none() {
        config.application_name("banter");
    }
    // The server cancels a statement running past `statement_timeout`, and
    // ends a session left inside a transaction for longer than an operation
    // may last: its operation has given up, and its locks must not stay held.
    let mut session = format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
        options.statement_timeout.as_millis(),
        options.operation_timeout.as_millis().max(1)
    );
    if let Some(given) = config.get_options() {
        session = format!("{given} {session}");
    }
    config.options(session);
    Ok(config)
}

/// A pool of at most `size` connections.
pub(super) fn build(config: Config, options: &PgOptions, size: usize) -> Result<Pool> {
    let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        // A caller waits this long for a free connection, then is told to retry.
        .wait_timeout(Some(options.operation_timeout))
        .create_timeout(Some(options.connect_timeout))
        .recycle_timeout(Some(options.connect_timeout))
        .build()
        .map_err(|e| StoreError::Internal(format!("PostgreSQL pool: {e}")))
}
