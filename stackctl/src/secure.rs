//! The TLS profile of the local stack (`SECKILL_STACK_TLS=1`; `./dev demo --tls`): what
//! a managed deployment looks like, on this machine.
//!
//! - A throwaway CA and certificates, made once with `openssl` under `<run>/secure`: the
//!   servers' (for `localhost` and `127.0.0.1`) and one client certificate (Kafka
//!   requires it: mutual TLS).
//! - Users with their own passwords (`<run>/secure/secrets/<user>.pass`, mode 0600):
//!   [`ADMIN`] for the stack controller and tools, [`GATEWAY`] and [`WRITER`] for the
//!   components.
//! - Redis: a `tls-port` only (no plaintext port), `default` user off, ACL users whose
//!   keys are the project's (`sk:*`, `{sk:*`) and whose commands leave out the dangerous
//!   ones (`FLUSHALL`, `CONFIG`, `KEYS`, `DEBUG` …; `INFO` kept for the store checks).
//! - PostgreSQL: `ssl=on`, `hostssl` lines only (SCRAM passwords); the database is owned
//!   by [`ADMIN`] (who migrates: `order-writer migrate`), [`WRITER`] may only read and
//!   write rows.
//! - Kafka: one `SASL_SSL` listener, SCRAM-SHA-512 users made when the storage is
//!   formatted, client certificates required.

use crate::StackError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stack's administrator: the stack controller, tools, tests and migrations.
pub const ADMIN: &str = "seckill_admin";
/// The gateway's user (Redis, Kafka).
pub const GATEWAY: &str = "seckill_gateway";
/// The order-writer's user (Redis, Kafka, PostgreSQL rows).
pub const WRITER: &str = "seckill_writer";
pub const USERS: [&str; 3] = [ADMIN, GATEWAY, WRITER];

/// The TLS material and passwords of the profile, under one directory.
#[derive(Debug, Clone)]
pub struct Secure {
    pub dir: PathBuf,
}

impl Secure {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    /// Key and certificate in one file: Kafka's PEM key store.
    pub fn server_keystore(&self) -> PathBuf {
        self.dir.join("server-keystore.pem")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
    pub fn password_file(&self, user: &str) -> PathBuf {
        self.dir.join("secrets").join(format!("{user}.pass"))
    }

    pub fn password(&self, user: &str) -> Result<String, StackError> {
        let f = self.password_file(user);
        std::fs::read_to_string(&f)
            .map(|p| p.trim().to_string())
            .map_err(StackError::failed(format!("read {}", f.display())))
    }

    /// Make what is missing: the CA, the certificates, a password per user.
    pub fn ensure(&self) -> Result<(), StackError> {
        let secrets = self.dir.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        for user in USERS {
            let f = self.password_file(user);
            if !f.is_file() {
                write_private(&f, &random_hex(24)?)?;
            }
        }
        if self.client_key().is_file() && self.server_keystore().is_file() {
            return Ok(());
        }
        let ca_key = self.dir.join("ca.key");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=seckill local CA",
                "-keyout",
            ],
            &[&ca_key, Path::new("-out"), &self.ca()],
        )?;
        self.issue(
            "server",
            "/CN=localhost",
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        )?;
        self.issue(
            "client",
            "/CN=seckill-client",
            "extendedKeyUsage=clientAuth\n",
        )?;
        let keystore = format!(
            "{}{}",
            std::fs::read_to_string(self.server_key())?,
            std::fs::read_to_string(self.server_cert())?
        );
        write_private(&self.server_keystore(), &keystore)?;
        Ok(())
    }

    /// A key and a certificate signed by the CA, named `name`.
    fn issue(&self, name: &str, subject: &str, extensions: &str) -> Result<(), StackError> {
        let (key, csr, cert) = (
            self.dir.join(format!("{name}.key")),
            self.dir.join(format!("{name}.csr")),
            self.dir.join(format!("{name}.pem")),
        );
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext, extensions)?;
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
            ],
            &[&key, Path::new("-out"), &csr],
        )?;
        openssl(
            &["x509", "-req", "-days", "825", "-CAcreateserial", "-in"],
            &[
                &csr,
                Path::new("-CA"),
                &self.ca(),
                Path::new("-CAkey"),
                &self.dir.join("ca.key"),
                Path::new("-CAserial"),
                &self.dir.join("ca.srl"),
                Path::new("-extfile"),
                &ext,
                Path::new("-out"),
                &cert,
            ],
        )?;
        set_mode(&key, 0o600)?;
        Ok(())
    }

    /// The Redis ACL file: `default` off, the admin with every command, the components
    /// with the project's keys and no dangerous command.
    pub fn redis_acl(&self) -> Result<String, StackError> {
        let mut text = String::from("user default off\n");
        text.push_str(&format!(
            "user {ADMIN} on >{} ~* &* +@all\n",
            self.password(ADMIN)?
        ));
        for user in [GATEWAY, WRITER] {
            text.push_str(&format!(
                "user {user} on >{} ~sk:* ~{{sk:* resetchannels +@all -@dangerous +info\n",
                self.password(user)?
            ));
        }
        Ok(text)
    }

    /// librdkafka's settings for `user` (SASL_SSL with SCRAM-SHA-512, the CA, the client
    /// certificate); the password is given apart (`kafka_password_file`), except for
    /// the administrator's tools, which get it here (`with_password`).
    pub fn kafka_extra(&self, user: &str, with_password: bool) -> Result<String, StackError> {
        let mut s = format!(
            "security.protocol=SASL_SSL,sasl.mechanisms=SCRAM-SHA-512,sasl.username={user},ssl.ca.location={},ssl.certificate.location={},ssl.key.location={}",
            self.ca().display(),
            self.client_cert().display(),
            self.client_key().display()
        );
        if with_password {
            s.push_str(&format!(",sasl.password={}", self.password(user)?));
        }
        Ok(s)
    }
}

fn openssl(args: &[&str], paths: &[&Path]) -> Result<(), StackError> {
    let out = Command::new("openssl")
        .args(args)
        .args(paths)
        .output()
        .map_err(StackError::tool("openssl"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(StackError::Process(format!(
            "openssl {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> Result<String, StackError> {
    use std::io::Read;
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Write `text` to `path`, readable by its owner only (from its creation on).
pub(crate) fn write_private(path: &Path, text: &str) -> Result<(), StackError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    set_mode(path, 0o600)
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), StackError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
