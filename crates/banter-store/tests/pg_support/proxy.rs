//! A TCP proxy in front of PostgreSQL, to play a database that goes away and
//! comes back: `cut` closes every connection and refuses new ones (a server
//! down), `stall` keeps connections open but forwards nothing (a network that
//! drops packets), `restore` forwards again on the same address.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Stall,
    Cut,
}

pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl Proxy {
    /// Starts forwarding from a free local port to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let (mode, _) = watch::channel(Mode::Forward);
        tokio::spawn(accept(listener, upstream, mode.subscribe()));
        Proxy { addr, upstream, mode }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and stops listening.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Keeps connections (and accepting) but forwards nothing.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Forwards again; after a cut, listens again on the same address.
    pub async fn restore(&self) {
        let was = self.mode.send_replace(Mode::Forward);
        if was == Mode::Cut {
            let listener = TcpListener::bind(self.addr).await.expect("bind the proxy again");
            tokio::spawn(accept(listener, self.upstream, self.mode.subscribe()));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let mut cut = mode.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { return };
                tokio::spawn(forward(client, upstream, mode.clone()));
            }
            _ = cut.wait_for(|m| *m == Mode::Cut) => return,
        }
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    let Ok(server) = TcpStream::connect(upstream).await else { return };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // When either direction ends, both sockets close.
    tokio::select! {
        _ = pipe(client_read, server_write, mode.clone()) => {}
        _ = pipe(server_read, client_write, mode) => {}
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = mode.wait_for(|m| *m == Mode::Cut) => return,
        };
        // Holds the bytes while stalled; gives up if cut meanwhile.
        match mode.wait_for(|m| *m != Mode::Stall).await {
            Ok(m) if *m == Mode::Forward => {}
            _ => return,
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
