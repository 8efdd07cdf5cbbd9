//! One rust-libp2p gossipsub node for peer-lab's `compare-gossipsub` preset: the side-by-side
//! anchor sorcha-peer is measured against. It is used the way rust-libp2p's docs and examples
//! use it, with nothing tuned: tcp + noise + yamux, gossipsub with its default configuration
//! (D = 6, 1 s heartbeat, signed messages), identify + Kademlia to find the peers beyond the
//! bootstrap nodes (gossipsub itself has no peer discovery), one topic.
//!
//! The lab drives it over stdio, one line per command or report:
//! - stdin `publish N SIZE`: publishes message number N as SIZE bytes (N in the first 8 bytes);
//!   stdout `published N UNIX_US` or `publish-error N REASON`.
//! - stdin `status`: stdout `status CONNECTED MESH KNOWN` (connected peers, peers in the topic's
//!   mesh, peers in the Kademlia routing table).
//! - stdout `recv N UNIX_US` when message N first arrives (gossipsub delivers each id once).
//! - stdout `listening MULTIADDR` once, with the /p2p/ suffix the other nodes dial.
//!
//! Times are CLOCK_REALTIME in microseconds, as the lab reads sorcha-peer's, so both sides are
//! timed by the same clock. The node exits when stdin closes (the lab went away).

use std::error::Error;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, noise, tcp, yamux};
use tokio::io::AsyncBufReadExt;

/// The one topic every node subscribes and publishes to.
const TOPIC: &str = "compare-gossipsub";
/// Identify's protocol version string (informational).
const IDENTIFY_VERSION: &str = "/peer-lab-compare/1.0.0";
/// Connections stay open while idle this long: the examples' choice, and the lab's runs are
/// shorter, so the overlay does not thin out between warm-up and traffic.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest message the lab may ask for: gossipsub's default max_transmit_size (64 KiB)
/// less room for the signature, key and framing.
const MAX_SIZE: usize = 60 * 1024;

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    identify: identify::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// The command line: `--listen MULTIADDR` and any number of `--bootstrap MULTIADDR/p2p/ID`.
struct Args {
    listen: Multiaddr,
    bootstrap: Vec<Multiaddr>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = parse_args(std::env::args().skip(1))?;
    let mut swarm = build_swarm()?;
    let topic = gossipsub::IdentTopic::new(TOPIC);
    swarm.behaviour_mut().gossipsub.subscribe(&topic)?;
    swarm
        .behaviour_mut()
        .kad
        .set_mode(Some(kad::Mode::Server));
    swarm.listen_on(args.listen.clone())?;
    for addr in &args.bootstrap {
        if let Some(peer) = peer_of(addr) {
            swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
        }
        swarm.dial(addr.clone())?;
    }
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut announced = false;
    loop {
        tokio::select! {
            line = stdin.next_line() => match line? {
                Some(line) => command(&mut swarm, &topic, &line),
                None => return Ok(()),
            },
            event = swarm.select_next_some() => {
                if let SwarmEvent::NewListenAddr { address, .. } = &event
                    && !announced
                {
                    announced = true;
                    let me = address.clone().with(Protocol::P2p(*swarm.local_peer_id()));
                    say(&format!("listening {me}"));
                }
                on_event(&mut swarm, event);
            }
        }
    }
}

fn build_swarm() -> Result<Swarm<Behaviour>, Box<dyn Error + Send + Sync>> {
    let swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossipsub::Config::default(),
            )?;
            let identify = identify::Behaviour::new(identify::Config::new(
                IDENTIFY_VERSION.to_owned(),
                key.public(),
            ));
            let id = key.public().to_peer_id();
            let kad = kad::Behaviour::new(id, kad::store::MemoryStore::new(id));
            Ok(Behaviour {
                gossipsub,
                identify,
                kad,
            })
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_TIMEOUT))
        .build();
    Ok(swarm)
}

/// Discovery: identify tells Kademlia where a peer listens (Kademlia only learns the addresses
/// it dialled itself), and every peer Kademlia finds is dialled, so that gossipsub, which
/// works on the connections it has, can choose its mesh from the whole network.
fn on_event(swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
            message, ..
        })) => {
            if let Some(n) = number(&message.data) {
                say(&format!("recv {n} {}", unix_us()));
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            for addr in info.listen_addrs {
                swarm.behaviour_mut().kad.add_address(&peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. })) => {
            if !swarm.is_connected(&peer) {
                // A failed dial is retried when Kademlia next reports the peer.
                let _ = swarm.dial(peer);
            }
        }
        _ => {}
    }
}

fn command(swarm: &mut Swarm<Behaviour>, topic: &gossipsub::IdentTopic, line: &str) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["publish", n, size] => {
            let (Ok(n), Ok(size)) = (n.parse::<u64>(), size.parse::<usize>()) else {
                say(&format!("publish-error {n} bad-arguments"));
                return;
            };
            let mut data = vec![0u8; size.clamp(8, MAX_SIZE)];
            data[..8].copy_from_slice(&n.to_be_bytes());
            let at = unix_us();
            match swarm.behaviour_mut().gossipsub.publish(topic.clone(), data) {
                Ok(_) => say(&format!("published {n} {at}")),
                Err(e) => say(&format!("publish-error {n} {e:?}")),
            }
        }
        ["status"] => say(&status(swarm, topic)),
        _ => say(&format!("error unknown command {line:?}")),
    }
}

fn status(swarm: &mut Swarm<Behaviour>, topic: &gossipsub::IdentTopic) -> String {
    let connected = swarm.connected_peers().count();
    let behaviour = swarm.behaviour_mut();
    let mesh = behaviour.gossipsub.mesh_peers(&topic.hash()).count();
    let known: usize = behaviour
        .kad
        .kbuckets()
        .map(|b| b.num_entries())
        .sum();
    format!("status {connected} {mesh} {known}")
}

/// The message number in a body's first 8 bytes.
fn number(data: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?))
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// One report line; a lab that stopped reading is gone, and stdin closing ends the node.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn parse_args(
    mut args: impl Iterator<Item = String>,
) -> Result<Args, Box<dyn Error + Send + Sync>> {
    let mut listen = None;
    let mut bootstrap = Vec::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--bootstrap" => bootstrap.push(value.parse()?),
            _ => return Err(format!("unknown flag {flag}: use --listen, --bootstrap").into()),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen MULTIADDR is required")?,
        bootstrap,
    })
}
