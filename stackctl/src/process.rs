//! Processes: pid files, liveness (a zombie is dead), signals, ports, and [`Proc`], a
//! child service (gateway, order-writer) stopped when dropped.

use crate::StackError;
pub use libc::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The pid in `pidfile`, if the file holds one.
pub fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether `pid` is a running process (not a zombie waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Whether `pid` runs and is the program we think: its command line contains `needle`.
/// A pid file outliving its process (a crash, a reboot) may name a pid the kernel has
/// since given to something else, which must neither count as our service nor be killed.
pub fn alive_as(pid: i32, needle: &str) -> bool {
    alive(pid)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// The pid in `pidfile` if that process runs and its command line contains `needle`.
pub fn running_as(pidfile: &Path, needle: &str) -> Option<i32> {
    read_pid(pidfile).filter(|p| alive_as(*p, needle))
}

pub fn pidfile_alive(pidfile: &Path) -> bool {
    read_pid(pidfile).is_some_and(alive)
}

/// Send `sig` (libc::SIGTERM, SIGKILL, SIGSTOP, SIGCONT …) to `pid`.
pub fn signal(pid: i32, sig: i32) -> Result<(), StackError> {
    // SAFETY: kill(2) has no memory effects; a stale pid only yields ESRCH.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(StackError::Process(format!(
            "kill -{sig} {pid}: {}",
            std::io::Error::last_os_error()
        )))
    }
}

/// SIGTERM, then SIGKILL if `pid` is still alive after `grace`; waits until it is gone.
pub fn terminate(pid: i32, grace: Duration) {
    let _ = signal(pid, libc::SIGCONT); // a paused process cannot act on SIGTERM
    let _ = signal(pid, libc::SIGTERM);
    if !wait_until(grace, || !alive(pid)) {
        let _ = signal(pid, libc::SIGKILL);
        wait_until(Duration::from_secs(10), || !alive(pid));
    }
}

/// Poll `f` every 50 ms until it holds or `within` passed; whether it held.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn port_open(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// A port nothing listens on now (the OS picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Reap `child` on a thread of its own when it exits, so that a killed service never
/// lingers as a zombie that looks alive.
pub fn reap(mut child: Child) {
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

/// Put `cmd` in a process group of its own, so that a Ctrl-C meant for the tool that
/// started a stack service does not stop the service too.
pub fn detach(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

/// A gateway or order-writer process serving HTTP on `port` (and `internal_port`);
/// SIGTERM then SIGKILL when dropped.
pub struct Proc {
    pub name: String,
    /// A gateway's public listener (`listen`: the buyers' routes and the probes); an
    /// order-writer's metrics.
    pub port: u16,
    /// Where the operators' routes are: a gateway's internal listener (`internal_listen`:
    /// `/admin/*`, `/metrics`, `/payments/webhook`); an order-writer's metrics, `port`.
    pub internal_port: u16,
    child: Child,
}

impl Proc {
    /// Start `cmd` and wait until it listens on `port` and `internal_port` (or fail with
    /// the log to read).
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        port: u16,
        internal_port: u16,
        log: &Path,
    ) -> Result<Proc, StackError> {
        let child = cmd
            .spawn()
            .map_err(StackError::failed(format!("start {name}")))?;
        let mut p = Proc {
            name: name.into(),
            port,
            internal_port,
            child,
        };
        let listening = wait_until(Duration::from_secs(20), || {
            (port_open(port) && port_open(internal_port)) || !matches!(p.child.try_wait(), Ok(None))
        });
        if !listening || !matches!(p.child.try_wait(), Ok(None)) {
            return Err(StackError::Process(format!(
                "{name} did not listen on 127.0.0.1:{port} and 127.0.0.1:{internal_port} (see {})",
                log.display()
            )));
        }
        Ok(p)
    }

    /// The public base URL: a gateway's buyers' listener.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The operators' base URL: a gateway's internal listener (admin, metrics, the
    /// payment provider's callback); an order-writer's metrics.
    pub fn internal_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.internal_port)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) -> Result<(), StackError> {
        signal(self.pid(), sig)
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The exit status, if the process ends within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(within, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// A metric's value from `/metrics` (on [`Proc::internal_url`]): the first sample
    /// whose name (with labels, if given) is exactly `name`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .new_agent();
        let text = agent
            .get(&format!("{}/metrics", self.internal_url()))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        parse_metric(&text, name)
    }
}

pub fn parse_metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(self.pid(), Duration::from_secs(15));
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(alive(std::process::id() as i32));
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        assert!(!alive(pid));
    }

    #[test]
    fn an_unreaped_dead_child_counts_as_dead() {
        let c = Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        // Not waited for: a zombie until reaped.
        assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
        drop(c);
    }

    #[test]
    fn a_pid_counts_only_as_the_program_named() {
        let me = std::process::id() as i32;
        assert!(
            !alive_as(me, "redis-server"),
            "this test binary is not redis"
        );
        let name = std::env::current_exe().unwrap();
        let name = name.file_name().unwrap().to_string_lossy().into_owned();
        assert!(alive_as(me, &name[..name.len().min(10)]));
    }

    #[test]
    fn metric_lines_match_by_exact_name() {
        let text = "a_total 3\na_total{x=\"1\"} 4\nab 5\n";
        assert_eq!(parse_metric(text, "a_total"), Some(3.0));
        assert_eq!(parse_metric(text, "a_total{x=\"1\"}"), Some(4.0));
        assert_eq!(parse_metric(text, "a"), None);
    }
}
