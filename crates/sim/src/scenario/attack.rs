//! `[attack]`: when and how hard the attacker roles attack (see `crate::attack`).

use serde::Deserialize;

use super::Dur;

/// When and how hard attackers attack.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttackSpec {
    /// When the first attack tick fires (after the network formed).
    pub start: Dur,
    /// Time between attack ticks.
    pub every: Dur,
    /// Junk hashes a flooder announces to each gossip peer, and an eclipser's fake per tick.
    pub junk_per_tick: usize,
    /// Fake peers an eclipser's identity pushes in one exchange.
    pub fake_adverts: usize,
    /// Honest nodes an eclipser targets per tick.
    pub targets_per_tick: usize,
}

impl Default for AttackSpec {
    fn default() -> Self {
        Self {
            start: Dur(std::time::Duration::from_secs(20)),
            every: Dur(std::time::Duration::from_millis(500)),
            junk_per_tick: 20,
            fake_adverts: 200,
            targets_per_tick: 4,
        }
    }
}
