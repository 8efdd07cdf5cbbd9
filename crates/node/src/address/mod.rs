//! Network address discovery (placeholder while the pieces land).

pub mod classify;
pub mod external;
pub mod interfaces;
pub mod stun;
pub mod stun_client;
