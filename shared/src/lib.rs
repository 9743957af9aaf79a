//! Types and clients used by both pgherd-agent and pgherd-coordinator.

pub mod age;
#[cfg(feature = "crd")]
pub mod crd;
pub mod naming;
pub mod patroni;
#[cfg(feature = "pgtls")]
pub mod pgtls;
pub mod proctree;
