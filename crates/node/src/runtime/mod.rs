//! Start-up and shutdown of a node: identity, the two listeners, the actor.
//!
//! Order of start-up: data dir and identity, then both ports are bound (a port in use fails
//! here, before anything is announced), the bound ports are written to `<data_dir>/ports.json`,
//! the actor and the servers start, and only then `/health/ready` turns 200.
//!
//! Shutdown (SIGINT/SIGTERM, or the future passed to [`run`]): readiness and gRPC health turn
//! to not-serving, every active peer is told we are going away (`PEER_LEAVING`, at most
//! 500 ms), both servers stop accepting, long-lived calls (peers' inbound streams, SSE
//! subscribers) end themselves, the servers finish their in-flight calls within
//! `network.shutdown_grace`, the actor stops once the last handle is gone (its link workers'
//! streams to peers close with it), the transaction store commits what is queued,
//! `ports.json` is removed, and [`run`] returns `Ok`.
//!
//! - [`actor`]: the task that owns the core node; `tasks.rs`: the tasks around it and the
//!   order they stop in; `flusher.rs`: hands the offline queue to gossip.

pub mod actor;
mod flusher;
mod tasks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sorcha_peer_core::link::Service;
use sorcha_peer_core::membership::Contact;
use sorcha_peer_core::model::{
    PeerAdvert, PeerCapabilities, PeerId, PeerNode, Protocol, Timestamp,
};
use sorcha_peer_core::node::Node;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::address::{self, DiscoveryOptions, ExternalAddress, ExternalHost};
use crate::api;
use crate::config::{BootstrapAddr, Config};
use crate::identity::{Identity, IdentityError};
use crate::registers::{RegisterBook, SharedRegisters};
use crate::store::durable::{DurableError, Limits, Loaded, TxDb};
use crate::store::{PeerStore, RegisterAd, StoreError, StoreWriter, WriterConfig};
use crate::telemetry::events::EventKind;
use crate::telemetry::{EventLog, Metrics};
use crate::transport::limits::upload::UploadBudget;
use crate::transport::links::Pushes;
use crate::transport::outbound::TransportSettings;
use crate::transport::tls::{TlsContext, TlsError};
use actor::{Actor, ActorSettings};

