//! Apache Kafka in KRaft mode: jars from Maven Central (fetched once into a cache by
//! `mvn dependency:copy-dependencies` from the committed `kafka/pom.xml`), one or more
//! combined broker+controller nodes as `java … kafka.Kafka server.properties`, each with
//! its data, logs and pid file under `<run>/kafka/node-<i>`.
//!
//! Ports: node `i` serves clients on `port + i` and the controller quorum on
//! `port + 100 + i`. One node for the demo and tests; three (replication factor 3,
//! `min.insync.replicas=2`) for drills that kill a broker.

use crate::process::{self, port_open, wait_until};
use crate::secure::Secure;
use crate::StackError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const POM: &str = include_str!("../kafka/pom.xml");

/// Heap of each broker: bounded, and small enough that three fit beside everything else.
const HEAP: &str = "-Xmx512m";

pub struct Kafka {
    pub dir: PathBuf,
    pub cache: PathBuf,
    pub port: u16,
    pub nodes: usize,
    /// The TLS profile: a SASL_SSL listener (SCRAM-SHA-512, client certificates
    /// required) instead of PLAINTEXT.
    pub secure: Option<Secure>,
}

impl Kafka {
    /// `bootstrap.servers` for clients: every node.
    pub fn bootstrap(&self) -> String {
        (0..self.nodes)
            .map(|i| format!("127.0.0.1:{}", self.broker_port(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client of the stack's administrator (the security settings of the profile).
    pub fn client(&self) -> Result<rdkafka::ClientConfig, StackError> {
        let extra = match &self.secure {
            Some(s) => s.kafka_extra(crate::secure::ADMIN, true)?,
            None => String::new(),
        };
        seckill_common::kafka::client_config(&self.bootstrap(), &extra, "")
            .map_err(|e| StackError::Process(e.to_string()))
    }

    pub fn broker_port(&self, node: usize) -> u16 {
        self.port + node as u16
    }

    fn controller_port(&self, node: usize) -> u16 {
        self.port + 100 + node as u16
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node-{node}"))
    }

    fn pidfile(&self, node: usize) -> PathBuf {
        self.node_dir(node).join("kafka.pid")
    }

    pub fn pid(&self, node: usize) -> Option<i32> {
        process::running_as(&self.pidfile(node), "kafka.Kafka")
    }

    /// The replication every topic gets: all nodes, at most three.
    pub fn replication(&self) -> usize {
        self.nodes.min(3)
    }

    /// The directory holding Kafka's jars, fetched from Maven Central the first time
    /// (keyed by the pom's content, so a version change fetches again).
    pub fn jars(&self) -> Result<PathBuf, StackError> {
        let home = self
            .cache
            .join(format!("kafka-{:016x}", fnv1a(POM.as_bytes())));
        let lib = home.join("lib");
        if home.join("complete").is_file() {
            return Ok(lib);
        }
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join("pom.xml"), POM)?;
        let tmp = home.join("lib.partial");
        let _ = std::fs::remove_dir_all(&tmp);
        tracing::info!(
            "fetching Apache Kafka from Maven Central into {}",
            home.display()
        );
        let out = Command::new("mvn")
            .current_dir(&home)
            .args(["-q", "-B", "-f", "pom.xml", "dependency:copy-dependencies"])
            .arg(format!("-DoutputDirectory={}", tmp.display()))
            .arg("-DincludeScope=runtime")
            .stdin(Stdio::null())
            .output()
            .map_err(StackError::tool("mvn"))?;
        if !out.status.success() {
            return Err(StackError::Fetch(format!(
                "mvn dependency:copy-dependencies failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let _ = std::fs::remove_dir_all(&lib);
        std::fs::rename(&tmp, &lib)?;
        std::fs::write(home.join("complete"), "")?;
        Ok(lib)
    }

    fn properties(&self, node: usize) -> String {
        let voters = (0..self.nodes)
            .map(|i| format!("{}@127.0.0.1:{}", i + 1, self.controller_port(i)))
            .collect::<Vec<_>>()
            .join(",");
        let rf = self.replication();
        let min_isr = if rf >= 3 { 2 } else { 1 };
        let data = self.node_dir(node).join("data");
        let (protocol, security) = match &self.secure {
            None => ("PLAINTEXT", String::new()),
            Some(s) => ("SASL_SSL", Self::security(s)),
        };
        format!(
            "# Written by stackctl on every start; edit stackctl/src/kafka.rs instead.\n\
             process.roles=broker,controller\n\
             node.id={id}\n\
             controller.quorum.voters={voters}\n\
             listeners={protocol}://127.0.0.1:{bp},CONTROLLER://127.0.0.1:{cp}\n\
             advertised.listeners={protocol}://127.0.0.1:{bp}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map={protocol}:{protocol},CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name={protocol}\n\
             {security}\
             log.dirs={data}\n\
             num.partitions=8\n\
             default.replication.factor={rf}\n\
             min.insync.replicas={min_isr}\n\
             offsets.topic.replication.factor={rf}\n\
             offsets.topic.num.partitions=8\n\
             transaction.state.log.replication.factor={rf}\n\
             transaction.state.log.min.isr={min_isr}\n\
             transaction.state.log.num.partitions=4\n\
             unclean.leader.election.enable=false\n\
             auto.create.topics.enable=false\n\
             group.initial.rebalance.delay.ms=0\n\
             broker.heartbeat.interval.ms=1000\n\
             broker.session.timeout.ms=4000\n\
             log.retention.hours=24\n\
             log.segment.bytes=67108864\n",
            security = security,
            id = node + 1,
            bp = self.broker_port(node),
            cp = self.controller_port(node),
            data = data.display(),
        )
    }

    /// The SASL_SSL listener's settings: SCRAM-SHA-512 (between brokers too, as the
    /// administrator), the PEM key store and trust store, client certificates required.
    fn security(s: &Secure) -> String {
        let admin = crate::secure::ADMIN;
        let pw = s.password(admin).unwrap_or_default();
        format!(
            "sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{admin}\" password=\"{pw}\";\n\
             ssl.keystore.type=PEM\n\
             ssl.keystore.location={keystore}\n\
             ssl.truststore.type=PEM\n\
             ssl.truststore.location={ca}\n\
             listener.name.sasl_ssl.ssl.client.auth=required\n",
            keystore = s.server_keystore().display(),
            ca = s.ca().display(),
        )
    }

    fn log4j(&self, node: usize) -> String {
        let d = self.node_dir(node);
        format!(
            "Configuration:\n  Appenders:\n    RollingFile:\n      name: F\n      fileName: {d}/server.log\n      filePattern: {d}/server.log.%i\n      PatternLayout: {{ pattern: \"[%d] %p %m (%c)%n\" }}\n      Policies:\n        SizeBasedTriggeringPolicy: {{ size: 20 MB }}\n      DefaultRolloverStrategy: {{ max: 2 }}\n  Loggers:\n    Root: {{ level: INFO, AppenderRef: [ {{ ref: F }} ] }}\n",
            d = d.display()
        )
    }

    fn cluster_id(&self) -> Result<String, StackError> {
        let f = self.dir.join("cluster.id");
        if let Ok(id) = std::fs::read_to_string(&f) {
            // One starting with '-' never formatted anything (see `random_cluster_id`).
            if !id.trim().is_empty() && !id.trim().starts_with('-') {
                return Ok(id.trim().to_string());
            }
        }
        let id = random_cluster_id()?;
        std::fs::create_dir_all(&self.dir)?;
        std::fs::write(&f, &id)?;
        Ok(id)
    }

    fn java(lib: &Path) -> Command {
        let java = std::env::var_os("JAVA_HOME")
            .map(|h| PathBuf::from(h).join("bin/java"))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("java"));
        let mut c = Command::new(java);
        c.arg("-cp").arg(lib.join("*"));
        c
    }

    /// Write each node's configuration and format its storage once (in parallel).
    fn prepare(&self, lib: &Path) -> Result<(), StackError> {
        let id = self.cluster_id()?;
        let mut formatting = Vec::new();
        for node in 0..self.nodes {
            let d = self.node_dir(node);
            std::fs::create_dir_all(&d)?;
            // The TLS profile's holds the administrator's SCRAM password.
            crate::secure::write_private(&d.join("server.properties"), &self.properties(node))?;
            std::fs::write(d.join("log4j2.yaml"), self.log4j(node))?;
            if d.join("data/meta.properties").is_file() {
                continue;
            }
            let mut format = Self::java(lib);
            format
                .arg(format!(
                    "-Dlog4j2.configurationFile={}",
                    d.join("log4j2.yaml").display()
                ))
                .args([
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    &id,
                    "-c",
                ])
                .arg(d.join("server.properties"));
            // The profile's SCRAM users exist from the start (KRaft's bootstrap records).
            if let Some(s) = &self.secure {
                for user in crate::secure::USERS {
                    format.args([
                        "--add-scram".to_string(),
                        format!("SCRAM-SHA-512=[name={user},password={}]", s.password(user)?),
                    ]);
                }
            }
            let child = format
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(StackError::tool("java"))?;
            formatting.push((node, child));
        }
        for (node, child) in formatting {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                return Err(StackError::Process(format!(
                    "format Kafka node {node}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
        }
        Ok(())
    }

    /// Start node `node` unless it runs (the storage must be prepared).
    fn start_node(&self, lib: &Path, node: usize) -> Result<(), StackError> {
        if self.pid(node).is_some() {
            return Ok(());
        }
        let port = self.broker_port(node);
        if port_open(port) {
            return Err(StackError::PortTaken(port, "kafka"));
        }
        let d = self.node_dir(node);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("stdout.log"))?;
        let mut cmd = Self::java(lib);
        cmd.args([HEAP, "-Xms128m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=5"])
            // Each pause with its length, for a latency profile (loadtest/bench/PROFILE.md).
            // Quoted: a run directory's path may hold a ':' (the option's separator).
            .arg(format!(
                "-Xlog:gc:file=\"{}\":uptime,level,tags:filecount=2,filesize=10m",
                d.join("gc.log").display()
            ))
            .arg("-Djava.awt.headless=true")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                d.join("log4j2.yaml").display()
            ))
            .arg("kafka.Kafka")
            .arg(d.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = process::detach(&mut cmd)
            .spawn()
            .map_err(StackError::tool("java"))?;
        std::fs::write(self.pidfile(node), child.id().to_string())?;
        process::reap(child);
        Ok(())
    }

    /// Every node up, answering a metadata request that lists all of them; then the
    /// topics `(name, partitions)`.
    pub fn up(&self, topics: &[(String, i32)]) -> Result<(), StackError> {
        let lib = self.jars()?;
        self.prepare(&lib)?;
        for node in 0..self.nodes {
            self.start_node(&lib, node)?;
        }
        self.wait_ready(Duration::from_secs(90))?;
        for (name, parts) in topics {
            seckill_common::kafka::create_topic_on(&self.client()?, name, *parts)?;
        }
        Ok(())
    }

    /// Start one stopped node again and wait until the cluster lists it.
    pub fn restart_node(&self, node: usize) -> Result<(), StackError> {
        let lib = self.jars()?;
        self.start_node(&lib, node)?;
        self.wait_ready(Duration::from_secs(90))
    }

    pub fn wait_ready(&self, within: Duration) -> Result<(), StackError> {
        let mut seen = 0;
        let mut dead = None;
        let ok = wait_until(within, || {
            // A node that exited (a port taken, a bad config) will not come: say so now.
            // Its process only (we just started it, so the pid is ours): its command line
            // can read as something else for a moment while the JVM starts, which once
            // made a live node look dead.
            dead = (0..self.nodes)
                .find(|n| process::read_pid(&self.pidfile(*n)).is_none_or(|p| !process::alive(p)));
            seen = self.brokers_listed();
            seen == self.nodes || dead.is_some()
        });
        if let Some(n) = dead {
            Err(StackError::Start(
                "kafka",
                format!(
                    "node {n} exited; see {}",
                    self.node_dir(n).join("server.log").display()
                ),
            ))
        } else if ok {
            Ok(())
        } else {
            Err(StackError::Start(
                "kafka",
                format!(
                    "{}: {seen} of {} brokers in the metadata",
                    self.dir.join("node-*/server.log").display(),
                    self.nodes
                ),
            ))
        }
    }

    /// How many brokers a metadata request (to any node) lists; 0 when none answers.
    pub fn brokers_listed(&self) -> usize {
        let Ok(mut client) = self.client() else {
            return 0;
        };
        let client: Result<BaseConsumer, _> = client
            .set("socket.connection.setup.timeout.ms", "1000")
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
            .create();
        client
            .ok()
            .and_then(|c| c.fetch_metadata(None, Duration::from_secs(2)).ok())
            .map(|m| m.brokers().len())
            .unwrap_or(0)
    }

    /// The leader (node index, 0-based) of each partition of `topic`; `None` for a
    /// partition without a leader. Empty when no broker answers.
    pub fn leaders(&self, topic: &str) -> Vec<Option<usize>> {
        let Ok(mut client) = self.client() else {
            return vec![];
        };
        let client: Result<BaseConsumer, _> = client
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
            .create();
        let Some(md) = client
            .ok()
            .and_then(|c| c.fetch_metadata(Some(topic), Duration::from_secs(3)).ok())
        else {
            return vec![];
        };
        md.topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| usize::try_from(p.leader() - 1).ok())
            .collect()
    }

    pub fn is_up(&self) -> bool {
        (0..self.nodes).all(|n| self.pid(n).is_some()) && self.brokers_listed() == self.nodes
    }

    /// Send a signal to one node (SIGKILL, SIGSTOP, SIGCONT).
    pub fn signal(&self, node: usize, sig: i32) -> Result<(), StackError> {
        let pid = self
            .pid(node)
            .ok_or_else(|| StackError::Process(format!("kafka node {node} is not running")))?;
        process::signal(pid, sig)
    }

    /// Stop nodes (controlled shutdown, SIGKILL after 30 s), all at once.
    pub fn stop(&self, nodes: &[usize]) {
        let pids: Vec<i32> = nodes.iter().filter_map(|n| self.pid(*n)).collect();
        for p in &pids {
            let _ = process::signal(*p, libc::SIGCONT);
            let _ = process::signal(*p, libc::SIGTERM);
        }
        for p in pids {
            process::terminate(p, Duration::from_secs(30));
        }
        for n in nodes {
            let _ = std::fs::remove_file(self.pidfile(*n));
        }
    }

    pub fn down(&self) {
        self.stop(&(0..self.nodes).collect::<Vec<_>>());
    }
}

/// FNV-1a, 64 bits: a stable cache key for the pom.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A Kafka cluster id: 16 random bytes in URL-safe base64 without padding (22 chars),
/// never starting with '-': the storage tool would read such an id (`-t -wvP…`) as an
/// option and refuse to format (one fresh stack in 64 failed so).
fn random_cluster_id() -> Result<String, StackError> {
    use std::io::Read;
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 16];
        urandom.read_exact(&mut b)?;
        let id = base64url(&b);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_4648_vectors_without_padding() {
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 16]).len(), 22);
    }

    #[test]
    fn a_cluster_id_never_starts_like_an_option() {
        // One draw in 64 starts with '-' before the redraw; 2,000 draws meet it ~31 times.
        for _ in 0..2000 {
            let id = random_cluster_id().unwrap();
            assert_eq!(id.len(), 22);
            assert!(!id.starts_with('-'), "{id}");
        }
    }

    #[test]
    fn three_nodes_replicate_three_ways_with_two_in_sync() {
        let k = Kafka {
            dir: "/r/kafka".into(),
            cache: "/c".into(),
            port: 9092,
            nodes: 3,
            secure: None,
        };
        let p = k.properties(1);
        assert!(p.contains("node.id=2\n"));
        assert!(p.contains(
            "controller.quorum.voters=1@127.0.0.1:9192,2@127.0.0.1:9193,3@127.0.0.1:9194\n"
        ));
        assert!(p.contains("listeners=PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:9193\n"));
        assert!(p.contains("default.replication.factor=3\n"));
        assert!(p.contains("min.insync.replicas=2\n"));
        assert_eq!(
            k.bootstrap(),
            "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
        );
        let one = Kafka { nodes: 1, ..k };
        assert!(one
            .properties(0)
            .contains("offsets.topic.replication.factor=1\n"));
        assert!(one.properties(0).contains("min.insync.replicas=1\n"));
    }
}
