//! Postgres sizing from the machine figures, identical to Spilo's formulas so an existing cluster keeps its
//! settings when it moves to pgherd.

/// `shared_buffers`: a quarter of the memory, a fifth on Kubernetes (where the limit also covers page cache
/// pressure from sidecars), in whole MiB.
pub fn shared_buffers(memory_mb: u64, kubernetes: bool) -> String {
    let ratio = if kubernetes { 5 } else { 4 };
    format!("{}MB", memory_mb / ratio)
}

/// `max_connections`: one per 30 MiB, at least 100, at most 1000. Only applied when the cluster is created
/// (it lives in `bootstrap.dcs`).
pub fn max_connections(memory_mb: u64) -> u64 {
    (memory_mb / 30).clamp(100, 1000)
}

/// Default `WALG_{DOWNLOAD,UPLOAD}_CONCURRENCY`: one stream per CPU, at most 10.
pub fn walg_concurrency(cpu_count: u32) -> String {
    cpu_count.clamp(1, 10).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_spilo_for_the_reference_machine() {
        // The fixtures were generated on a 24105 MiB, 2-CPU machine.
        assert_eq!(shared_buffers(24105, false), "6026MB");
        assert_eq!(shared_buffers(24105, true), "4821MB");
        assert_eq!(max_connections(24105), 803);
        assert_eq!(walg_concurrency(2), "2");
    }

    #[test]
    fn documented_example_4gib_on_kubernetes() {
        assert_eq!(shared_buffers(4096, true), "819MB");
        assert_eq!(max_connections(4096), 136);
    }

    #[test]
    fn bounds() {
        assert_eq!(max_connections(512), 100);
        assert_eq!(max_connections(1 << 20), 1000);
        assert_eq!(walg_concurrency(64), "10");
        assert_eq!(walg_concurrency(0), "1");
        assert_eq!(shared_buffers(3, false), "0MB");
    }
}
