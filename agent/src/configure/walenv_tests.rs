use super::*;
use std::collections::BTreeMap;
use std::path::Path;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut v: BTreeMap<String, String> = [
        ("RW_DIR", "/run"),
        ("PGROOT", "/home/postgres/pgdata/pgroot"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn files(pairs: &[(&str, &str)], role: Role) -> BTreeMap<String, String> {
    let v = vars(pairs);
    let env = Env::new(&v);
    let layout = Layout::from_env(&env).unwrap();
    let storage = detect(&env, role, &layout)
        .unwrap()
        .expect("storage configured");
    let version = Major::parse("16").unwrap();
    let input = EnvdirInput {
        layout: &layout,
        pg_version: &version,
        cpu_count: 4,
        namespace: "",
    };
    envdir_files(&env, &storage, &input)
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn region_from_bucket_name() {
    assert_eq!(
        region_from_bucket("backups-eu-central-1-prod").as_deref(),
        Some("eu-central-1")
    );
    assert_eq!(
        region_from_bucket("x-us-east-2-y-ap-south-1-z").as_deref(),
        Some("ap-south-1")
    );
    assert_eq!(
        region_from_bucket("s3://b-eu-west-1-c/spilo/x").as_deref(),
        Some("eu-west-1")
    );
    assert_eq!(region_from_bucket("mybucket"), None);
    assert_eq!(
        region_from_bucket("eu-central-1"),
        None,
        "needs a trailing dash"
    );
}

#[test]
fn wale_endpoint_format() {
    assert_eq!(
        split_wale_endpoint("https+virtualhost://h:443"),
        Some(("https", "virtualhost", "://h:443"))
    );
    assert_eq!(split_wale_endpoint("http://h:9000"), None);
    assert_eq!(split_wale_endpoint("http+path://"), None);
}

#[test]
fn two_backends_is_an_error() {
    let v = vars(&[("WAL_S3_BUCKET", "a"), ("WAL_GS_BUCKET", "b")]);
    let env = Env::new(&v);
    let err = detect(&env, Role::Main, &Layout::from_env(&env).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "WAL_S3_BUCKET and WAL_GS_BUCKET: two storage backends configured, pick one"
    );
}

#[test]
fn source_bucket_needs_scope() {
    let v = vars(&[("CLONE_WAL_S3_BUCKET", "a")]);
    let env = Env::new(&v);
    let err = detect(&env, Role::Clone, &Layout::from_env(&env).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "CLONE_WAL_S3_BUCKET: needs CLONE_SCOPE to build the source path (or set CLONE_WALE_S3_PREFIX instead)"
    );
}

#[test]
fn envdir_names() {
    let v = vars(&[
        ("STANDBY_WALG_AZ_PREFIX", "azure://c/p"),
        ("CLONE_WALE_S3_PREFIX", "s3://b/p"),
        ("CLONE_SCOPE", "src"),
    ]);
    let env = Env::new(&v);
    let layout = Layout::from_env(&env).unwrap();
    let standby = detect(&env, Role::Standby, &layout).unwrap().unwrap();
    assert_eq!(standby.env_dir, Path::new("/run/etc/wal-e.d/env-standby"));
    let clone = detect(&env, Role::Clone, &layout).unwrap().unwrap();
    assert_eq!(clone.env_dir, Path::new("/run/etc/wal-e.d/env-clone-src"));
    // Azure sources restore with WAL-G (Spilo used WAL-E, which cannot read Azure).
    assert!(standby.walg_restore && standby.walg_backup);
}

#[test]
fn s3_on_aws_with_walg_backup_gets_sse_and_region_from_bucket() {
    let f = files(
        &[
            ("WAL_S3_BUCKET", "bk-eu-west-1-x"),
            ("SCOPE", "c"),
            ("USE_WALG_BACKUP", "true"),
        ],
        Role::Main,
    );
    assert_eq!(f["AWS_REGION"], "eu-west-1");
    assert_eq!(f["WALG_S3_SSE"], "AES256");
    assert_eq!(f["WALE_S3_PREFIX"], "s3://bk-eu-west-1-x/spilo/c/wal/16");
    assert_eq!(f["WALG_S3_PREFIX"], f["WALE_S3_PREFIX"]);
    assert_eq!(f["WALG_DOWNLOAD_CONCURRENCY"], "4");
    assert_eq!(f["AWS_INSTANCE_PROFILE"], "true");
}

#[test]
fn no_region_when_nothing_names_one() {
    let f = files(
        &[
            ("WAL_S3_BUCKET", "plain"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ],
        Role::Main,
    );
    assert!(!f.contains_key("AWS_REGION"), "{f:?}");
    assert!(!f.contains_key("AWS_INSTANCE_PROFILE"));
    assert_eq!(f["WALE_S3_PREFIX"], "s3://plain/spilo/dummy/wal/16");
}

#[test]
fn walg_prefix_alone_is_mirrored_to_wale() {
    let f = files(&[("WALG_S3_PREFIX", "s3://b/custom")], Role::Main);
    assert_eq!(f["WALE_S3_PREFIX"], "s3://b/custom");
}

#[test]
fn namespace_prefix_unless_explicitly_empty() {
    let v = vars(&[("WAL_GS_BUCKET", "g"), ("SCOPE", "c")]);
    let env = Env::new(&v);
    let layout = Layout::from_env(&env).unwrap();
    let storage = detect(&env, Role::Main, &layout).unwrap().unwrap();
    let version = Major::parse("16").unwrap();
    let input = EnvdirInput {
        layout: &layout,
        pg_version: &version,
        cpu_count: 1,
        namespace: "team",
    };
    let f: BTreeMap<_, _> = envdir_files(&env, &storage, &input)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(f["WALE_GS_PREFIX"], "gs://g/spilo/team-c/wal/16");
    let v = vars(&[
        ("WAL_GS_BUCKET", "g"),
        ("SCOPE", "c"),
        ("WAL_BUCKET_SCOPE_PREFIX", ""),
    ]);
    let env = Env::new(&v);
    let f: BTreeMap<_, _> = envdir_files(&env, &storage, &input)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(f["WALE_GS_PREFIX"], "gs://g/spilo/c/wal/16");
}

#[test]
fn swift_never_uses_walg_and_writes_only_swift_names() {
    let f = files(
        &[
            ("WAL_SWIFT_BUCKET", "sw"),
            ("SWIFT_USER", "u"),
            ("USE_WALG", "true"),
            ("WALG_DELTA_MAX_STEPS", "3"),
        ],
        Role::Main,
    );
    assert_eq!(f["WALE_SWIFT_PREFIX"], "swift://sw/spilo/dummy/wal/16");
    assert_eq!(f["SWIFT_USER"], "u");
    assert!(!f.contains_key("USE_WALG_BACKUP") && !f.contains_key("WALG_DELTA_MAX_STEPS"));
}

#[test]
fn azure_auth_first_option_wins() {
    let v = vars(&[
        ("WALG_AZ_PREFIX", "azure://c"),
        ("AZURE_STORAGE_SAS_TOKEN", "sas"),
        ("AZURE_CLIENT_ID", "i"),
        ("AZURE_CLIENT_SECRET", "s"),
        ("AZURE_TENANT_ID", "t"),
    ]);
    let env = Env::new(&v);
    let layout = Layout::from_env(&env).unwrap();
    let storage = detect(&env, Role::Main, &layout).unwrap().unwrap();
    let version = Major::parse("16").unwrap();
    let input = EnvdirInput {
        layout: &layout,
        pg_version: &version,
        cpu_count: 1,
        namespace: "",
    };
    let f: BTreeMap<_, _> = envdir_files(&env, &storage, &input)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(f["AZURE_STORAGE_SAS_TOKEN"], "sas");
    assert!(!f.contains_key("AZURE_CLIENT_ID"));
    assert!(env
        .take_warnings()
        .iter()
        .any(|w| w.contains("multiple authentication options")));
}

#[test]
fn ssh_backup_with_walg_only_when_complete() {
    let v = vars(&[("WALG_SSH_PREFIX", "ssh://h/p"), ("SSH_USERNAME", "u")]);
    let env = Env::new(&v);
    let s = detect(&env, Role::Main, &Layout::from_env(&env).unwrap())
        .unwrap()
        .unwrap();
    assert!(!s.walg_backup && s.walg_restore);
    let v = vars(&[
        ("WALG_SSH_PREFIX", "ssh://h/p"),
        ("SSH_USERNAME", "u"),
        ("SSH_PORT", "22"),
        ("SSH_PRIVATE_KEY_PATH", "/k"),
    ]);
    let env = Env::new(&v);
    let s = detect(&env, Role::Main, &Layout::from_env(&env).unwrap())
        .unwrap()
        .unwrap();
    assert!(s.walg_backup && s.walg_restore);
}

#[test]
fn use_walg_restore_false_switches_to_wale() {
    let v = vars(&[("WAL_S3_BUCKET", "b"), ("USE_WALG_RESTORE", "false")]);
    let env = Env::new(&v);
    let s = detect(&env, Role::Main, &Layout::from_env(&env).unwrap())
        .unwrap()
        .unwrap();
    assert!(!s.walg_restore);
    let v = vars(&[("WAL_S3_BUCKET", "b"), ("USE_WALG_BACKUP", "maybe")]);
    let env = Env::new(&v);
    let err = detect(&env, Role::Main, &Layout::from_env(&env).unwrap()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("USE_WALG_BACKUP: \"maybe\" is not a boolean"),
        "{err}"
    );
}

#[test]
fn gcs_alias_honours_use_walg() {
    let f = files(&[("WAL_GCS_BUCKET", "g"), ("USE_WALG", "true")], Role::Main);
    assert_eq!(f["USE_WALG_BACKUP"], "true");
    assert_eq!(f["WALG_GS_PREFIX"], "gs://g/spilo/dummy/wal/16");
}
