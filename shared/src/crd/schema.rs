//! Schema fragments that `schemars` cannot infer on its own.
//!
//! Zalando's CRD keeps some fields schemaless (`volumeSource`, the global
//! `sidecars`) and validates quantities with regular expressions; the CRD we
//! generate has to accept exactly what upstream accepts, so these are spelled
//! out once here and referenced from the types.

use schemars::{json_schema, Schema, SchemaGenerator};

/// CPU quantity as Zalando's CRD accepts it (`500m`, `1`, `1.5`).
pub const CPU_PATTERN: &str = r"^(\d+m|\d+(\.\d{1,3})?)$";
/// Memory / storage quantity as Zalando's CRD accepts it (`100Mi`, `1Gi`, `1e3`).
pub const MEMORY_PATTERN: &str = r"^(\d+(e\d+)?|\d+(\.\d+)?(e\d+)?[EPTGMK]i?)$";
/// Five-field cron expression as Zalando's CRD accepts it.
pub const CRON_PATTERN: &str = r"^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$";
/// RFC 3339 timestamp with a mandatory UTC offset (clone target time).
pub const TIMESTAMP_PATTERN: &str = r"^([0-9]+)-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9]|60)(\.[0-9]+)?(([+-]([01][0-9]|2[0-3]):[0-5][0-9]))$";

/// An object whose content the API server must keep verbatim.
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A list of arbitrary objects kept verbatim (upstream's global `sidecars`).
pub fn preserve_unknown_object_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "nullable": true,
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}
