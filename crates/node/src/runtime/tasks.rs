//! The tasks of a running node and the order they stop in.
//!
//! Started once the actor runs: the peer port's servers, the HTTP port's, address discovery
//! and the offline queue's flusher. Stopping is the reverse of what depends on what:
//! readiness and gRPC health turn to not-serving, both servers stop accepting, calls that
//! would never end on their own (a peer's stream, an SSE subscriber) are told to end
//! (`NodeHandle::begin_shutdown`; without it the servers waited out the whole grace), the
//! servers finish their in-flight calls within the grace, then the helpers that hold actor handles
//! (discovery, the flusher) go, and the actor ends once the last handle is gone.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use super::{DaemonError, address_loop, discovery_options, flusher, server_failure, stopped};
use crate::api::{self, HttpShared, HttpState};
use crate::config::Config;
use crate::handle::NodeHandle;
use crate::identity::Identity;
use crate::store::queue::SharedQueue;
use crate::transport::grpc::{self, PeerPortSettings, Services};
use crate::transport::limits::conns::ConnLimits;
use crate::transport::limits::upload::UploadBudget;
use crate::transport::limits::{Limiter, PeerKey};
use crate::transport::tls::connect::Dialer;
use crate::transport::tls::{self, TlsContext};
use sorcha_peer_core::model::PeerId;
use sorcha_peer_core::score::Offence;

/// How long the actor may take to wind down after the servers are done.
const ACTOR_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// How long our going-away may take at most (a quarter of the grace if that is shorter): one
/// call to each active peer, all at once; on loopback or a LAN they answer in milliseconds.
const LEAVING_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) struct Tasks {
    grpc: JoinHandle<Result<(), String>>,
    http: JoinHandle<std::io::Result<()>>,
    address: JoinHandle<()>,
    flusher: JoinHandle<()>,
    actor: JoinHandle<()>,
    health: HealthReporter,
    /// `/health/ready`: true from start-up's end to the shutdown request.
    ready: Arc<AtomicBool>,
    /// Tells the servers and helpers to stop.
    stop: watch::Sender<bool>,
    /// Tells long-lived calls to end; dropped before the actor is awaited (the actor ends
    /// when the last handle is gone).
    node: NodeHandle,
}

/// What the node proves itself with: to peers (its key and TLS setup) and to operators (the
/// admin token).
pub(super) struct Credentials {
    pub identity: Arc<Identity>,
    pub tls: Option<Arc<TlsContext>>,
    pub admin_token: Arc<str>,
}

impl Tasks {
    /// Starts everything around the running actor; the node is ready when this returns.
    pub(super) fn start(
        config: &Config,
        (peer_listener, http_listener): (TcpListener, TcpListener),
        credentials: Credentials,
        node: NodeHandle,
        (queue, upload): (SharedQueue, Arc<UploadBudget>),
        actor: JoinHandle<()>,
        peer_port: u16,
    ) -> Self {
        let Credentials {
            identity,
            tls,
            admin_token,
        } = credentials;
        let (stop, stop_rx) = watch::channel(false);
        let address = tokio::spawn(address_loop(
            discovery_options(config),
            config.address.recheck_interval,
            peer_port,
            node.clone(),
            stop_rx.clone(),
        ));
        let (health, health_service) = tonic_health::server::health_reporter();
        let port_settings = peer_port_settings(config);
        let limits = peer_limits(config, &node, upload);
        let services = Services::new(node.clone(), queue.clone(), &port_settings, limits);
        let services = Arc::new(services);
        let conns = ConnLimits::new("peer", &config.limits, node.metrics().clone());
        let bans = node.clone();
        conns.refuse_banned(Box::new(move |ip| bans.is_banned_ip(ip)));
        let incoming = secure_peer_port(peer_listener, (&tls, identity, conns), &node, &stop_rx);
        let grpc = tokio::spawn(grpc::serve(
            incoming,
            services.clone(),
            health.clone(),
            health_service,
            port_settings,
            stopped(stop_rx.clone()),
        ));
        let flusher = tokio::spawn(flusher::flusher(
            queue.clone(),
            node.clone(),
            node.state(),
            stop_rx.clone(),
        ));
        let ready = Arc::new(AtomicBool::new(false));
        // The admin API's pings prove nothing to membership: the actor's own dials do that.
        let dialer = Arc::new(Dialer::new(
            tls.clone(),
            node.metrics().clone(),
            Arc::new(|_: &PeerId| {}),
        ));
        let http_state = HttpState::new(HttpShared {
            dialer,
            open_submission: config.api.open_submission,
            node: node.clone(),
            ready: ready.clone(),
            admin_token,
            max_transaction_size: config.distribution.max_transaction_size as usize,
            queue,
            services,
        });
        let conns = ConnLimits::new("http", &config.limits, node.metrics().clone());
        let http = api::serve(http_listener, http_state, conns, stopped(stop_rx));
        let http = tokio::spawn(http);
        ready.store(true, Ordering::Release);
        tracing::info!("ready");
        tell_service_manager(&[sd_notify::NotifyState::Ready]);
        Self {
            grpc,
            http,
            address,
            flusher,
            actor,
            health,
            ready,
            stop,
            node,
        }
    }

