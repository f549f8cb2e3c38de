//! A TCP proxy of the tests' own, between a worker and RabbitMQ or PostgreSQL, that injects
//! faults: pass bytes through, reset every open connection, blackhole (keep connections open
//! but forward nothing), or refuse new connections.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    Refuse,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<Mutex<Vec<CancellationToken>>>,
    stop: CancellationToken,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watcher) = watch::channel(Mode::Pass);
        let connections: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
        let stop = CancellationToken::new();
        let (registry, stopped) = (connections.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => return,
                    },
                };
                if *watcher.borrow() == Mode::Refuse {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let cut = stopped.child_token();
                registry.lock().unwrap().push(cut.clone());
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(
                    client_read,
                    server_write,
                    watcher.clone(),
                    cut.clone(),
                ));
                tokio::spawn(pipe(server_read, client_write, watcher.clone(), cut));
            }
        });
        Self {
            addr,
            mode,
            connections,
            stop,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Closes every open connection, both sides, at once.
    pub fn reset(&self) {
        for cut in self.connections.lock().unwrap().drain(..) {
            cut.cancel();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies one direction until either side closes or the connection is cut; while blackholed,
/// reads go on but nothing is written.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    cut: CancellationToken,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = cut.cancelled() => break,
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        if *mode.borrow() == Mode::Blackhole {
            continue;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    cut.cancel();
    let _ = to.shutdown().await;
}
