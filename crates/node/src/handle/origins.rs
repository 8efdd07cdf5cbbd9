//! Who first announced each transaction a Sorcha peer told us of: a forwarded
//! `NotifyTransaction` names its origin in `sender_peer_id`, as C# fills it (the pull still
//! goes to the caller). Bounded; the oldest entries go first, counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use sorcha_peer_core::model::{PeerId, TxHash};

/// Origins remembered at most: minutes of notifications at high rates. A forgotten origin
/// only makes a later forward name this node instead (which holds the body too).
pub const MAX_ORIGINS: usize = 65_536;

pub type SharedOrigins = Arc<Mutex<Origins>>;

#[derive(Debug, Default)]
pub struct Origins {
    by_hash: HashMap<TxHash, PeerId>,
    order: VecDeque<TxHash>,
    /// Entries forgotten to make room.
    pub evicted: u64,
}

impl Origins {
    pub fn shared() -> SharedOrigins {
        Arc::new(Mutex::new(Self::default()))
    }

    /// Notes that `origin` first announced `hash` (the first word wins).
    pub fn note(&mut self, hash: TxHash, origin: PeerId) {
        if self.by_hash.contains_key(&hash) {
            return;
        }
        if self.order.len() >= MAX_ORIGINS
            && let Some(old) = self.order.pop_front()
        {
            self.by_hash.remove(&old);
            self.evicted += 1;
        }
        self.order.push_back(hash);
        self.by_hash.insert(hash, origin);
    }

    pub fn of(&self, hash: &TxHash) -> Option<&PeerId> {
        self.by_hash.get(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_origin_wins_and_the_book_is_bounded() {
        let mut o = Origins::default();
        let a: PeerId = "node_a".parse().unwrap();
        let b: PeerId = "node_b".parse().unwrap();
        let h = TxHash::of(b"x");
        o.note(h, a.clone());
        o.note(h, b);
        assert_eq!(o.of(&h), Some(&a));
        for i in 0..MAX_ORIGINS as u32 {
            o.note(TxHash::of(&i.to_le_bytes()), a.clone());
        }
        assert_eq!(o.of(&h), None);
        assert_eq!(o.evicted, 1);
    }
}
