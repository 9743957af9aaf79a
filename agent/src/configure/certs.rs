//! TLS material for Postgres and the Patroni REST API.
//!
//! Postgres runs with `ssl: on` and pg_hba rejects non-TLS connections by default, so a server certificate must
//! exist before the first start. Provided certificates are written verbatim; otherwise a self-signed one is
//! generated in-process once (never replaced, so clients that pinned it keep working across restarts).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{date_time_ymd, CertificateParams, DistinguishedName, DnType, KeyPair};

use super::env::Env;
use super::layout::Layout;
use super::write::{OutFile, PUBLIC, SECRET};
use super::Error;

/// Paths that end up in the Patroni configuration.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub crl_file: Option<PathBuf>,
    pub restapi_cert_file: Option<PathBuf>,
    pub restapi_key_file: Option<PathBuf>,
    pub restapi_ca_file: Option<PathBuf>,
}

impl TlsFiles {
    pub fn from_env(env: &Env, layout: &Layout) -> Result<Self, Error> {
        let certs = &layout.certs_dir;
        let optional =
            |name: &str, content: &str, default: &str| -> Result<Option<PathBuf>, Error> {
                match env.get(name) {
                    Some(_) => env.path_or(name, Path::new("/")).map(Some),
                    None => Ok(env.has(content).then(|| certs.join(default))),
                }
            };
        pair_complete(env, "SSL_CERTIFICATE", "SSL_PRIVATE_KEY")?;
        let restapi = pair_complete(env, "SSL_RESTAPI_CERTIFICATE", "SSL_RESTAPI_PRIVATE_KEY")?;
        let restapi_path = |name: &str, default: &str| -> Result<Option<PathBuf>, Error> {
            match env.get(name) {
                Some(_) => env.path_or(name, Path::new("/")).map(Some),
                None => Ok(restapi.then(|| certs.join(default))),
            }
        };
        Ok(TlsFiles {
            cert_file: env.path_or("SSL_CERTIFICATE_FILE", &certs.join("server.crt"))?,
            key_file: env.path_or("SSL_PRIVATE_KEY_FILE", &certs.join("server.key"))?,
            ca_file: optional("SSL_CA_FILE", "SSL_CA", "ca.crt")?,
            crl_file: optional("SSL_CRL_FILE", "SSL_CRL", "server.crl")?,
            restapi_cert_file: restapi_path("SSL_RESTAPI_CERTIFICATE_FILE", "rest-api-server.crt")?,
            // Spilo's default name, typo included: existing deployments reference it.
            restapi_key_file: restapi_path(
                "SSL_RESTAPI_PRIVATE_KEY_FILE",
                "restapi-api-server.key",
            )?,
            restapi_ca_file: optional("SSL_RESTAPI_CA_FILE", "SSL_RESTAPI_CA", "rest-api-ca.crt")?,
        })
    }
}

/// A certificate without its key (or the reverse) is a mistake Spilo papered over with a self-signed cert.
fn pair_complete(env: &Env, cert: &str, key: &str) -> Result<bool, Error> {
    match (env.has(cert), env.has(key)) {
        (true, true) => Ok(true),
        (false, false) => Ok(false),
        (true, false) => Err(Error::invalid(
            cert,
            format!("is set but {key} is not; provide both or neither"),
        )),
        (false, true) => Err(Error::invalid(
            key,
            format!("is set but {cert} is not; provide both or neither"),
        )),
    }
}

/// Machine facts the generated certificate is issued for.
pub struct Subject<'a> {
    pub hostname: &'a str,
    pub ip: Option<&'a str>,
    /// Whether the private key file already exists (then nothing is generated).
    pub key_exists: bool,
}

pub fn certificate_files(
    env: &Env,
    tls: &TlsFiles,
    subject: &Subject,
) -> Result<Vec<OutFile>, Error> {
    let mut files = Vec::new();
    let provided = |content: &str, path: &Path, mode: u32| {
        OutFile::new(path, content.as_bytes().to_vec(), mode)
    };
    match (env.get("SSL_CERTIFICATE"), env.get("SSL_PRIVATE_KEY")) {
        (Some(cert), Some(key)) => {
            files.push(provided(cert, &tls.cert_file, PUBLIC));
            files.push(provided(key, &tls.key_file, SECRET));
        }
        _ if subject.key_exists => {}
        _ => {
            let (cert, key) = self_signed(subject)?;
            files.push(OutFile::new(&tls.cert_file, cert.into_bytes(), PUBLIC).keep_existing());
            files.push(OutFile::new(&tls.key_file, key.into_bytes(), SECRET).keep_existing());
        }
    }
    // Spilo wrote the CA/CRL only together with a provided certificate, leaving ssl_ca_file pointing at nothing
    // when only SSL_CA was given.
    for (content, path) in [
        ("SSL_CA", &tls.ca_file),
        ("SSL_CRL", &tls.crl_file),
        ("SSL_RESTAPI_CA", &tls.restapi_ca_file),
    ] {
        if let (Some(content), Some(path)) = (env.get(content), path) {
            files.push(provided(content, path, PUBLIC));
        }
    }
    if let (Some(cert), Some(key), Some(cert_file), Some(key_file)) = (
        env.get("SSL_RESTAPI_CERTIFICATE"),
        env.get("SSL_RESTAPI_PRIVATE_KEY"),
        &tls.restapi_cert_file,
        &tls.restapi_key_file,
    ) {
        files.push(provided(cert, cert_file, PUBLIC));
        files.push(provided(key, key_file, SECRET));
    }
    Ok(files)
}

