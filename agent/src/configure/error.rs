//! Errors of `configure`. Every variant renders as one line that names what to fix, because the operator reads it
//! in `kubectl logs` of a crash-looping pod and has nothing else to go on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A variable (or a combination, e.g. `WAL_S3_BUCKET and WAL_GS_BUCKET`) has a value we cannot use.
    #[error("{var}: {problem}")]
    Invalid { var: String, problem: String },
    /// A machine figure (member IP, host name) could not be determined and nothing overrides it.
    #[error("{0}")]
    Machine(String),
    #[error("generating the self-signed server certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(var: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Invalid {
            var: var.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