    /// Runs until `shutdown` completes or a server fails, then stops everything; the failure,
    /// if one ended the run.
    pub(super) async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
    ) -> Option<DaemonError> {
        let failure = tokio::select! {
            () = shutdown => {
                tracing::info!("shutdown requested: finishing in-flight requests");
                None
            }
            result = &mut self.grpc => Some(server_failure("gRPC", result)),
            result = &mut self.http => Some(server_failure("HTTP", result)),
        };
        self.stop(grace).await;
        failure
    }

    async fn stop(mut self, grace: Duration) {
        self.ready.store(false, Ordering::Release);
        tell_service_manager(&[sd_notify::NotifyState::Stopping]);
        for name in grpc::SERVICE_NAMES.into_iter().chain([""]) {
            self.health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
        // Peers hear it from us before our streams end, so they take us out of their active
        // sets at once rather than after their heartbeats to us fail.
        let told = self
            .node
            .say_leaving((grace / 4).min(LEAVING_TIMEOUT))
            .await;
        tracing::debug!(peers = told, "told peers we are shutting down");
        let _ = self.stop.send(true);
        self.node.begin_shutdown();
        drop(self.node);
        let drained = tokio::time::timeout(grace, async {
            if !self.grpc.is_finished() {
                let _ = (&mut self.grpc).await;
            }
            if !self.http.is_finished() {
                let _ = (&mut self.http).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(grace = ?grace, "in-flight requests did not finish within the shutdown grace; closing them");
            self.grpc.abort();
            self.http.abort();
        }
        // Discovery may be waiting on a STUN server and the flusher on the actor; both hold
        // handles, so they go before the actor.
        self.address.abort();
        let _ = self.address.await;
        self.flusher.abort();
        let _ = self.flusher.await;
        if tokio::time::timeout(ACTOR_STOP_TIMEOUT, self.actor)
            .await
            .is_err()
        {
            tracing::warn!("node actor did not stop in time");
        }
    }
}

/// systemd's `Type=notify` (`READY=1` once both ports listen, `STOPPING=1` on shutdown); does
/// nothing unless the service manager set `NOTIFY_SOCKET`.
fn tell_service_manager(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The peer port's connections, past their TLS handshakes; and, with TLS, the task that keeps
/// the certificate and the CA's CRLs current.
fn secure_peer_port(
    listener: TcpListener,
    (tls, identity, conns): (&Option<Arc<TlsContext>>, Arc<Identity>, Arc<ConnLimits>),
    node: &NodeHandle,
    stop: &watch::Receiver<bool>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<tls::accept::PeerConn>> {
    let metrics = node.metrics().clone();
    if let Some(tls) = tls {
        let maintain = tls::maintain(tls.clone(), identity, metrics.clone(), stop.clone());
        tokio::spawn(maintain);
    }
    tls::accept::incoming(listener, tls.clone(), metrics, conns)
}

/// The per-peer limits of the peer port's services and the node's upload budget.
/// The per-peer limits and the upload budget; a peer held over a limit loses score (and is
/// banned if it keeps at it), by its proven id or else by its address.
fn peer_limits(
    config: &Config,
    node: &NodeHandle,
    upload: Arc<UploadBudget>,
) -> (Arc<Limiter>, Arc<UploadBudget>) {
    let limits = &config.limits;
    let metrics = node.metrics();
    // The largest message a peer may send: a whole body and its framing.
    let max_message = u64::from(config.distribution.max_transaction_size) + 64 * 1024;
    let limiter = Limiter::new(limits, max_message, metrics.clone());
    let score = node.clone();
    limiter.report_to(Box::new(move |key| {
        // Refused only when the actor is saturated, which the handle counts.
        let _ = match key {
            PeerKey::Id(id) => score.note_offence(id.clone(), Offence::LimitExceeded),
            PeerKey::Addr(ip) => score.note_address_offence(*ip, Offence::LimitExceeded),
        };
    }));
    (Arc::new(limiter), upload)
}

fn peer_port_settings(config: &Config) -> PeerPortSettings {
    let speaks = config.speaks();
    PeerPortSettings {
        max_transaction_size: config.distribution.max_transaction_size,
        compress_bodies: config.distribution.enable_compression,
        grpc: speaks.grpc,
        stream: speaks.stream,
        rest: speaks.rest,
    }
}
