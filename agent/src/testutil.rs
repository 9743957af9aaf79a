//! Helpers shared by the crate's unit tests.

use std::collections::BTreeMap;

/// A string map (an environment, an envdir) from literal pairs.
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
