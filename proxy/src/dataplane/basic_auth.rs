//! `basic_auth` in `[route.access]`: Basic credentials (RFC 7617) checked
//! against argon2 or bcrypt hashes.
//!
//! A hash is slow on purpose (argon2id as `switchyard hash-password` makes
//! it: ~19 MiB and tens of milliseconds), so it never runs on a data-plane
//! worker: checks go to tokio's blocking pool, at most
//! [`CONCURRENT_CHECKS`] at once (a flood of wrong passwords queues there
//! instead of taking every core and gigabytes). A user, password and hash
//! that checked out are remembered (as a SHA-256 of the three, at most
//! [`REMEMBERED`] of them), so a browser sending the same credentials with
//! every request pays the hash once.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use tokio::sync::Semaphore;

const CONCURRENT_CHECKS: usize = 4;
const REMEMBERED: usize = 1024;

/// Whether the request's `Authorization` names one of `users` with the
/// right password.
pub(crate) async fn admits(users: &[(String, String)], authorization: Option<&[u8]>) -> bool {
    let Some((user, password)) = authorization.and_then(credentials) else {
        return false;
    };
    let Some((_, hash)) = users.iter().find(|(u, _)| u.as_bytes() == user.as_slice()) else {
        return false;
    };
    let key = fingerprint(&user, &password, hash);
    if remembered().lock().unwrap().contains(&key) {
        return true;
    }
    let Ok(_turn) = checks().acquire().await else {
        return false;
    };
    let hash = hash.clone();
    let ok = tokio::task::spawn_blocking(move || verify(&password, &hash))
        .await
        .unwrap_or(false);
    if ok {
        let mut known = remembered().lock().unwrap();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(key);
    }
    ok
}

/// `Basic base64(user:password)` → (user, password).
fn credentials(header: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// The password against an argon2 PHC string or a bcrypt hash.
pub(crate) fn verify(password: &[u8], hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        argon2::Argon2::default()
            .verify_password(password, &parsed)
            .is_ok()
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}

/// An argon2id hash of `password` with a random salt and argon2's default
/// cost (m = 19 MiB, t = 2, p = 1: OWASP's recommendation).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("reading /dev/urandom: {e}"))
}

fn fingerprint(user: &[u8], password: &[u8], hash: &str) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [user, password, hash.as_bytes()] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context
        .finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

fn remembered() -> &'static Mutex<HashSet<[u8; 32]>> {
    static KNOWN: OnceLock<Mutex<HashSet<[u8; 32]>>> = OnceLock::new();
    KNOWN.get_or_init(Default::default)
}

fn checks() -> &'static Semaphore {
    static CHECKS: Semaphore = Semaphore::const_new(CONCURRENT_CHECKS);
    &CHECKS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn the_right_user_and_password_and_nothing_else() {
        let argon = hash_password(b"s3cret:with colon").unwrap();
        assert!(argon.starts_with("$argon2id$"));
        let bcrypt_hash = bcrypt::hash("hunter2", 4).unwrap();
        let users = vec![("ops".to_string(), argon), ("bob".to_string(), bcrypt_hash)];
        assert!(admits(&users, Some(&basic("ops:s3cret:with colon"))).await);
        // Twice: the second from memory.
        assert!(admits(&users, Some(&basic("ops:s3cret:with colon"))).await);
        assert!(admits(&users, Some(&basic("bob:hunter2"))).await);
        assert!(
            admits(&users, Some(b"basic Ym9iOmh1bnRlcjI=")).await,
            "scheme case-blind"
        );
        for wrong in [
            basic("ops:s3cret"),
            basic("bob:hunter3"),
            basic("eve:hunter2"),
            basic("ops"),
            b"Bearer Ym9iOmh1bnRlcjI=".to_vec(),
            b"Basic !!!".to_vec(),
            b"Basic".to_vec(),
        ] {
            assert!(
                !admits(&users, Some(&wrong)).await,
                "{}",
                String::from_utf8_lossy(&wrong)
            );
        }
        assert!(!admits(&users, None).await);
        // A password that checks out for one user is nobody else's.
        assert!(!admits(&users, Some(&basic("bob:s3cret:with colon"))).await);
    }
}
