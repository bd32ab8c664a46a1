//! Logging set-up shared by the binaries: tracing to stderr, filtered by
//! `AGORA_LOG` (tracing's env-filter syntax), as text or JSON lines.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `default_filter` applies when
/// `AGORA_LOG` is unset or invalid (e.g. `info` for daemons, `warn` for
/// client commands). Call once, early in `main`.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_env("AGORA_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
