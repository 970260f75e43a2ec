//! What ACME leaves on disk, under `<state_dir>/acme/` (0700): the account
//! (`account.json`) and each host's certificate chain and key
//! (`certs/<host>.crt` and `.key`), all 0600 and written atomically (a
//! temporary file, fsync, rename), so a crash never leaves half a key and
//! a restart serves what was last issued without a new order.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use switchyard_conf::CertificateConfig;

/// `<state_dir>/acme`.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("acme")
}

pub fn account_path(state_dir: &Path) -> PathBuf {
    dir(state_dir).join("account.json")
}

/// Where `host`'s certificate and key are kept.
pub fn pair(state_dir: &Path, host: &str) -> CertificateConfig {
    let certs = dir(state_dir).join("certs");
    CertificateConfig {
        cert: certs.join(format!("{host}.crt")),
        key: certs.join(format!("{host}.key")),
    }
}

/// The pairs of `hosts` that exist on disk.
pub fn existing(state_dir: &Path, hosts: &[String]) -> Vec<CertificateConfig> {
    hosts
        .iter()
        .map(|host| pair(state_dir, host))
        .filter(|pair| pair.cert.exists() && pair.key.exists())
        .collect()
}

/// Writes `bytes` to `path` readable by the owner only, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    create_private_dir(parent)?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(parent)?.sync_all()
}

/// `dir` and its parents up to the state directory, the ACME ones 0700.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut at = Some(dir);
    while let Some(path) = at {
        if path
            .file_name()
            .is_some_and(|n| n == "acme" || n == "certs")
        {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        }
        if path.file_name().is_some_and(|n| n == "acme") {
            break;
        }
        at = path.parent();
    }
    Ok(())
}

/// Stores `host`'s new chain and key: the key first, so a reader that sees
/// the new certificate also finds its key (the TLS loader waits for both
/// writes to settle anyway).
pub fn store_pair(state_dir: &Path, host: &str, chain: &str, key: &str) -> std::io::Result<()> {
    let pair = pair(state_dir, host);
    write_private(&pair.key, key.as_bytes())?;
    write_private(&pair.cert, chain.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let state = tempfile::tempdir().unwrap();
        store_pair(state.path(), "app.example.com", "CHAIN", "KEY").unwrap();
        let pair = pair(state.path(), "app.example.com");
        assert_eq!(std::fs::read_to_string(&pair.cert).unwrap(), "CHAIN");
        assert_eq!(std::fs::read_to_string(&pair.key).unwrap(), "KEY");
        for path in [&pair.cert, &pair.key] {
            assert_eq!(
                std::fs::metadata(path).unwrap().mode() & 0o777,
                0o600,
                "{path:?}"
            );
        }
        for dir in [dir(state.path()), dir(state.path()).join("certs")] {
            assert_eq!(
                std::fs::metadata(&dir).unwrap().mode() & 0o777,
                0o700,
                "{dir:?}"
            );
        }
        store_pair(state.path(), "app.example.com", "CHAIN2", "KEY2").unwrap();
        assert_eq!(std::fs::read_to_string(&pair.cert).unwrap(), "CHAIN2");
        let leftovers: Vec<_> = std::fs::read_dir(dir(state.path()).join("certs"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "no temporary file left: {leftovers:?}");
        assert_eq!(
            existing(
                state.path(),
                &["app.example.com".into(), "other.example.com".into()]
            ),
            vec![pair]
        );
    }
}
