//! Passwords as Postgres stores them, computed here so the clear text never reaches the server, its logs or
//! `pg_stat_activity` (libpq's `PQencryptPasswordConn` does the same).
//!
//! A fresh SCRAM verifier has a random salt, so comparing hashes would change every role on every sync.
//! Instead the stored verifier is checked against the Secret's password with the verifier's own salt and
//! iteration count: an unchanged password issues no statement.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// `password_encryption`: how a new password is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    ScramSha256,
    Md5,
}

impl Encryption {
    /// From the manifest's `postgresql.parameters.password_encryption`; Postgres's default (scram-sha-256)
    /// when unset. `on`/`md5` are md5, as in Postgres before 14.
    pub fn from_setting(value: Option<&str>) -> Result<Self, String> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("scram-sha-256") => Ok(Encryption::ScramSha256),
            Some("md5") | Some("on") | Some("true") => Ok(Encryption::Md5),
            Some(other) => Err(format!(
                "password_encryption {other:?} is neither scram-sha-256 nor md5"
            )),
        }
    }
}

/// What to store for `password` of role `user`. A value that already is a verifier or an md5 hash is stored
/// as it is (upstream passes them through too).
pub fn hash(password: &str, user: &str, encryption: Encryption) -> String {
    if is_hashed(password) {
        return password.to_string();
    }
    match encryption {
        Encryption::ScramSha256 => postgres_protocol::password::scram_sha_256(password.as_bytes()),
        Encryption::Md5 => postgres_protocol::password::md5(password.as_bytes(), user),
    }
}

fn is_hashed(s: &str) -> bool {
    s.starts_with("SCRAM-SHA-256$")
        || (s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether the stored `rolpassword` of `user` (`None`: no password) already is `password` stored with
/// `encryption`. A password stored with the other method counts as different, so switching
/// `password_encryption` re-stores every password.
pub fn matches(stored: Option<&str>, password: &str, user: &str, encryption: Encryption) -> bool {
    let Some(stored) = stored.filter(|s| !s.is_empty()) else {
        return false;
    };
    if is_hashed(password) {
        return stored == password;
    }
    match encryption {
        Encryption::Md5 => stored == postgres_protocol::password::md5(password.as_bytes(), user),
        Encryption::ScramSha256 => scram_matches(stored, password).unwrap_or(false),
    }
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5803) recomputed with its own salt.
fn scram_matches(stored: &str, password: &str) -> Option<bool> {
    let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    let iterations: u32 = iterations.parse().ok()?;
    let salt = STANDARD.decode(salt).ok()?;
    // SASLprep where it applies, else the raw bytes: what Postgres and libpq do.
    let prepared = match stringprep::saslprep(password) {
        Ok(p) => p.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    };
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2::<Hmac<Sha256>>(&prepared, &salt, iterations, &mut salted).ok()?;
    let key = |label: &[u8]| {
        let mut mac = Hmac::<Sha256>::new_from_slice(&salted).expect("any key length");
        mac.update(label);
        mac.finalize().into_bytes()
    };
    let client_key = key(b"Client Key");
    let computed_stored = Sha256::digest(client_key);
    let computed_server = key(b"Server Key");
    Some(
        STANDARD.encode(computed_stored) == stored_key
            && STANDARD.encode(computed_server) == server_key,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_scram_verifier_matches_its_password_and_no_other() {
        let v = hash("s3cr'et$$", "app", Encryption::ScramSha256);
        assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        assert!(matches(
            Some(&v),
            "s3cr'et$$",
            "app",
            Encryption::ScramSha256
        ));
        assert!(!matches(
            Some(&v),
            "s3cr'et$",
            "app",
            Encryption::ScramSha256
        ));
        // Stored with SCRAM, wanted md5: different.
        assert!(!matches(Some(&v), "s3cr'et$$", "app", Encryption::Md5));
    }

    /// Verifiers Postgres 15 stored for `CREATE ROLE x PASSWORD 'foobar'` and `CREATE ROLE y PASSWORD
    /// 'pässwörd '` (non-ASCII, SASLprep'd), so the check agrees with the server, not only with our own
    /// hashing.
    #[test]
    fn verifiers_made_by_postgres_match() {
        let x = "SCRAM-SHA-256$4096:tIzgbOqeVGe1Zi7ilC9dmQ==$NsLtlDm739uhrgJn+pY9ttAuluCq3Ti+CSZP0nv6HSs=:7lopnna1wVj2eRW2zqCeKNZSFkdf8qL7AW19jMb9o6Q=";
        assert!(matches(Some(x), "foobar", "x", Encryption::ScramSha256));
        assert!(!matches(Some(x), "foobaz", "x", Encryption::ScramSha256));
        let y = "SCRAM-SHA-256$4096:wiD9ZzGXBLzWVA5yRKso4A==$S2F50zwtfUfFK/cnUmECbgoGfQvhbXh5w/ieC73uISo=:lgWOtSEzOhbuGn7mfuimaxGylQnKtK1VUPSA1Y56BHI=";
        assert!(matches(Some(y), "pässwörd ", "y", Encryption::ScramSha256));
    }

    #[test]
    fn md5_is_salted_with_the_user_name() {
        // md5("pw" || "alice"), as Postgres stores it.
        let h = hash("pw", "alice", Encryption::Md5);
        assert_eq!(h, "md5aa7bb6fc2700e717ae61ec5c1567469c");
        assert!(matches(Some(&h), "pw", "alice", Encryption::Md5));
        assert!(!matches(Some(&h), "pw", "bob", Encryption::Md5));
    }

    #[test]
    fn hashed_values_pass_through_and_no_password_never_matches() {
        let v = hash("x", "u", Encryption::ScramSha256);
        assert_eq!(hash(&v, "u", Encryption::Md5), v);
        assert!(matches(Some(&v), &v, "u", Encryption::Md5));
        assert!(!matches(None, "x", "u", Encryption::ScramSha256));
        assert!(!matches(Some(""), "x", "u", Encryption::ScramSha256));
        assert!(!matches(Some("garbage"), "x", "u", Encryption::ScramSha256));
    }

    #[test]
    fn encryption_settings() {
        assert_eq!(Encryption::from_setting(None), Ok(Encryption::ScramSha256));
        assert_eq!(Encryption::from_setting(Some("MD5")), Ok(Encryption::Md5));
        assert!(Encryption::from_setting(Some("sha1")).is_err());
    }
}
