pub mod membership;
pub mod model;
