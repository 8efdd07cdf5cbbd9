//! The HTTP port's accept loop, in place of `axum::serve` (which caps nothing and times
//! nothing out): each connection is admitted by the port's [`ConnLimits`] (total, per address,
//! new per address per minute), watched for idleness ([`Watched`]), and served by hyper with a
//! header-read timeout (`limits.header_timeout`: a client that trickles its headers is
//! closed). On shutdown it stops accepting and lets each connection finish its requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::transport::limits::conns::{ConnGuard, ConnLimits, Watched};

/// Serves `app` on `listener` within `limits` until `shutdown`, then waits for the
/// connections to finish what they are doing.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<ConnLimits>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let (stop, stopping) = watch::channel(false);
    let (all_closed, open) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (mut stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP port: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(guard) = limits.admit(remote.ip()) else {
            continue; // counted; dropping the stream closes it
        };
        crate::transport::grpc::no_delay(&mut stream);
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            remote,
            stopping: stopping.clone(),
            _open: open.clone(),
        };
        tokio::spawn(connection.serve(stream, guard));
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open);
    // Every connection holds a clone of `open`: closed() returns when the last one has ended.
    all_closed.closed().await;
    Ok(())
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: Builder<TokioExecutor>,
    app: Router,
    remote: SocketAddr,
    stopping: watch::Receiver<bool>,
    /// Dropped when the connection ends (the loop waits for all of them at shutdown).
    _open: watch::Receiver<()>,
}

impl Connection {
    async fn serve(self, stream: TcpStream, guard: ConnGuard) {
        let limits = guard.limits().clone();
        let remote = self.remote;
        let app = self.app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // What `into_make_service_with_connect_info` gave the handlers before.
            request.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(request)
        });
        let watched = Watched::new(stream, guard);
        let served = watched.served();
        let io = TokioIo::new(watched);
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        let mut stopping = self.stopping.clone();
        let stop = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = stop => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            let timed_out = e
                .downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout);
            // hyper's header timer also runs while a keep-alive connection waits for its
            // next request: that is a connection left idle, not a slow client.
            if timed_out && served.load(Ordering::Relaxed) {
                limits.closed("keepalive_timeout");
            } else if timed_out {
                limits.closed("header_timeout");
            }
            tracing::debug!(peer = %remote, error = %e, "HTTP connection ended with an error");
        }
    }
}
