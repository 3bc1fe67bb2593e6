//! A TCP proxy on loopback whose connections a test can cut at will, to
//! drop a client's connection the way a network would.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Forwards every connection to `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().unwrap();
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&live);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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
