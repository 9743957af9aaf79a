//! The committed `crds/*.yaml` must be exactly what the Rust types generate,
//! so a type change cannot ship without its CRD. Regenerate with
//! `PGHERD_BLESS=1 cargo test -p pgherd-shared --features crd --test crds`.
#![cfg(feature = "crd")]

use std::path::PathBuf;

use pgherd_shared::crd::{crds, CRD_FILES};

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn committed_crds_match_the_types() {
    let bless = std::env::var_os("PGHERD_BLESS").is_some();
    let mut stale = Vec::new();
    for (crd, file) in crds().iter().zip(CRD_FILES) {
        let generated = serde_yaml_ng::to_string(crd).unwrap();
        let path = crd_dir().join(file);
        if bless {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/{stale:?} differ from the generated CRDs; run PGHERD_BLESS=1 cargo test -p pgherd-shared --features crd --test crds"
    );
}

#[test]
fn crds_keep_zalando_names() {
    let names: Vec<String> = crds()
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "postgresqls.acid.zalan.do",
            "operatorconfigurations.acid.zalan.do",
            "postgresteams.acid.zalan.do"
        ]
    );
    let pg = &crds()[0];
    assert_eq!(pg.spec.names.kind, "postgresql");
    assert_eq!(
        pg.spec.names.short_names.as_deref(),
        Some(&["pg".to_string()][..])
    );
    assert!(pg.spec.versions[0]
        .subresources
        .as_ref()
        .unwrap()
        .status
        .is_some());
}
