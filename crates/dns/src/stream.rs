//! Persistent, pipelined stream connections to TCP and DNS-over-TLS upstreams (RFC 7766 §6.2.1,
//! RFC 7858).
//!
//! One connection per upstream carries many queries at once: each query gets a message id that
//! is unique on that connection, a writer task sends the length-framed messages, and a reader
//! task hands each answer to the query with the same id (answers may come out of order). A
//! connection that fails, is closed by the server, or stays idle is dropped; the next query
//! opens a new one (TLS sessions resume through rustls' in-memory session cache). A query whose
//! connection died before its answer arrived is retried once on a fresh connection, which
//! covers the race with a server closing an idle connection. Every wait is bounded by the
//! caller's timeout, and the number of queries pending on one connection is capped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::DnsError;

/// Most queries waiting for an answer on one connection (ids are 16 bits; beyond this the
/// query fails over instead of queueing).
pub const MAX_PENDING_PER_CONNECTION: usize = 4096;
/// Largest CA file read for a DoT upstream.
pub const MAX_CA_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// How an upstream stream is carried.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP (RFC 7766).
    Tcp,
    /// TLS (RFC 7858), verified against the configured CA and server name.
    Tls {
        /// The rustls connector (roots, protocol versions, session cache).
        connector: TlsConnector,
        /// Name the certificate must carry (SNI too when it is a DNS name).
        name: ServerName<'static>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp => f.write_str("Tcp"),
            Transport::Tls { name, .. } => write!(f, "Tls({name:?})"),
        }
    }
}

/// Builds a TLS connector that trusts only the certificates in the PEM file `ca_file`.
pub fn tls_connector(ca_file: &Path) -> Result<TlsConnector, DnsError> {
    let bad = |why: String| DnsError::Config(format!("CA file {}: {why}", ca_file.display()));
    let meta = std::fs::metadata(ca_file).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(bad(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_file).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// The name a DoT upstream's certificate must carry: `tls_name` if given, else its address.
pub fn server_name(
    tls_name: Option<&str>,
    addr: SocketAddr,
) -> Result<ServerName<'static>, DnsError> {
    match tls_name {
        Some(n) => ServerName::try_from(n.to_string())
            .map_err(|e| DnsError::Config(format!("tls_name {n:?}: {e}"))),
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

type Pending = Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>;

struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    alive: AtomicBool,
}

impl Conn {
    fn fail_all(&self) {
        self.alive.store(false, Ordering::SeqCst);
        if let Ok(mut p) = self.pending.lock() {
            // Dropping the senders wakes every waiter at once (fast failover).
            p.clear();
        }
    }
}

/// One upstream reached over a stream transport.
pub struct StreamUpstream {
    addr: SocketAddr,
    transport: Transport,
    idle: Duration,
    slot: tokio::sync::Mutex<Option<Arc<Conn>>>,
    connects: AtomicU64,
}

impl std::fmt::Debug for StreamUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamUpstream")
            .field("addr", &self.addr)
            .field("transport", &self.transport)
            .finish()
    }
}

/// Why one attempt failed.
enum Attempt {
    /// The connection died before the answer: worth one retry on a new connection.
    ConnectionLost,
    /// Timeout, refused connection, full connection: fail over.
    Failed,
}

impl StreamUpstream {
    /// An upstream at `addr`; connections close after `idle` without queries.
    pub fn new(addr: SocketAddr, transport: Transport, idle: Duration) -> Self {
        Self {
            addr,
            transport,
            idle,
            slot: tokio::sync::Mutex::new(None),
            connects: AtomicU64::new(0),
        }
    }

    /// Connections opened so far (a reuse check for tests and metrics).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Sends `query` (a whole DNS message; its id is replaced on the wire) and returns the raw
    /// answer, whose id is the one used on the wire, or `None` on failure or after `timeout`.
    /// `id_hint` seeds the id choice (pass a random value). A connection opened for it is also
    /// counted in `opened`.
    pub async fn query(
        &self,
        query: &[u8],
        id_hint: u16,
        timeout: Duration,
        opened: &AtomicU64,
    ) -> Option<Vec<u8>> {
        if query.len() < 12 || query.len() > u16::MAX as usize {
            return None;
        }
        let deadline = Instant::now() + timeout;
        for _ in 0..2 {
            match self.attempt(query, id_hint, deadline, opened).await {
                Ok(resp) => return Some(resp),
                Err(Attempt::ConnectionLost) if Instant::now() < deadline => continue,
                Err(_) => return None,
            }
        }
        None
    }

