//! Start-up and shutdown of a node: identity, the two listeners, the actor.
//!
//! Order of start-up: data dir and identity, then both ports are bound (a port in use fails
//! here, before anything is announced), the bound ports are written to `<data_dir>/ports.json`,
//! the actor and the servers start, and only then `/health/ready` turns 200.
//!
//! Shutdown (SIGINT/SIGTERM, or the future passed to [`run`]): readiness and gRPC health turn
//! to not-serving, both servers stop accepting and finish their in-flight calls within
//! `network.shutdown_grace`, the actor stops once the last handle is gone, `ports.json` is
//! removed, and [`run`] returns `Ok`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sorcha_peer_core::membership::Contact;
use sorcha_peer_core::model::{PeerAdvert, PeerCapabilities, PeerId};
use sorcha_peer_core::node::Node;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::actor::{self, Actor, ActorSettings};
use crate::address::{self, DiscoveryOptions, ExternalAddress, ExternalHost};
use crate::config::{BootstrapAddr, Config};
use crate::grpc::{PeerPortSettings, Services};
use crate::http;
use crate::http::HttpState;
use crate::identity::{Identity, IdentityError};
use crate::metrics::Metrics;
use crate::offline::{self, OfflineQueue, QueueError};
use crate::store::{PeerStore, StoreError, StoreWriter, WriterConfig};

/// File in the data dir that tells clients and tests which ports the node bound.
pub const PORTS_FILE: &str = "ports.json";

/// How long the actor may take to wind down after the servers are done.
const ACTOR_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// The ports a running node bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub peer: u16,
    pub http: u16,
}

