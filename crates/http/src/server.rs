//! The listener: hyper's HTTP/1 server with the limits a public port needs, which
//! `axum::serve` does not set. A client has [`Limits::header_timeout`] to send a request's
//! headers (from the connection's start or the end of the previous answer, so an idle
//! keep-alive connection is closed after it too); a connection that moves no byte for
//! [`Limits::idle_timeout`] is closed; at most [`Limits::max_connections`] are served at
//! once. When all are taken, a new connection closes the one that has gone longest without
//! a byte and has no request in flight, so that a health probe still gets in while idle
//! clients hold every place; with none such, the new connection is closed at once.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// When every place is taken by a request in flight, one whose connection has sent or
/// received nothing for this long may be closed for a new connection.
const SLOW_CLIENT_AFTER: Duration = Duration::from_secs(1);

/// How long a new connection waits for the place an evicted one frees.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The server's limits on its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a request's headers, counted from the connection's
    /// start or the end of the previous answer. Default 5 s.
    pub header_timeout: Duration,
    /// How long a connection may go without a byte read or written. Default 30 s.
    pub idle_timeout: Duration,
    /// Connections served at once. Default 512.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` completes; then stops
/// accepting, lets the requests in flight finish and closes idle connections.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open = Arc::new(Open::default());
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // wait a moment rather than spin.
                    tracing::warn!(event = docket_queue::telemetry::event::HTTP_ERROR, error.message = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(place) = take_place(&places, &open).await else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = open.add();
        tasks.spawn(serve_connection(
            stream,
            router.clone(),
            limits,
            connection,
            Arc::clone(&open),
            stop.clone(),
            place,
        ));
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// A place for a new connection: a free one, or the one an idle connection gives up.
async fn take_place(places: &Arc<Semaphore>, open: &Open) -> Option<OwnedSemaphorePermit> {
    if let Ok(place) = Arc::clone(places).try_acquire_owned() {
        return Some(place);
    }
    if !open.evict_idlest() {
        tracing::debug!("every connection is busy: a new one is closed");
        return None;
    }
    tokio::time::timeout(EVICTION_WAIT, Arc::clone(places).acquire_owned())
        .await
        .ok()?
        .ok()
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    limits: Limits,
    connection: Arc<Connection>,
    open: Arc<Open>,
    stop: CancellationToken,
    _place: OwnedSemaphorePermit,
) {
    let io = TokioIo::new(Counted {
        inner: stream,
        connection: Arc::clone(&connection),
    });
    let busy = Arc::clone(&connection);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        let guard = Busy::enter(Arc::clone(&busy));
        async move {
            let response = router.oneshot(request.map(Body::new)).await;
            drop(guard);
            response
        }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service);
    tokio::pin!(served);
    let mut closing = false;
    loop {
        let quiet_until = connection.last_active() + limits.idle_timeout;
        tokio::select! {
            result = served.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error.message = %err, "connection ended with an error");
                }
                break;
            }
            () = stop.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            () = connection.evicted.cancelled() => break,
            () = tokio::time::sleep_until(quiet_until.into()) => {
                if connection.last_active().elapsed() >= limits.idle_timeout {
                    tracing::debug!("idle connection closed");
                    break;
                }
            }
        }
    }
    open.remove(connection.id);
}

/// The connections being served, by id (oldest first).
#[derive(Default)]
struct Open {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<Connection>>>,
}

impl Open {
    fn add(&self) -> Arc<Connection> {
        let connection = Arc::new(Connection {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            in_flight: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(now_ms()),
            evicted: CancellationToken::new(),
        });
        self.lock().insert(connection.id, Arc::clone(&connection));
        connection
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection with no request in flight that has gone longest without a
    /// byte; when every connection has a request in flight, the one that has gone longest
    /// without a byte if that is over [`SLOW_CLIENT_AFTER`] (a request whose body trickles
    /// in a byte every few seconds is in flight all along: without this, a handful of them
    /// held every place and the health probe was refused). `false` when no connection may go.
    fn evict_idlest(&self) -> bool {
        let mut live = self.lock();
        let quiet = |c: &&Arc<Connection>| c.last_active_ms.load(Ordering::Relaxed);
        let open = || live.values().filter(|c| !c.evicted.is_cancelled());
        let idlest = open()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(quiet)
            .or_else(|| {
                open()
                    .min_by_key(quiet)
                    .filter(|c| c.last_active().elapsed() >= SLOW_CLIENT_AFTER)
            })
            .map(|c| c.id);
        match idlest.and_then(|id| live.remove(&id)) {
            Some(connection) => {
                connection.evicted.cancel();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Connection>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection's state, shared by its task, its I/O and the eviction.
struct Connection {
    id: u64,
    in_flight: AtomicUsize,
    last_active_ms: AtomicU64,
    evicted: CancellationToken,
}

impl Connection {
    fn touch(&self) {
        self.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn last_active(&self) -> Instant {
        epoch() + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }
}

/// A request in flight on a connection (it is not idle until the guard drops).
struct Busy(Arc<Connection>);

impl Busy {
    fn enter(connection: Arc<Connection>) -> Busy {
        connection.in_flight.fetch_add(1, Ordering::AcqRel);
        connection.touch();
        Busy(connection)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The socket, noting each byte that moves as activity.
struct Counted {
    inner: TcpStream,
    connection: Arc<Connection>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.connection.touch();
        }
        result
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.connection.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.connection.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
