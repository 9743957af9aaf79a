//! Helpers shared by the crate's unit tests.

use std::collections::BTreeMap;

/// A string map (an environment, an envdir) from literal pairs.
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An envdir as `crate::envdir::read` returns it (every variable set) from literal pairs.
pub fn envdir_vars(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}