/// ECDSA P-256 (what rcgen generates without an RSA-capable backend), valid for ten years from today, named for
/// the member with SANs for its host name, `localhost` and its IP. Spilo's was RSA with `CN=spilo.example.org`,
/// 30 days and no SANs.
fn self_signed(subject: &Subject) -> Result<(String, String), Error> {
    let mut names = vec![subject.hostname.to_string(), "localhost".to_string()];
    names.extend(subject.ip.map(str::to_string));
    // A SAN must be ASCII; an odd host name should not stop the cluster from getting a certificate.
    names.retain(|n| !n.is_empty() && n.is_ascii());
    names.dedup();
    let mut params = CertificateParams::new(names)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject.hostname);
    params.distinguished_name = dn;
    let (year, month, day) = today();
    params.not_before = date_time_ymd(year, month, day);
    params.not_after = date_time_ymd(year + 10, month, day.min(28));
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Today's UTC date (civil-from-days, Howard Hinnant's algorithm), to avoid a date crate for one call.
fn today() -> (i32, u8, u8) {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::map as vars;

    fn render(pairs: &[(&str, &str)], key_exists: bool) -> Result<(TlsFiles, Vec<OutFile>), Error> {
        let v = vars(pairs);
        let env = Env::new(&v);
        let layout = Layout::from_env(&env)?;
        let tls = TlsFiles::from_env(&env, &layout)?;
        let subject = Subject {
            hostname: "pod-0",
            ip: Some("10.0.0.5"),
            key_exists,
        };
        let files = certificate_files(&env, &tls, &subject)?;
        Ok((tls, files))
    }

    #[test]
    fn generates_a_self_signed_pair_once() {
        let (tls, files) = render(&[], false).unwrap();
        assert_eq!(tls.cert_file, Path::new("/run/certs/server.crt"));
        assert_eq!(files.len(), 2);
        assert!(files.iter().all(|f| f.keep_existing));
        assert!(
            String::from_utf8_lossy(&files[0].contents).starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            String::from_utf8_lossy(&files[1].contents).starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert_eq!(files[1].mode, SECRET);
        assert!(render(&[], true).unwrap().1.is_empty());
    }

    #[test]
    fn provided_material_is_written_verbatim() {
        let (tls, files) = render(
            &[
                ("SSL_CERTIFICATE", "CERT"),
                ("SSL_PRIVATE_KEY", "KEY"),
                ("SSL_CRL", "CRL"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            tls.crl_file.as_deref(),
            Some(Path::new("/run/certs/server.crl"))
        );
        let got: Vec<(String, String)> = files
            .iter()
            .map(|f| {
                (
                    f.path.display().to_string(),
                    String::from_utf8(f.contents.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/run/certs/server.crt".to_string(), "CERT".to_string()),
                ("/run/certs/server.key".into(), "KEY".into()),
                ("/run/certs/server.crl".into(), "CRL".into())
            ]
        );
    }

    #[test]
    fn restapi_pair_uses_spilo_names() {
        let (tls, files) = render(
            &[
                ("SSL_RESTAPI_CERTIFICATE", "C"),
                ("SSL_RESTAPI_PRIVATE_KEY", "K"),
                ("SSL_RESTAPI_CA", "A"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            tls.restapi_key_file.as_deref(),
            Some(Path::new("/run/certs/restapi-api-server.key"))
        );
        assert_eq!(files.len(), 3);
    }

    #[test]
    fn half_a_pair_is_an_error() {
        let err = render(&[("SSL_CERTIFICATE", "C")], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "SSL_CERTIFICATE: is set but SSL_PRIVATE_KEY is not; provide both or neither"
        );
    }

    #[test]
    fn civil_date_is_sane() {
        let (y, m, d) = today();
        assert!((2024..2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d));
    }
}
