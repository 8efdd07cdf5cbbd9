//! `[scoring]`: the peer score and the automatic bans it leads to (the core's
//! [`ScoreConfig`], whose doc says where each weight came from).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sorcha_peer_core::score::ScoreConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScoringConfig {
    /// Ban peers automatically when their score falls below `ban_threshold`. Off: offences
    /// are still counted and scores shown, nobody is banned but by the operator.
    pub enabled: bool,
    /// The score (negative) below which a peer is banned.
    pub ban_threshold: f64,
    /// Time for a score to decay halfway back to 0.
    #[serde(with = "super::duration")]
    pub half_life: Duration,
    /// First automatic ban's length; each repeat doubles it...
    #[serde(with = "super::duration")]
    pub ban_base: Duration,
    /// ... up to this.
    #[serde(with = "super::duration")]
    pub ban_cap: Duration,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        // The core's defaults, with their reasons (crates/core/src/score.rs).
        let core = ScoreConfig::default();
        Self {
            enabled: core.enabled,
            ban_threshold: core.ban_threshold,
            half_life: core.half_life,
            ban_base: core.ban_base,
            ban_cap: core.ban_cap,
        }
    }
}

impl ScoringConfig {
    /// The core's knobs; weights keep the core's defaults.
    pub fn core(&self) -> ScoreConfig {
        ScoreConfig {
            enabled: self.enabled,
            ban_threshold: self.ban_threshold,
            half_life: self.half_life,
            ban_base: self.ban_base,
            ban_cap: self.ban_cap,
            ..ScoreConfig::default()
        }
    }

    /// Refusals of bad values, as (key, why).
    pub(super) fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !(self.ban_threshold.is_finite() && self.ban_threshold < 0.0) {
            let why = format!("{} is not a negative number", self.ban_threshold);
            out.push(("scoring.ban_threshold".to_owned(), why));
        }
        let day = Duration::from_secs(24 * 3600);
        let checks = [
            (
                "scoring.half_life",
                self.half_life,
                Duration::from_secs(1),
                day,
            ),
            (
                "scoring.ban_base",
                self.ban_base,
                Duration::from_secs(1),
                day,
            ),
            ("scoring.ban_cap", self.ban_cap, self.ban_base, 30 * day),
        ];
        for (key, value, min, max) in checks {
            if value < min || value > max {
                let why = format!("{value:?} is outside {min:?} to {max:?}");
                out.push((key.to_owned(), why));
            }
        }
        out
    }
}