/// File in the data dir that tells clients and tests which ports the node bound.
pub const PORTS_FILE: &str = "ports.json";

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
    /// The transaction store could not be opened.
    #[error("{0}")]
    Transactions(#[from] DurableError),
    /// TLS could not be set up (a certificate, key, CA or CRL file).
    #[error("security: {0}")]
    Tls(#[from] TlsError),
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
    std::fs::create_dir_all(&data_dir).map_err(data_error(&data_dir))?;
    let identity = load_identity(&config)?;
    let tls = TlsContext::new(&config.security, &identity)?;
    log_security(&config, &identity, tls.as_deref());
    let metrics = Metrics::for_node(&config.telemetry, &identity.peer_id().to_string())
        .map_err(|e| DaemonError::Metrics(e.to_string()))?;
    let metrics = Arc::new(metrics);
    let (peer_listener, http_listener, ports) = bind_both(&config).await?;
    write_ports(&data_dir, &ports).map_err(data_error(&data_dir))?;
    if config.discovery.bootstrap_nodes.is_empty() {
        tracing::info!(
            "no bootstrap nodes configured: running standalone, Offline until peers register"
        );
    }
    let mut storage = Storage::open(&config)?;
    let admin_token: Arc<str> = api::admin::load_or_create_token(&data_dir)
        .map_err(data_error(&data_dir))?
        .into();

    let clock = crate::clock::Clock::start();
    let node = Node::new(
        config.node(),
        provisional_advert(&config, identity.peer_id(), ports.peer),
        bootstrap_contacts(&config),
        std::mem::take(&mut storage.stored),
        ChaCha8Rng::seed_from_u64(rand::random()),
        clock.now(),
    );
    // One budget for every body we upload: pulled (the services) and pushed (the links).
    let upload = upload_budget(&config, &metrics);
    let with = (tls.clone(), &upload);
    let settings = actor_inputs(&config, &mut storage, with, &metrics, &ports);
    let (mut actor, handle) = Actor::new(
        node,
        clock,
        metrics.clone(),
        storage.writer.handle().clone(),
        storage.transactions.clone(),
        &settings,
    );
    actor.restore(storage.restored);
    actor.restore_bans(std::mem::take(&mut storage.bans));
    let actor_task = tokio::spawn(actor.run());
    let tasks = tasks::Tasks::start(
        &config,
        (peer_listener, http_listener),
        tasks::Credentials {
            identity: Arc::new(identity),
            tls,
            admin_token,
        },
        handle,
        (storage.transactions.clone(), upload),
        actor_task,
        ports.peer,
    );
    let failure = tasks
        .run_until(shutdown, config.network.shutdown_grace)
        .await;
    // The tasks are done, so nothing writes any more: commit what is queued and stop.
    let transactions = storage.transactions;
    let _ = tokio::task::spawn_blocking(move || transactions.shutdown()).await;
    if let Err(e) = storage.writer.shutdown() {
        tracing::warn!(error = %e, "peer store did not close cleanly");
    }
    let _ = std::fs::remove_file(data_dir.join(PORTS_FILE));
    // An OTLP reader pushes its last values here; it blocks, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || metrics.shutdown()).await;
    match failure {
        Some(e) => Err(e),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// The node-wide upload budget (`limits.upload_bytes_per_second`).
fn upload_budget(config: &Config, metrics: &Arc<Metrics>) -> Arc<UploadBudget> {
    let rate = config.limits.upload_bytes_per_second;
    Arc::new(UploadBudget::new(rate, metrics.clone()))
}

/// The actor's settings: what the stores remembered of peers, TLS, the register book and a
/// fresh event log (which records the configuration the node started with).
fn actor_inputs(
    config: &Config,
    storage: &mut Storage,
    (tls, upload): (Option<Arc<TlsContext>>, &Arc<UploadBudget>),
    metrics: &Metrics,
    ports: &Ports,
) -> ActorSettings {
    let pushes = Pushes {
        upload: upload.clone(),
        queue: Some(storage.transactions.clone()),
    };
    let registers = RegisterBook::new(
        own_registers(config),
        Some(storage.writer.handle().clone()),
        std::mem::take(&mut storage.registers),
    )
    .shared();
    let stored = (
        std::mem::take(&mut storage.remembered),
        std::mem::take(&mut storage.refusals),
    );
    let events = Arc::new(EventLog::new(config.log.events as usize, metrics));
    events.record(EventKind::ConfigLoaded, None, config_summary(config, ports));
    actor_settings(config, stored, (tls, pushes), registers, events)
}

fn data_error(data_dir: &Path) -> impl Fn(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    }
}

/// The node's key: the operator's `security.key_file`, else `<data_dir>/node.key` (made on
/// first run).
fn load_identity(config: &Config) -> Result<Identity, DaemonError> {
    let named = configured_id(config);
    Ok(match config.security.key_file.as_str() {
        "" => Identity::load_or_create(&config.data_dir, named)?,
        file => Identity::load(Path::new(file), named)?,
    })
}

/// Says how peers are authenticated, once, at start.
fn log_security(config: &Config, identity: &Identity, tls: Option<&TlsContext>) {
    let mode = config.security.mode.as_str();
    match tls {
        Some(tls) => tracing::info!(
            mode,
            fingerprint = %tls.fingerprint,
            ca = !config.security.ca_file.is_empty(),
            "peer port security"
        ),
        None => tracing::warn!(
            mode,
            "peer port security: plaintext, no peer can prove its id"
        ),
    }
    if identity.is_configured() && tls.is_some() {
        tracing::warn!(
            node_id = %identity.peer_id(),
            key_id = %identity.derived_id(),
            "node_id is not the id of the node's key: peers cannot verify this node's id"
        );
    }
}

/// The node's peer id as [`run`] will load it (creating the data dir and key if needed), for
/// telemetry that starts before the node; `None` if that fails ([`run`] then says why).
pub fn instance_id(config: &Config) -> Option<String> {
    std::fs::create_dir_all(&config.data_dir).ok()?;
    let identity = load_identity(config).ok()?;
    Some(identity.peer_id().to_string())
}

/// The id the operator named, if any (validated with the rest of the configuration).
fn configured_id(config: &Config) -> Option<PeerId> {
    if config.node_id.is_empty() {
        None
    } else {
        config.node_id.parse().ok()
    }
}

/// Binds both ports before anything is announced, so a port in use fails start-up here.
async fn bind_both(config: &Config) -> Result<(TcpListener, TcpListener, Ports), DaemonError> {
    let peer_listener = bind("peer port", config.network.listen).await?;
    let http_listener = bind("HTTP port", config.network.http_listen).await?;
    let peer_addr = local_addr(&peer_listener, config.network.listen);
    let http_addr = local_addr(&http_listener, config.network.http_listen);
    tracing::info!(
        peer = %peer_addr,
        http = %http_addr,
        data_dir = %config.data_dir.display(),
        "listening"
    );
    let ports = Ports {
        peer: peer_addr.port(),
        http: http_addr.port(),
    };
    Ok((peer_listener, http_listener, ports))
}

/// What start-up reads from the data dir, and the stores that stay open while the node runs.
struct Storage {
    /// Peers of the last run, for `Node::new`.
    stored: Vec<PeerNode>,
    /// What transport worked with each of them.
    remembered: Vec<(PeerId, Protocol)>,
    /// What peers refused, and when.
    refusals: Vec<(PeerId, Service, Timestamp)>,
    /// The registers peers advertised.
    registers: Vec<(PeerId, Vec<RegisterAd>)>,
    writer: StoreWriter,
    /// Every accepted transaction, and the offline queue among them.
    transactions: TxDb,
    /// What the transaction store held, for the actor to know and cache again.
    restored: Vec<Loaded>,
    /// The peer score's bans and strike counts.
    bans: Vec<sorcha_peer_core::score::BanRecord>,
}

impl Storage {
    fn open(config: &Config) -> Result<Self, DaemonError> {
        let mut store = PeerStore::open_in(&config.data_dir)?;
        let bans = store.auto_bans(crate::clock::now())?;
        let max = config.discovery.max_peers_in_list as usize;
        let stored = store.load_for_start(crate::clock::now(), max)?;
        tracing::info!(stored = stored.len(), "peer store loaded");
        let remembered = stored
            .iter()
            .filter_map(|p| {
                let protocol = store.preferred_protocol(&p.peer_id).ok().flatten()?;
                Some((p.peer_id.clone(), protocol))
            })
            .collect();
        let refusals = store
            .refusals()?
            .into_iter()
            .filter_map(|(peer, name, at)| Some((peer, Service::from_name(&name)?, at)))
            .collect();
        let registers = store.registers()?;
        let writer = StoreWriter::spawn(store, WriterConfig::default())?;
        let (transactions, restored) = open_transactions(config)?;
        Ok(Self {
            stored,
            remembered,
            refusals,
            registers,
            writer,
            transactions,
            restored,
            bans,
        })
    }
}

/// Our registers as configured: we keep every transaction we see, so a full replica.
fn own_registers(config: &Config) -> Vec<RegisterAd> {
    config
        .registers
        .iter()
        .map(|id| RegisterAd {
            register_id: id.trim().to_owned(),
            has_full_replica: true,
            latest_version: 0,
            is_public: true,
        })
        .collect()
}

/// What worked with each peer, and what each refused, in earlier runs.
type Remembered = (Vec<(PeerId, Protocol)>, Vec<(PeerId, Service, Timestamp)>);

/// The configuration's gist, for the event log.
fn config_summary(config: &Config, ports: &Ports) -> String {
    format!(
        "peer port {}, HTTP port {}, {} bootstrap nodes, data dir {}",
        ports.peer,
        ports.http,
        config.discovery.bootstrap_nodes.len(),
        config.data_dir.display()
    )
}

/// Opens the transaction store and reads back what it holds, within the cache's bounds.
fn open_transactions(config: &Config) -> Result<(TxDb, Vec<Loaded>), DaemonError> {
    let d = &config.distribution;
    let limits = Limits {
        max_transactions: u64::from(d.cache_max_transactions),
        max_bytes: d.cache_max_bytes,
        ttl: d.transaction_cache_ttl,
        max_queued: u64::from(config.offline.max_queue_size),
        max_retries: config.offline.max_retries,
        retry_delay: config.communication.retry_delay,
    };
    let db = TxDb::open_in(&config.data_dir, config.storage.durability, limits)?;
    let since = Timestamp::from_millis(
        crate::clock::now()
            .as_millis()
            .saturating_sub(d.transaction_cache_ttl.as_millis() as u64),
    );
    let restored = db.load_recent(since, d.cache_max_transactions as usize, d.cache_max_bytes)?;
    tracing::info!(
        restored = restored.len(),
        queued = db.pending(),
        durability = ?config.storage.durability,
        "transaction store opened"
    );
    Ok((db, restored))
}

fn actor_settings(
    config: &Config,
    (remembered, refusals): Remembered,
    (tls, pushes): (Option<Arc<TlsContext>>, Pushes),
    registers: SharedRegisters,
    events: Arc<EventLog>,
) -> ActorSettings {
    let d = &config.distribution;
    ActorSettings {
        transport: TransportSettings {
            peer_timeout: config.discovery.peer_timeout,
            max_transaction_size: d.max_transaction_size,
            streaming_threshold: d.streaming_threshold,
            tls,
            own_registers: own_registers(config),
            pushes,
        },
        fetch_timeout: d.fetch_timeout,
        cache_max_transactions: d.cache_max_transactions as usize,
        cache_max_bytes: usize::try_from(d.cache_max_bytes).unwrap_or(usize::MAX),
        cache_ttl: d.transaction_cache_ttl,
        remembered,
        security_mode: config.security.mode.as_str(),
        refusals,
        registers,
        events,
    }
}

/// Finds the advertised address now and every `recheck` after, until stopped. Runs beside the
/// node so a slow STUN server never delays readiness.
async fn address_loop(
    options: DiscoveryOptions,
    recheck: Duration,
    peer_port: u16,
    node: crate::handle::NodeHandle,
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
        last_seen: crate::clock::now(),
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

fn server_failure<E: std::fmt::Display>(
    what: &'static str,
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> DaemonError {
    let message = match result {
        Ok(Ok(())) => "stopped unexpectedly".to_owned(),
        Ok(Err(e)) => e.to_string(),
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

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (not when
/// the future is first polled), so a signal that arrives while the node is still starting is
/// caught too; call it inside the runtime before [`run`].
pub fn termination_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for signals; the node stops only when killed");
                std::future::pending::<()>().await;
            }
        }
    }
}
