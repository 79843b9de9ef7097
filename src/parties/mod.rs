//! The parties to a case: who sues, who defends, who testifies, and who represents them.

pub mod http;
pub mod model;
pub mod ops;
