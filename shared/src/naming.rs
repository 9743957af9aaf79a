//! Object names Zalando's operator gives a cluster's resources.
//!
//! Users, dashboards and backup scripts already know these names; pgherd
//! keeps them so a migrated cluster's Secrets, Services and PVCs line up.

/// Replaces `{key}` placeholders as Zalando's `StringTemplate.Format` does.
pub fn format_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// StatefulSet and master Service/Endpoints.
pub fn master_service(cluster: &str) -> String {
    cluster.to_string()
}

pub fn replica_service(cluster: &str) -> String {
    format!("{cluster}-repl")
}

/// Service Patroni creates for its own bookkeeping.
pub fn config_service(cluster: &str) -> String {
    format!("{cluster}-config")
}

/// ConfigMaps (or Endpoints) Patroni keeps its DCS state in.
pub fn patroni_dcs_objects(cluster: &str) -> [String; 4] {
    [
        format!("{cluster}-leader"),
        format!("{cluster}-config"),
        format!("{cluster}-sync"),
        format!("{cluster}-failover"),
    ]
}

/// Name of the PVC the StatefulSet creates for `ordinal`.
pub fn pvc(cluster: &str, ordinal: u32) -> String {
    format!("{DATA_VOLUME}-{cluster}-{ordinal}")
}

/// Volume claim template name (and hence PVC prefix).
pub const DATA_VOLUME: &str = "pgdata";

/// The pod label Patroni keeps set to each member's role, which the Services select on (the operator's
/// `pod_role_label` and Spilo's `KUBERNETES_ROLE_LABEL` default).
pub const ROLE_LABEL: &str = "spilo-role";

/// [`ROLE_LABEL`]'s value on the primary. Patroni 4 names the role `primary`, but Services, users'
/// selectors and scripts match `master`, so the label keeps Zalando's value (Spilo's
/// `KUBERNETES_LEADER_LABEL_VALUE` and `KUBERNETES_STANDBY_LEADER_LABEL_VALUE` defaults).
pub const PRIMARY_ROLE_VALUE: &str = "master";

/// [`ROLE_LABEL`]'s value on a replica.
pub const REPLICA_ROLE_VALUE: &str = "replica";

/// Primary PDB from `pdb_name_format` (default `postgres-{cluster}-pdb`).
pub fn primary_pdb(format: &str, cluster: &str) -> String {
    format_template(format, &[("cluster", cluster)])
}

/// PDB that protects pods labelled `critical-operation=true`.
pub fn critical_op_pdb(cluster: &str) -> String {
    format!("postgres-{cluster}-critical-op-pdb")
}

/// Credentials Secret of `username`, from `secret_name_template`.
///
/// Underscores become dashes because Secret names cannot hold `_`.
pub fn credentials_secret(
    template: &str,
    username: &str,
    cluster: &str,
    namespace: &str,
) -> String {
    let user = username.replace('_', "-");
    format_template(
        template,
        &[
            ("username", &user),
            ("cluster", cluster),
            ("tprkind", "postgresql"),
            ("tprgroup", "acid.zalan.do"),
            ("namespace", namespace),
        ],
    )
}

pub const DEFAULT_SECRET_NAME_TEMPLATE: &str =
    "{username}.{cluster}.credentials.{tprkind}.{tprgroup}";
pub const DEFAULT_PDB_NAME_FORMAT: &str = "postgres-{cluster}-pdb";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zalando_names() {
        assert_eq!(replica_service("acid-test"), "acid-test-repl");
        assert_eq!(config_service("acid-test"), "acid-test-config");
        assert_eq!(pvc("acid-test", 1), "pgdata-acid-test-1");
        assert_eq!(
            primary_pdb(DEFAULT_PDB_NAME_FORMAT, "myapp-database"),
            "postgres-myapp-database-pdb"
        );
        assert_eq!(
            primary_pdb("postgres-{cluster}-databass-budget", "myapp-database"),
            "postgres-myapp-database-databass-budget"
        );
        assert_eq!(
            critical_op_pdb("myapp-database"),
            "postgres-myapp-database-critical-op-pdb"
        );
        assert_eq!(
            credentials_secret(
                DEFAULT_SECRET_NAME_TEMPLATE,
                "foo_user",
                "acid-test",
                "default"
            ),
            "foo-user.acid-test.credentials.postgresql.acid.zalan.do"
        );
        assert_eq!(
            credentials_secret(
                "{namespace}.{username}.{cluster}.credentials.{tprkind}.{tprgroup}",
                "postgres",
                "acid-test",
                "db"
            ),
            "db.postgres.acid-test.credentials.postgresql.acid.zalan.do"
        );
    }
}
