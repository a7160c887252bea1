//! The accept loop: HTTP/1.1 connections with limits that hold whatever
//! clients do. Written on hyper rather than `axum::serve`, which has no
//! header timeout, no connection caps and a shutdown that waits for every
//! client to finish.
//!
//! - **Caps** (`Gate`): at most `http.max_connections` open connections
//!   (lowered to fit the open-files limit, which `raise_open_files_limit`
//!   raises to its hard maximum at start) and `http.max_connections_per_address`
//!   from one client address (an IPv6 /64). A connection past a cap is
//!   closed at once, before a byte is read. An upgraded WebSocket keeps its
//!   connection's place until it closes.
//! - **Time**: a request's headers must arrive within
//!   `http.header_timeout_seconds`, which also bounds how long an idle
//!   keep-alive connection (or one that never sends anything) stays open;
//!   slowloris clients are closed after it.
//! - **Shutdown**: when `stop` turns true, accepting stops, open
//!   connections finish their current request, and after
//!   `http.shutdown_grace_seconds` whatever is left is dropped: a client
//!   holding half-sent headers cannot keep the server from exiting.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    pin::{Pin, pin},
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::watch,
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::{auth::address_key, config::HttpConfig, stopped};

/// File descriptors kept for everything but client connections: the
/// database pool, SQLite's files, logs.
const RESERVED_FILES: u64 = 256;

/// Raises the soft open-files limit to the hard one (systemd's default soft
/// limit of 1 024 would otherwise cap the server at about a thousand
/// sockets) and returns the limit now in force.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the open-files limit");
            None
        }
    }
}

/// The connection cap in force: the configured one, lowered to what the
/// open-files limit leaves for clients.
fn effective_max_connections(configured: usize, open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => configured.min(limit.saturating_sub(RESERVED_FILES).max(1) as usize),
        None => configured,
    }
}

/// Counts open connections, in all and per client address.
#[derive(Clone)]
struct Gate(Arc<GateShared>);

struct GateShared {
    max_total: usize,
    max_per_address: usize,
    // A std Mutex: held for a few instructions, never across an await.
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection's place; given back when dropped.
struct Permit {
    gate: Gate,
    address: IpAddr,
}

impl Gate {
    /// The gate of `settings`, after raising the open-files limit to fit
    /// it as far as the system allows (both logged).
    fn for_settings(settings: &HttpConfig) -> Self {
        let open_files = raise_open_files_limit();
        let max_connections = effective_max_connections(settings.max_connections, open_files);
        if max_connections < settings.max_connections {
            tracing::warn!(
                configured = settings.max_connections,
                max_connections,
                ?open_files,
                "http.max_connections lowered to fit the open-files limit"
            );
        }
        tracing::info!(
            ?open_files,
            max_connections,
            per_address = settings.max_connections_per_address,
            "connection limits"
        );
        Gate::new(max_connections, settings.max_connections_per_address)
    }

    fn new(max_total: usize, max_per_address: usize) -> Self {
        Gate(Arc::new(GateShared {
            max_total,
            max_per_address,
            open: Mutex::new(Open::default()),
        }))
    }

