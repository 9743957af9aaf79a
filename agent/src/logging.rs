//! Logging setup shared by every subcommand.
//!
//! Pods ship logs to aggregators that want one JSON object per line, while a human running a maintenance
//! command in `kubectl exec` wants plain text; `PGHERD_LOG_FORMAT=json` (or `--log-json`) picks the former.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. `RUST_LOG` wins over `default_level` so operators can raise verbosity
/// for one module without rebuilding the image.
pub fn init(json: bool, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Colour only for a human at a terminal: pod logs and Patroni's captured output must stay plain.
    use std::io::IsTerminal;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.init();
    }
}

/// True when the environment asks for JSON logs (`PGHERD_LOG_FORMAT=json`).
pub fn json_requested() -> bool {
    std::env::var("PGHERD_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}
