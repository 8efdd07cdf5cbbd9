//! Helpers shared by the gossip tests.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;

pub(super) fn id(n: usize) -> PeerId {
    format!("node-{n}").parse().expect("test ids are valid")
}

/// Both clocks at `ms` (gossip reads only the monotonic one).
pub(super) fn ms(ms: u64) -> Now {
    Now::from_millis(ms)
}

/// The default config without anti-entropy and without eager push (announce and pull only;
/// `tree.rs` tests the push), so unit tests see only what they cause; a fanout of 3, fewer
/// than the peers most tests give a node.
pub(super) fn quiet() -> GossipConfig {
    GossipConfig {
        anti_entropy_interval: None,
        eager_push_max_size: 0,
        fanout: FanoutMode::Fixed(3),
        ..GossipConfig::default()
    }
}

/// Node `me` with active peers `peers`, outputs of construction drained.
pub(super) fn node(
    me: usize,
    peers: impl IntoIterator<Item = usize>,
    config: GossipConfig,
) -> Gossip {
    let mut g = Gossip::new(config, id(me), ChaCha8Rng::seed_from_u64(me as u64), ms(0));
    let peers: Vec<PeerId> = peers.into_iter().map(id).collect();
    g.set_peers(&peers, ms(0));
    drain(&mut g);
    g
}

pub(super) fn drain(g: &mut Gossip) -> Vec<Output> {
    std::iter::from_fn(|| g.poll_output()).collect()
}

pub(super) fn body(n: usize) -> Vec<u8> {
    format!("transaction number {n}").into_bytes()
}

/// Transaction `n` as one of our peers announces it: by id alone.
pub(super) fn entry(n: usize, hops: u32) -> AnnounceEntry {
    let b = body(n);
    AnnounceEntry {
        id: TxHash::of(&b).id(),
        hash: None,
        size: b.len() as u64,
        register_id: Some("reg-1".into()),
        hops,
    }
}

pub(super) fn announce(entries: Vec<AnnounceEntry>) -> GossipMessage {
    GossipMessage::Announce { entries }
}

pub(super) fn sends(out: &[Output]) -> Vec<(PeerId, GossipMessage)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send { to, message } => Some((to.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

/// Announce messages among `out`, as (target, entries).
pub(super) fn announces(out: &[Output]) -> Vec<(PeerId, Vec<AnnounceEntry>)> {
    sends(out)
        .into_iter()
        .filter_map(|(to, m)| match m {
            GossipMessage::Announce { entries } => Some((to, entries)),
            _ => None,
        })
        .collect()
}

pub(super) fn fetches(out: &[Output]) -> Vec<(PeerId, TxId)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Fetch { from, id, .. } => Some((from.clone(), *id)),
            _ => None,
        })
        .collect()
}

/// The ids of the transactions delivered.
pub(super) fn delivered(out: &[Output]) -> Vec<TxId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Deliver { hash, .. } => Some(hash.id()),
            _ => None,
        })
        .collect()
}

/// The ids of the transactions stored.
pub(super) fn stored(out: &[Output]) -> Vec<TxId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Store { hash, .. } => Some(hash.id()),
            _ => None,
        })
        .collect()
}

pub(super) fn events(out: &[Output]) -> Vec<GossipEvent> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Fires the flush timer at `now` and returns the outputs.
pub(super) fn flush(g: &mut Gossip, now: Now) -> Vec<Output> {
    g.handle_timer(Timer::Flush, now);
    drain(g)
}

/// The push of transaction `n`, one hop from its origin.
pub(super) fn push_of(n: usize) -> GossipMessage {
    push_at(n, 1)
}

/// The push of transaction `n`, `hops` from its origin.
pub(super) fn push_at(n: usize, hops: u32) -> GossipMessage {
    GossipMessage::Push {
        entry: entry(n, hops),
        body: body(n),
    }
}

/// The peers pushed to among `out`, sorted.
pub(super) fn pushed_to(out: &[Output]) -> Vec<PeerId> {
    let mut to: Vec<PeerId> = sends(out)
        .into_iter()
        .filter(|(_, m)| matches!(m, GossipMessage::Push { .. }))
        .map(|(to, _)| to)
        .collect();
    to.sort();
    to
}

/// The peers sent `kind` among `out`.
pub(super) fn sent(out: &[Output], kind: GossipMessage) -> Vec<PeerId> {
    sends(out)
        .into_iter()
        .filter(|(_, m)| *m == kind)
        .map(|(to, _)| to)
        .collect()
}