    /// A place for a connection from `client`, unless a cap is reached.
    fn admit(&self, client: IpAddr) -> Result<Permit, Refused> {
        let address = address_key(client);
        let mut open = self.0.open.lock().expect("BUG: gate lock poisoned");
        if open.total >= self.0.max_total {
            return Err(Refused::Total);
        }
        let from_address = open.per_address.entry(address).or_insert(0);
        if *from_address >= self.0.max_per_address {
            return Err(Refused::Address);
        }
        *from_address += 1;
        open.total += 1;
        Ok(Permit {
            gate: self.clone(),
            address,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.gate.0.open.lock().expect("BUG: gate lock poisoned");
        open.total -= 1;
        if let Some(count) = open.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.per_address.remove(&self.address);
            }
        }
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    Total,
    Address,
}

/// A client's stream (TCP, or TLS over it) with its place in the [`Gate`]:
/// the place goes wherever the stream goes, into an upgraded WebSocket too.
struct Counted<S> {
    tcp: S,
    _permit: Permit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `stop`
/// turns true, then gives open connections `shutdown_grace` to finish and
/// drops the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    settings: &HttpConfig,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let gate = Gate::for_settings(settings);
    let header_timeout = Duration::from_secs(settings.header_timeout_seconds);
    let grace = Duration::from_secs(settings.shutdown_grace_seconds);
    let mut connections = JoinSet::new();
    let mut refusals_logged = 0u64;
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            // Shutdown: cancel-safe, nothing is in flight.
            _ = stopped(&mut stop) => break,
            // Reap finished connections so the set stays small. Cancel-safe.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            // A new client. Cancel-safe: accept loses nothing.
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors (EMFILE) and the like: the error is
                    // per accept; wait a moment instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match gate.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(cap) => {
                // Closed before reading anything: a flood costs an accept.
                refusals_logged += 1;
                if refusals_logged.is_power_of_two() {
                    tracing::warn!(client = %peer.ip(), ?cap, refused = refusals_logged, "connection refused: at the connection cap");
                }
                continue;
            }
        };
        // Small WebSocket frames must not wait for Nagle's algorithm (and
        // the peer's delayed ACK): that alone adds ~40 ms to live events.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let counted = Counted {
            tcp,
            _permit: permit,
        };
        let app = app.clone();
        let stop = stop.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let Some(tls) = tls else {
                return serve_connection(counted, app, false, header_timeout, peer, stop).await;
            };
            // The handshake is bounded like the headers it comes before: a
            // client that opens and says nothing costs its place only that
            // long.
            let handshake = tokio::time::timeout(header_timeout, tls.accept(counted.tcp)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    let counted = Counted {
                        tcp: stream,
                        _permit: counted._permit,
                    };
                    serve_connection(counted, app, true, header_timeout, peer, stop).await;
                }
                Ok(Err(err)) => {
                    tracing::debug!(client = %peer, error = %err, "TLS handshake failed")
                }
                Err(_) => tracing::debug!(client = %peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    let finished = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!(
            left = connections.len(),
            "some HTTP connections did not finish within the shutdown grace; closing them"
        );
        connections.shutdown().await;
    }
}

/// Serves one client connection with hyper until it ends, or until `stop`
/// turns true (then the request in flight finishes first).
async fn serve_connection<S>(
    io: Counted<S>,
    app: Router,
    over_tls: bool,
    header_timeout: Duration,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        if over_tls {
            // What a TLS-terminating proxy would say: the session cookie is
            // `Secure` (whatever the client claimed, it is on TLS here).
            request.headers_mut().insert(
                "x-forwarded-proto",
                hyper::header::HeaderValue::from_static("https"),
            );
        }
        app.clone().oneshot(request.map(Body::new))
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = pin!(connection);
    tokio::select! {
        // Served to the end (or upgraded: the socket lives on in its own
        // task). Errors are the client's: a timeout, a malformed request, a
        // reset.
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(client = %peer, error = %err, "connection ended");
            }
        }
        // Shutdown: finish the request in flight, then close.
        _ = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_caps_in_all_and_per_address_and_gives_places_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let _second = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refused::Address));
        let _third = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).err(), Some(Refused::Total));
        drop(first);
        let _again = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).err(), Some(Refused::Total));
    }

    #[test]
    fn an_ipv6_prefix_shares_one_place_count() {
        let gate = Gate::new(10, 1);
        let _held = gate.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            gate.admit("2001:db8::2".parse().unwrap()).err(),
            Some(Refused::Address)
        );
    }

    #[test]
    fn the_cap_fits_the_open_files_limit() {
        assert_eq!(effective_max_connections(10_000, Some(1024)), 768);
        assert_eq!(effective_max_connections(500, Some(1_048_576)), 500);
        assert_eq!(effective_max_connections(500, None), 500);
    }
}
