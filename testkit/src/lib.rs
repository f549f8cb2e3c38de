//! A TCP proxy between a client and PostgreSQL that counts the client's round trips: every
//! extended-protocol exchange the client starts ends with one `Sync` message, and a simple
//! query is one `Query` message. Connect through it with `sslmode=disable` so the stream can be
//! read. The benchmark and the tests use it to count a worker's round trips per erasure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct RoundTripCounter {
    pub addr: SocketAddr,
    round_trips: Arc<AtomicUsize>,
}

impl RoundTripCounter {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let round_trips = Arc::new(AtomicUsize::new(0));
        let counter = round_trips.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let _ = forward_counting(&mut client_read, &mut server_write, &counter).await;
                });
            }
        });
        Ok(Self { addr, round_trips })
    }

    pub fn round_trips(&self) -> usize {
        self.round_trips.load(Ordering::SeqCst)
    }
}

/// Copies frontend messages, counting `Sync` ('S') and `Query` ('Q'). The first message (the
/// start-up message) has no type byte.
async fn forward_counting(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length).await?;
    let mut body = vec![0u8; u32::from_be_bytes(length) as usize - 4];
    from.read_exact(&mut body).await?;
    to.write_all(&length).await?;
    to.write_all(&body).await?;
    loop {
        let mut kind = [0u8; 1];
        from.read_exact(&mut kind).await?;
        from.read_exact(&mut length).await?;
        let mut body = vec![0u8; u32::from_be_bytes(length) as usize - 4];
        from.read_exact(&mut body).await?;
        if kind[0] == b'S' || kind[0] == b'Q' {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        to.write_all(&kind).await?;
        to.write_all(&length).await?;
        to.write_all(&body).await?;
    }
}
