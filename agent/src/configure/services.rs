//! Configuration for the helpers around Postgres: PAM OAuth2 (human logins) and pgbouncer.

use std::path::{Path, PathBuf};

use super::env::Env;
use super::layout::Layout;
use super::write::{OutFile, PUBLIC, SECRET};
use super::Error;

/// `/etc/pam.d/postgresql` for `PAM_OAUTH2="<https token-info URL> <args...>"`. pg_hba gets `pam` lines whenever
/// the variable is non-empty, so an unusable value would lock humans out; it is an error (Spilo logged it).
pub fn pam_oauth2(env: &Env) -> Result<Option<OutFile>, Error> {
    let Some(args) = env.get("PAM_OAUTH2") else {
        return Ok(None);
    };
    let tokens: Vec<&str> = args.split_whitespace().collect();
    if tokens.len() < 2 {
        return Err(Error::invalid(
            "PAM_OAUTH2",
            "needs the https token-info URL followed by its arguments",
        ));
    }
    let is_https = tokens[0]
        .split_once("://")
        .is_some_and(|(scheme, rest)| scheme.eq_ignore_ascii_case("https") && !rest.is_empty());
    if !is_https {
        return Err(Error::invalid(
            "PAM_OAUTH2",
            format!("first argument must be an https URL, got {:?}", tokens[0]),
        ));
    }
    let content =
        format!("auth sufficient pam_oauth2.so {args}\naccount sufficient pam_oauth2.so\n");
    Ok(Some(OutFile::new(
        Path::new("/etc/pam.d/postgresql"),
        content.into_bytes(),
        PUBLIC,
    )))
}

pub struct Pgbouncer {
    pub config: PathBuf,
    pub files: Vec<OutFile>,
}

/// `PGBOUNCER_CONFIGURATION` and `PGBOUNCER_AUTHENTICATION` (or `PGBOUNCER_AUTH`) written verbatim.
pub fn pgbouncer(env: &Env, layout: &Layout) -> Option<Pgbouncer> {
    let config = env.get("PGBOUNCER_CONFIGURATION")?;
    let dir = layout.rw_dir.join("pgbouncer");
    let mut files = vec![OutFile::new(
        &dir.join("pgbouncer.ini"),
        config.as_bytes().to_vec(),
        SECRET,
    )];
    if let Some(auth) = env
        .get("PGBOUNCER_AUTHENTICATION")
        .or_else(|| env.get("PGBOUNCER_AUTH"))
    {
        files.push(OutFile::new(
            &dir.join("userlist.txt"),
            auth.as_bytes().to_vec(),
            SECRET,
        ));
    }
    Some(Pgbouncer {
        config: dir.join("pgbouncer.ini"),
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::map as vars;

    #[test]
    fn pam_file() {
        let v = vars(&[(
            "PAM_OAUTH2",
            "https://info.example/oauth2 uid realm=/employees",
        )]);
        let f = pam_oauth2(&Env::new(&v)).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(f.contents).unwrap(),
            "auth sufficient pam_oauth2.so https://info.example/oauth2 uid realm=/employees\naccount sufficient pam_oauth2.so\n"
        );
        assert!(pam_oauth2(&Env::new(&vars(&[("PAM_OAUTH2", "")])))
            .unwrap()
            .is_none());
    }

    #[test]
    fn pam_errors() {
        let v = vars(&[("PAM_OAUTH2", "http://x uid")]);
        let err = pam_oauth2(&Env::new(&v)).unwrap_err().to_string();
        assert_eq!(
            err,
            "PAM_OAUTH2: first argument must be an https URL, got \"http://x\""
        );
        let v = vars(&[("PAM_OAUTH2", "https://x")]);
        assert!(pam_oauth2(&Env::new(&v)).is_err());
    }

    #[test]
    fn pgbouncer_files() {
        let v = vars(&[
            ("PGBOUNCER_CONFIGURATION", "[databases]"),
            ("PGBOUNCER_AUTH", "\"u\" \"p\""),
            ("RW_DIR", "/run"),
        ]);
        let env = Env::new(&v);
        let p = pgbouncer(&env, &Layout::from_env(&env).unwrap()).unwrap();
        assert_eq!(p.config, Path::new("/run/pgbouncer/pgbouncer.ini"));
        assert_eq!(p.files.len(), 2);
        assert!(p.files.iter().all(|f| f.mode == SECRET));
    }
}
