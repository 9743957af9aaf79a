//! pgherd-coordinator library: pure builders plus a thin Kubernetes shell.
