//! TLS on the server's own listener: HTTPS and WSS on the same port, with
//! rustls (the `ring` provider, the one the rest of the binary links).
//!
//! - **At start** the certificate chain and key (`tls_cert`, `tls_key`: PEM
//!   files) are read and checked: a file that is missing, unreadable, holds
//!   no certificate or key, or a key that does not match the certificate,
//!   refuses the start with a message naming the file and the reason.
//! - **Reload**: the files are read again on SIGHUP and whenever their
//!   modification time changes (checked every [`RELOAD_CHECK`]), so a
//!   certbot or ACME renewal takes effect without a restart. New
//!   handshakes get the new certificate; open connections and sockets keep
//!   running. A reload that fails is logged and the old certificate stays.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ParsedCertificate, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::{sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use crate::stopped;

/// How often the files' modification times are compared.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Why the certificate or key cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    #[error("the TLS certificate file {}: {reason}", path.display())]
    BadCertificate { path: PathBuf, reason: String },
    #[error("the TLS key file {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(PathBuf),
    #[error("the TLS key file {} does not fit the certificate {}: {reason}", key.display(), cert.display())]
    Mismatch {
        key: PathBuf,
        cert: PathBuf,
        reason: String,
    },
}

/// Where the certificate chain and the key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS for the listener: the acceptor, and the certificate it serves,
/// which [`spawn_reloader`] swaps.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: TlsAcceptor,
    current: Arc<Current>,
    files: TlsFiles,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The certificate handshakes get now.
struct Current(RwLock<Arc<CertifiedKey>>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole Arc.
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Reads and checks the files; the error names the file at fault.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = provider();
        let certified = read_certified_key(&files, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::BadCertificate {
                path: files.cert.clone(),
                reason: err.to_string(),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/1.1 only (WebSocket upgrades need it; hyper serves it here).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            current,
            files,
        })
    }

    /// The certificate file served.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }

    /// Reads the files again and, if they are good, serves them from the
    /// next handshake on.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = read_certified_key(&self.files, &provider())?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn read_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadCertificate {
            path: files.cert.clone(),
            reason: err.to_string(),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    };
    ParsedCertificate::try_from(leaf).map_err(|err| TlsError::BadCertificate {
        path: files.cert.clone(),
        reason: err.to_string(),
    })?;
    let pem = read("key", &files.key)?;
    let key =
        PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| TlsError::Mismatch {
        key: files.key.clone(),
        cert: files.cert.clone(),
        reason: err.to_string(),
    })
}

/// When the files were last changed (the later of the two), if readable.
fn modified(files: &TlsFiles) -> Option<SystemTime> {
    let of = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    of(&files.cert).max(of(&files.key))
}

/// Reloads the certificate on SIGHUP and when the files change, until
/// `stop` turns true. Without TLS there is nothing to reload, but SIGHUP
/// is still taken (and logged), so a `systemctl reload` never kills the
/// server.
pub fn spawn_reloader(tls: Option<Tls>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangups = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::hangup(),
        ) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP; TLS files are still reloaded when they change");
                None
            }
        };
        let Some(tls) = tls else {
            loop {
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    Some(()) = async {
                        match hangups.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => tracing::info!("SIGHUP: nothing to reload (no TLS configured)"),
                }
            }
        };
        let mut seen = modified(&tls.files);
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                // Shutdown: cancel-safe.
                _ = stopped(&mut stop) => break,
                // SIGHUP. Cancel-safe.
                Some(()) = async {
                    match hangups.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => "SIGHUP",
                // A look at the files. Cancel-safe.
                _ = tick.tick() => {
                    let now = modified(&tls.files);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    "the files changed"
                }
            };
            match tls.reload() {
                Ok(()) => {
                    tracing::info!(cert = %tls.files.cert.display(), why, "reloaded the TLS certificate")
                }
                Err(err) => {
                    tracing::error!(error = %err, why, "the TLS certificate was not reloaded; the previous one stays in use")
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> TlsFiles {
        let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, certified.cert.pem()).unwrap();
        std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let good = pair(dir.path(), "a.lan");
        let other = pair(dir.path(), "b.lan");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"\x00\xffnot a pem file at all").unwrap();
        let bad_block = dir.path().join("bad-block.pem");
        std::fs::write(
            &bad_block,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let cases = [
            (
                TlsFiles {
                    cert: missing.clone(),
                    key: good.key.clone(),
                },
                "cannot read the TLS certificate file",
            ),
            (
                TlsFiles {
                    cert: good.cert.clone(),
                    key: missing.clone(),
                },
                "cannot read the TLS key file",
            ),
            (
                TlsFiles {
                    cert: garbage.clone(),
                    key: good.key.clone(),
                },
                "holds no PEM certificate",
            ),
            (
                TlsFiles {
                    cert: good.cert.clone(),
                    key: garbage.clone(),
                },
                "holds no PEM private key",
            ),
            // The key file given as the certificate, and the other way round.
            (
                TlsFiles {
                    cert: good.key.clone(),
                    key: good.cert.clone(),
                },
                "holds no PEM certificate",
            ),
            (
                TlsFiles {
                    cert: bad_block.clone(),
                    key: good.key.clone(),
                },
                "the TLS certificate file",
            ),
            (
                TlsFiles {
                    cert: good.cert.clone(),
                    key: other.key.clone(),
                },
                "does not fit the certificate",
            ),
        ];
        for (files, expected) in cases {
            let message = Tls::load(files.clone())
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{files:?}: {message}");
        }
        Tls::load(good).unwrap();
    }

    #[test]
    fn a_reload_swaps_the_certificate_and_a_bad_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let files = pair(dir.path(), "first.lan");
        let tls = Tls::load(files.clone()).unwrap();
        let served = |tls: &Tls| tls.current.0.read().unwrap().cert[0].clone();
        let first = served(&tls);
        let second = pair(dir.path(), "second.lan");
        std::fs::copy(&second.cert, &files.cert).unwrap();
        std::fs::copy(&second.key, &files.key).unwrap();
        tls.reload().unwrap();
        assert_ne!(served(&tls), first);
        let now = served(&tls);
        std::fs::write(&files.key, "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(served(&tls), now);
    }
}
