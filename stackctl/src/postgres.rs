//! A PostgreSQL cluster on its own port with its data under `dir`. PostgreSQL refuses
//! to run as root, so its tools run as the `postgres` user when we are root.

use crate::process::port_open;
use crate::secure::Secure;
use crate::StackError;
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct Postgres {
    pub dir: PathBuf,
    pub port: u16,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin).
fn bin_dir() -> Result<PathBuf, StackError> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").is_file())
        .max_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .ok_or_else(|| StackError::Missing("PostgreSQL server (run ./dev setup)".into()))
}

impl Postgres {
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<bool, StackError> {
        let exe = bin_dir()?.join(name);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(StackError::failed(name))?;
        if !out.status.success() {
            tracing::debug!("{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.status.success())
    }

    pub fn is_up(&self) -> bool {
        self.data().join("postmaster.pid").is_file() && port_open(self.port)
    }

    /// initdb once, start unless up, create the `seckill` database.
    pub fn up(&self) -> Result<(), StackError> {
        self.up_secured(None)
    }

    /// [`Postgres::up`]; with `secure`, TLS only (`hostssl` lines, SCRAM passwords), the
    /// database owned by the profile's administrator and the writer's role allowed rows
    /// only.
    pub fn up_secured(&self, secure: Option<&Secure>) -> Result<(), StackError> {
        let sock = self.dir.join("sock");
        std::fs::create_dir_all(&sock)?;
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(StackError::Process(format!(
                    "chown postgres {}",
                    self.dir.display()
                )));
            }
        }
        let data = self.data().display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        if !self.data().join("PG_VERSION").is_file()
            && !self.tool(
                "initdb",
                &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
            )?
        {
            return Err(StackError::Start("postgres initdb", data));
        }
        if let Some(secure) = secure {
            self.secure_files(secure)?;
        }
        if !self.is_up() {
            if port_open(self.port) {
                return Err(StackError::PortTaken(self.port, "postgres"));
            }
            let mut opts = format!(
                "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c max_connections=200 -c fsync=on",
                self.port,
                sock.display()
            );
            if secure.is_some() {
                // The socket (the superuser's way in, `trust`) for its owner only.
                opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c password_encryption=scram-sha-256 -c unix_socket_permissions=0700");
            }
            if !self.tool(
                "pg_ctl",
                &[
                    "-D", &data, "-l", &log, "-w", "-t", "30", "-o", &opts, "start",
                ],
            )? {
                return Err(StackError::Start("postgres", log));
            }
        }
        match secure {
            None => self.create_db("seckill"),
            Some(secure) => self.secure_roles(secure),
        }
    }

    /// `sql` run by the superuser on database `db` through the server's own socket (the
    /// TLS profile has no plaintext TCP line), given on stdin so that the passwords in
    /// it never show on a command line.
    fn psql(&self, db: &str, sql: &str) -> Result<std::process::Output, StackError> {
        use std::io::Write;
        let mut child = Command::new("psql")
            .arg("-h")
            .arg(self.dir.join("sock"))
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(["-d", db, "-v", "ON_ERROR_STOP=1", "-tA", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(StackError::tool("psql"))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(sql.as_bytes())?;
        }
        Ok(child.wait_with_output()?)
    }

    /// The server's certificate and key (owned by `postgres`, 0600, as PostgreSQL
    /// demands) and the TLS-only `pg_hba.conf`: the superuser through the socket, every
    /// TCP client over TLS with a SCRAM password.
    fn secure_files(&self, secure: &Secure) -> Result<(), StackError> {
        let data = self.data();
        std::fs::copy(secure.server_cert(), data.join("server.crt"))?;
        std::fs::copy(secure.server_key(), data.join("server.key"))?;
        crate::secure::set_mode(&data.join("server.key"), 0o600)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "# Written by stackctl (the TLS profile); edit stackctl/src/postgres.rs instead.\n\
             local all postgres trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n",
        )?;
        if is_root() {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .map_err(StackError::tool("chown"))?;
        }
        Ok(())
    }

    /// The profile's roles (passwords kept in step with their files), the `seckill`
    /// database owned by the administrator, and the writer's grants: rows of every
    /// table the administrator makes (migrations), nothing else.
    fn secure_roles(&self, secure: &Secure) -> Result<(), StackError> {
        use crate::secure::{ADMIN, WRITER};
        let mut sql = String::new();
        // The administrator may create databases (benches and tests make their own).
        for (role, may) in [(ADMIN, "CREATEDB"), (WRITER, "NOCREATEDB")] {
            let pw = secure.password(role)?;
            sql.push_str(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN CREATE ROLE {role} LOGIN; END IF; END $$; ALTER ROLE {role} LOGIN {may} PASSWORD '{pw}'; "
            ));
        }
        let run = |db: &str, sql: &str| -> Result<(), StackError> {
            let out = self.psql(db, sql)?;
            if out.status.success() {
                Ok(())
            } else {
                Err(StackError::Process(format!(
                    "postgres roles: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        };
        run("postgres", &sql)?;
        let have = self.psql(
            "postgres",
            "SELECT 1 FROM pg_database WHERE datname = 'seckill'",
        )?;
        if String::from_utf8_lossy(&have.stdout).trim() != "1" {
            run(
                "postgres",
                &format!("CREATE DATABASE seckill OWNER {ADMIN}"),
            )?;
        }
        run(
            "seckill",
            &format!(
                "REVOKE ALL ON DATABASE seckill FROM PUBLIC; \
                 REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
                 GRANT CONNECT, TEMPORARY ON DATABASE seckill TO {WRITER}; \
                 GRANT USAGE ON SCHEMA public TO {WRITER}; \
                 ALTER DEFAULT PRIVILEGES FOR ROLE {ADMIN} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {WRITER}; \
                 ALTER DEFAULT PRIVILEGES FOR ROLE {ADMIN} IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {WRITER}; \
                 GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {WRITER}; \
                 GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {WRITER};"
            ),
        )
    }

    /// The URL of database `db` for `user` over TLS (the profile's), with its password.
    pub fn secure_url(&self, secure: &Secure, user: &str, db: &str) -> Result<String, StackError> {
        Ok(format!(
            "postgres://{user}:{}@127.0.0.1:{}/{db}?sslmode=verify-full",
            secure.password(user)?,
            self.port
        ))
    }

    fn create_db(&self, name: &str) -> Result<(), StackError> {
        let psql = |sql: &str| {
            Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                ])
                .args(["-d", "postgres", "-tAc", sql])
                .output()
                .map_err(StackError::tool("psql"))
        };
        let have = psql(&format!(
            "SELECT 1 FROM pg_database WHERE datname = '{name}'"
        ))?;
        if String::from_utf8_lossy(&have.stdout).trim() == "1" {
            return Ok(());
        }
        let made = psql(&format!("CREATE DATABASE {name}"))?;
        if made.status.success() || String::from_utf8_lossy(&made.stderr).contains("already exists")
        {
            Ok(())
        } else {
            Err(StackError::Process(format!(
                "create database {name}: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            )))
        }
    }

    /// A clean, fast stop (`pg_ctl -m fast`).
    pub fn down(&self) {
        if self.data().join("postmaster.pid").is_file() {
            let data = self.data().display().to_string();
            let _ = self.tool("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
        }
    }

    /// Crash-stop (`pg_ctl -m immediate`): no checkpoint, as a power cut.
    pub fn crash(&self) {
        let data = self.data().display().to_string();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]);
    }
}
