//! Cases (matters): the centre of the domain, with their teams and access rules.

pub mod access;
pub mod bulk;
pub mod http;
pub mod model;
pub mod ops;
pub mod sealed;
pub mod team;

pub use ops::CaseView;