impl Ports {
    /// Reads `<data_dir>/ports.json` of a running node.
    pub fn read(data_dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(data_dir.join(PORTS_FILE))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// Why the node could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The data dir could not be created or written.
    #[error("data dir {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The identity could not be loaded or created.
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The peer store could not be opened or read.
    #[error("peer store: {0}")]
    Store(#[from] StoreError),
    /// The offline queue could not be opened.
    #[error("{0}")]
    Queue(#[from] QueueError),
    /// The metrics pipeline could not be built.
    #[error("metrics: {0}")]
    Metrics(String),
    /// A server stopped on its own.
    #[error("{what} server failed: {message}")]
    Server { what: &'static str, message: String },
}

/// Runs a node with `config` until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let data_dir = config.data_dir.clone();
    let data_error = |source| DaemonError::DataDir {
        path: data_dir.clone(),
        source,
    };
    std::fs::create_dir_all(&data_dir).map_err(data_error)?;
    let configured_id = if config.node_id.is_empty() {
        None
    } else {
        // Validated with the rest of the configuration before start-up.
        config.node_id.parse().ok()
    };
    let identity = Identity::load_or_create(&data_dir, configured_id)?;
    let metrics = Arc::new(Metrics::new().map_err(|e| DaemonError::Metrics(e.to_string()))?);

    let peer_listener = bind("peer port", config.network.listen).await?;
    let http_listener = bind("HTTP port", config.network.http_listen).await?;
    let peer_addr = local_addr(&peer_listener, config.network.listen);
    let http_addr = local_addr(&http_listener, config.network.http_listen);
    let ports = Ports {
        peer: peer_addr.port(),
        http: http_addr.port(),
    };
    write_ports(&data_dir, &ports).map_err(data_error)?;
    tracing::info!(
        peer_id = %identity.peer_id(),
        named = identity.is_configured(),
        peer = %peer_addr,
        http = %http_addr,
        data_dir = %data_dir.display(),
        "listening"
    );
    if config.discovery.bootstrap_nodes.is_empty() {
        tracing::info!(
            "no bootstrap nodes configured: running standalone, Offline until peers register"
        );
    }

    let store = PeerStore::open_in(&data_dir)?;
    let stored = store.load_for_start(actor::now(), config.discovery.max_peers_in_list as usize)?;
    tracing::info!(stored = stored.len(), "peer store loaded");
    let remembered = stored
        .iter()
        .filter_map(|p| {
            let protocol = store.preferred_protocol(&p.peer_id).ok().flatten()?;
            Some((p.peer_id.clone(), protocol))
        })
        .collect();
    let writer = StoreWriter::spawn(store, WriterConfig::default())?;
    let queue = offline::share(OfflineQueue::open_in(
        &data_dir,
        u64::from(config.offline.max_queue_size),
        config.offline.max_retries,
        config.communication.retry_delay,
    )?)?;
    tracing::info!(queued = queue.pending(), "offline queue opened");
    let admin_token: Arc<str> = http::admin::load_or_create_token(&data_dir)
        .map_err(data_error)?
        .into();

    let node = Node::new(
        config.node(),
        provisional_advert(&config, identity.peer_id(), ports.peer),
        bootstrap_contacts(&config),
        stored,
        ChaCha8Rng::seed_from_u64(rand::random()),
        actor::now(),
    );
    let d = &config.distribution;
    let settings = ActorSettings {
        peer_timeout: config.discovery.peer_timeout,
        fetch_timeout: d.fetch_timeout,
        max_transaction_size: d.max_transaction_size,
        streaming_threshold: d.streaming_threshold,
        cache_max_transactions: d.cache_max_transactions as usize,
        cache_max_bytes: usize::try_from(d.cache_max_bytes).unwrap_or(usize::MAX),
        cache_ttl: d.transaction_cache_ttl,
        breaker: config.breaker(),
        speaks: config.speaks(),
        remembered,
    };
    let (actor, handle) = Actor::new(node, metrics, writer.handle().clone(), &settings);
    let actor_task = tokio::spawn(actor.run());

    let (stop_tx, stop_rx) = watch::channel(false);
    let address_task = tokio::spawn(address_loop(
        discovery_options(&config),
        config.address.recheck_interval,
        ports.peer,
        handle.clone(),
        stop_rx.clone(),
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let (health, health_service) = tonic_health::server::health_reporter();
    let speaks = config.speaks();
    let port_settings = PeerPortSettings {
        max_transaction_size: config.distribution.max_transaction_size,
        compress_bodies: config.distribution.enable_compression,
        grpc: speaks.grpc,
        stream: speaks.stream,
        rest: speaks.rest,
    };
    let services = Arc::new(Services::new(handle.clone(), queue.clone(), &port_settings));
    let mut grpc_task = tokio::spawn(crate::grpc::serve(
        peer_listener,
        services.clone(),
        health.clone(),
        health_service,
        port_settings,
        stopped(stop_rx.clone()),
    ));
    let flusher_task = tokio::spawn(offline::flusher(
        queue.clone(),
        handle.clone(),
        handle.state(),
        stop_rx.clone(),
    ));
    let http_state = HttpState {
        node: handle,
        ready: ready.clone(),
        admin_token,
        max_transaction_size: config.distribution.max_transaction_size as usize,
        queue,
        services,
    };
    let mut http_task = tokio::spawn(crate::http::serve(
        http_listener,
        http_state,
        stopped(stop_rx),
    ));
    ready.store(true, Ordering::Release);
    tracing::info!("ready");

    let failure = tokio::select! {
        () = shutdown => {
            tracing::info!("shutdown requested: finishing in-flight requests");
            None
        }
        result = &mut grpc_task => Some(server_failure("gRPC", result.map(|r| r.map_err(|e| e.to_string())))),
        result = &mut http_task => Some(server_failure("HTTP", result.map(|r| r.map_err(|e| e.to_string())))),
    };

    ready.store(false, Ordering::Release);
    for name in crate::grpc::SERVICE_NAMES.into_iter().chain([""]) {
        health
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let _ = stop_tx.send(true);
    let grace = config.network.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        if !grpc_task.is_finished() {
            let _ = (&mut grpc_task).await;
        }
        if !http_task.is_finished() {
            let _ = (&mut http_task).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?grace, "in-flight requests did not finish within the shutdown grace; closing them");
        grpc_task.abort();
        http_task.abort();
    }
    // Discovery may be waiting on a STUN server and the flusher on the actor; both hold
    // handles, so they go before the actor.
    address_task.abort();
    let _ = address_task.await;
    flusher_task.abort();
    let _ = flusher_task.await;
    if tokio::time::timeout(ACTOR_STOP_TIMEOUT, actor_task)
        .await
        .is_err()
    {
        tracing::warn!("node actor did not stop in time");
    }
    if let Err(e) = writer.shutdown() {
        tracing::warn!(error = %e, "peer store did not close cleanly");
    }
    let _ = std::fs::remove_file(data_dir.join(PORTS_FILE));
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Finds the advertised address now and every `recheck` after, until stopped. Runs beside the
/// node so a slow STUN server never delays readiness.
async fn address_loop(
    options: DiscoveryOptions,
    recheck: Duration,
    peer_port: u16,
    node: crate::actor::NodeHandle,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let report = tokio::select! {
            report = address::discover(&options, peer_port) => report,
            _ = stop.wait_for(|s| *s) => return,
        };
        node.metrics()
            .stun_responses_ignored_total
            .add(report.stun.ignored_responses, &[]);
        if node.set_address(report).is_err() {
            tracing::warn!("address discovery result dropped: node busy or stopping");
        }
        tokio::select! {
            () = tokio::time::sleep(recheck) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Address discovery as configured, except that a node bound to one IP advertises that IP
/// (it cannot be reached at any other) unless `external_address` says otherwise.
fn discovery_options(config: &Config) -> DiscoveryOptions {
    let mut options = config.address.discovery_options();
    let listen = config.network.listen.ip();
    if options.external_address.is_none() && !listen.is_unspecified() {
        options.external_address = Some(ExternalAddress {
            host: ExternalHost::Ip(listen),
            port: None,
        });
    }
    options
}

/// What we advertise until address discovery has run: the listen IP when the node is bound
/// to one, else the configured override, else loopback (discovery replaces it in moments).
fn provisional_advert(config: &Config, peer_id: &PeerId, port: u16) -> PeerAdvert {
    let listen = config.network.listen.ip();
    let address = if !listen.is_unspecified() {
        listen.to_string()
    } else {
        config
            .address
            .discovery_options()
            .external_address
            .map_or_else(|| "127.0.0.1".to_owned(), |a| a.host.to_string())
    };
    PeerAdvert {
        peer_id: peer_id.clone(),
        address,
        port,
        supported_protocols: config.speaks().protocols(),
        capabilities: PeerCapabilities {
            supports_streaming: config.speaks().stream,
            supports_transaction_distribution: true,
            max_transaction_size: config.distribution.max_transaction_size,
        },
        last_seen: actor::now(),
        is_seed_node: config.discovery.bootstrap_nodes.is_empty(),
    }
}

fn bootstrap_contacts(config: &Config) -> Vec<Contact> {
    config
        .discovery
        .bootstrap_nodes
        .iter()
        // Validated at load time: every entry parses.
        .filter_map(|raw| raw.parse::<BootstrapAddr>().ok())
        .map(|b| Contact::bootstrap(b.host, b.port))
        .collect()
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

/// Resolves once the stop flag is raised (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn server_failure(
    what: &'static str,
    result: Result<Result<(), String>, tokio::task::JoinError>,
) -> DaemonError {
    let message = match result {
        Ok(Ok(())) => "stopped unexpectedly".to_owned(),
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    };
    DaemonError::Server { what, message }
}

/// Writes `ports.json` atomically, so a reader never sees half of it.
fn write_ports(data_dir: &Path, ports: &Ports) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{PORTS_FILE}.tmp"));
    let json = serde_json::to_vec(ports).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, data_dir.join(PORTS_FILE))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn termination_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