    async fn attempt(
        &self,
        query: &[u8],
        id_hint: u16,
        deadline: Instant,
        opened: &AtomicU64,
    ) -> Result<Vec<u8>, Attempt> {
        let conn = self
            .connection(deadline, opened)
            .await
            .ok_or(Attempt::Failed)?;
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut p = conn.pending.lock().map_err(|_| Attempt::Failed)?;
            // `fail_all` marks the connection dead before it empties this map (both under
            // this lock), so a waiter is either registered before the clear (and woken by
            // it) or sees the flag here.
            if !conn.alive.load(Ordering::SeqCst) {
                return Err(Attempt::ConnectionLost);
            }
            if p.len() >= MAX_PENDING_PER_CONNECTION {
                return Err(Attempt::Failed);
            }
            let mut id = id_hint;
            while p.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            p.insert(id, tx);
            id
        };
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(query);
        framed[2..4].copy_from_slice(&id.to_be_bytes());
        let forget = |conn: &Conn| {
            if let Ok(mut p) = conn.pending.lock() {
                p.remove(&id);
            }
        };
        if let Err(e) = conn.tx.try_send(framed) {
            forget(&conn);
            return Err(match e {
                mpsc::error::TrySendError::Closed(_) => {
                    conn.alive.store(false, Ordering::SeqCst);
                    Attempt::ConnectionLost
                }
                mpsc::error::TrySendError::Full(_) => Attempt::Failed,
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(Attempt::ConnectionLost),
            Err(_) => {
                forget(&conn);
                Err(Attempt::Failed)
            }
        }
    }

    /// The live connection, or a new one (one connect at a time; others wait for it).
    async fn connection(&self, deadline: Instant, opened: &AtomicU64) -> Option<Arc<Conn>> {
        let mut slot = tokio::time::timeout_at(deadline, self.slot.lock())
            .await
            .ok()?;
        if let Some(c) = slot.as_ref() {
            if c.alive.load(Ordering::SeqCst) {
                return Some(c.clone());
            }
        }
        *slot = None;
        let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(self.addr))
            .await
            .ok()?
            .ok()?;
        let _ = tcp.set_nodelay(true);
        let (tx, rx) = mpsc::channel(MAX_PENDING_PER_CONNECTION);
        let conn = Arc::new(Conn {
            tx,
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
        });
        match &self.transport {
            Transport::Tcp => {
                tokio::spawn(run(tcp, conn.clone(), rx, self.idle));
            }
            Transport::Tls { connector, name } => {
                let tls = tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp))
                    .await
                    .ok()?
                    .ok()?;
                tokio::spawn(run(tls, conn.clone(), rx, self.idle));
            }
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        opened.fetch_add(1, Ordering::Relaxed);
        *slot = Some(conn.clone());
        Some(conn)
    }
}

/// Drives one connection until it fails, the server closes it, or it is idle with nothing
/// pending.
async fn run<S>(stream: S, conn: Arc<Conn>, mut rx: mpsc::Receiver<Vec<u8>>, idle: Duration)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let reader = async {
        let mut len = [0u8; 2];
        loop {
            if rd.read_exact(&mut len).await.is_err() {
                return;
            }
            let n = u16::from_be_bytes(len) as usize;
            let mut msg = vec![0u8; n];
            if rd.read_exact(&mut msg).await.is_err() {
                return;
            }
            if n < 12 {
                continue;
            }
            let id = u16::from_be_bytes([msg[0], msg[1]]);
            let waiter = conn.pending.lock().ok().and_then(|mut p| p.remove(&id));
            if let Some(w) = waiter {
                let _ = w.send(msg);
            }
        }
    };
    let writer = async {
        loop {
            match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(framed)) => {
                    if wr.write_all(&framed).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    let quiet = conn.pending.lock().map_or(true, |p| p.is_empty());
                    if quiet {
                        // Refuse new queries before closing, so none is sent into a dying
                        // connection.
                        conn.alive.store(false, Ordering::SeqCst);
                        let _ = wr.shutdown().await;
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
    conn.fail_all();
}
