//! Types and clients used by both pgherd-agent and pgherd-coordinator.
