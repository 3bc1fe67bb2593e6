//! A TCP proxy on loopback whose connections a test can cut at will, to
//! drop a client's connection the way a network would. With several
//! targets it is a round-robin load balancer that skips targets refusing
//! connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Forwards every connection to one of its targets.
pub struct Proxy {
    pub addr: SocketAddr,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        Proxy::balance(vec![target]).await
    }

    /// Spreads connections over `targets` in turn, skipping those that refuse.
    pub async fn balance(targets: Vec<SocketAddr>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&live);
        let next = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(targets);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let (targets, next) = (Arc::clone(&targets), Arc::clone(&next));
                let task = tokio::spawn(async move {
                    for _ in 0..targets.len() {
                        let target = targets[next.fetch_add(1, Ordering::Relaxed) % targets.len()];
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ = outbound.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
                registry.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        Proxy { addr, live, accept }
    }

    /// Cuts every connection open now; new ones are accepted as before.
    pub fn sever(&self) {
        for h in self.live.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.sever();
        self.accept.abort();
    }
}
