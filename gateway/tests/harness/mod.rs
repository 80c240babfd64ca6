//! Test harness: a real gateway process on the local stack (or on a private Redis the
//! test owns, when the test must stop or count it), and a tiny HTTP/1.1 client that can
//! also send malformed requests.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const SECRET: &str = "test-ticket-secret";
pub const ADMIN: &str = "test-admin-token";
/// The payment provider's webhook secret the test gateways run with.
pub const WEBHOOK: &str = "test-webhook-secret";

pub use stackctl::process::free_port;
#[allow(unused_imports)]
pub use testkit::{now_ms, unique, wait_for};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("seckill-gw-{}", unique(tag)));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A redis-server this test owns (so it may pause it or count its commands).
pub struct PrivateRedis {
    pub port: u16,
    server: stackctl::redis::Redis,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let server = stackctl::redis::Redis {
            dir: scratch("redis"),
            port: free_port(),
        };
        server.up().expect("start a private redis-server");
        PrivateRedis {
            port: server.port,
            server,
        }
    }
    pub fn url(&self) -> String {
        self.server.url()
    }
    /// `-STOP`, `-CONT` or `-KILL`.
    pub fn signal(&self, sig: &str) {
        let sig = match sig {
            "-STOP" => stackctl::process::SIGSTOP,
            "-CONT" => stackctl::process::SIGCONT,
            "-KILL" => stackctl::process::SIGKILL,
            other => panic!("signal {other}?"),
        };
        let pid = self.server.pid().expect("private redis runs");
        stackctl::process::signal(pid, sig).expect("signal redis");
    }
    /// How many times Redis ran `cmd` (from INFO commandstats).
    pub fn calls(&self, cmd: &str) -> u64 {
        let mut c = redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut c)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
            .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
            .unwrap_or(0)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.server.down();
        let _ = std::fs::remove_dir_all(&self.server.dir);
    }
}

pub fn wait_port(port: u16, within: Duration) {
    let end = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One of a gateway's listeners, spoken to over plain TCP: requests on a new connection
/// each.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub port: u16,
}

impl Endpoint {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        let auth = auth.map(|a| ("Authorization", a));
        self.request_with(method, path, auth.as_slice(), body)
    }

    /// A request with these header fields.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\n");
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        let body = body.unwrap_or("");
        raw.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.raw(raw.as_bytes())
    }

    pub fn get(&self, path: &str, auth: Option<&str>) -> Resp {
        self.request("GET", path, auth, None)
    }

    pub fn post(&self, path: &str, auth: Option<&str>, body: Option<&str>) -> Resp {
        self.request("POST", path, auth, body)
    }

    /// Send raw bytes on a new connection and read one response.
    pub fn raw(&self, bytes: &[u8]) -> Resp {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(bytes).unwrap();
        read_response(&mut s)
    }
}

/// A gateway process (stackctl's), killed on drop. `get`, `post`, `request` and `raw`
/// speak to its public listener (the buyers' routes); `internal()` is the operators'
/// (`/admin/*`, `/metrics`, `/payments/webhook`).
pub struct Gateway {
    pub port: u16,
    pub internal_port: u16,
    pub topic: String,
    pub redis_url: String,
    pub brokers: String,
    pub audit: PathBuf,
    proc: stackctl::process::Proc,
}

#[derive(Default)]
pub struct Options<'a> {
    pub redis_url: Option<String>,
    /// Point the gateway at these brokers instead of the stack's (and do not wait for
    /// readiness, which needs a broker).
    pub brokers: Option<String>,
    pub env: Vec<(&'a str, String)>,
}

impl Gateway {
    pub fn start() -> Gateway {
        Gateway::start_with(Options::default())
    }

    pub fn start_with(o: Options) -> Gateway {
        let stack = stackctl::ensure_up();
        let ctl = stackctl::Stack::from_env().expect("the local stack");
        let topic = unique("orders_t");
        seckill_common::kafka::create_topic(&stack.kafka_brokers, &topic, 2).expect("create topic");
        let dir = scratch("gw");
        let audit = dir.join("audit.jsonl");
        let redis_url = o.redis_url.unwrap_or(stack.redis_url.clone());
        let wait_ready = o.brokers.is_none();
        let brokers = o.brokers.unwrap_or(stack.kafka_brokers.clone());
        let mut env = vec![
            ("SECKILL_REDIS_URL", redis_url.clone()),
            ("SECKILL_KAFKA_BROKERS", brokers.clone()),
            ("SECKILL_ORDERS_TOPIC", topic.clone()),
            ("SECKILL_TICKET_SECRET", SECRET.to_string()),
            ("SECKILL_ADMIN_TOKEN", ADMIN.to_string()),
            ("SECKILL_AUDIT_LOG", audit.display().to_string()),
            ("SECKILL_CLUSTER", topic.clone()),
            ("SECKILL_SPOOL_DIR", dir.join("spool").display().to_string()),
            ("SECKILL_USER_RPS", "1000".to_string()),
            ("SECKILL_USER_BURST", "1000".to_string()),
            ("SECKILL_LOG", "warn".to_string()),
            ("SECKILL_PAYMENT_WEBHOOK_SECRET", WEBHOOK.to_string()),
        ];
        env.extend(o.env);
        let proc = ctl
            .gateway(
                std::path::Path::new(env!("CARGO_BIN_EXE_gateway")),
                &topic,
                &env,
            )
            .expect("start gateway");
        let gw = Gateway {
            port: proc.port,
            internal_port: proc.internal_port,
            topic,
            redis_url,
            brokers,
            audit,
            proc,
        };
        if wait_ready {
            gw.wait_ready(Duration::from_secs(15));
        }
        gw
    }

    pub fn wait_ready(&self, within: Duration) {
        let end = Instant::now() + within;
        while self.get("/readyz", None).status != 200 {
            assert!(
                Instant::now() < end,
                "gateway not ready: {}",
                self.get("/readyz", None).body
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.proc.wait_exit(within)
    }

    /// The public listener (`listen`): the buyers' routes and the probes.
    pub fn public(&self) -> Endpoint {
        Endpoint { port: self.port }
    }

    /// The internal listener (`internal_listen`): `/admin/*`, `/metrics`, the payment
    /// provider's callback and the probes.
    pub fn internal(&self) -> Endpoint {
        Endpoint {
            port: self.internal_port,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        self.public().request(method, path, auth, body)
    }

    /// A request with these header fields, on the public listener.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Resp {
        self.public().request_with(method, path, headers, body)
    }

    /// The payment provider's callback (on the internal listener): `body` signed with
    /// `secret` at `t_unix_s`.
    pub fn callback_signed(&self, body: &str, secret: &str, t_unix_s: u64) -> Resp {
        let sig = seckill_common::payment::signature(secret.as_bytes(), t_unix_s, body.as_bytes());
        self.internal().request_with(
            "POST",
            "/payments/webhook",
            &[("Seckill-Signature", &sig)],
            Some(body),
        )
    }

    /// The buyer starts paying `order_id` (the intent), and the provider pays exactly
    /// that, signed now: the callback's answer.
    pub fn pay(&self, order_id: &str, user: u64) -> Resp {
        let start = self.post(
            &format!("/v1/orders/{order_id}/pay"),
            Some(&self.ticket(user)),
            None,
        );
        assert_eq!(start.status, 200, "start paying {order_id}: {}", start.body);
        let p = &start.json()["payment"];
        let body = payment_body(
            order_id,
            p["intent_id"].as_str().unwrap(),
            p["amount_cents"].as_i64().unwrap(),
            p["currency"].as_str().unwrap(),
        );
        self.callback_signed(&body, WEBHOOK, (now_ms() / 1000) as u64)
    }

    pub fn get(&self, path: &str, auth: Option<&str>) -> Resp {
        self.public().get(path, auth)
    }

    pub fn post(&self, path: &str, auth: Option<&str>, body: Option<&str>) -> Resp {
        self.public().post(path, auth, body)
    }

    /// Send raw bytes to the public listener on a new connection and read one response.
    pub fn raw(&self, bytes: &[u8]) -> Resp {
        self.public().raw(bytes)
    }

    pub fn ticket(&self, user: u64) -> String {
        format!(
            "Ticket {}",
            seckill_common::ticket::mint(SECRET.as_bytes(), user, (now_ms() / 1000 + 3600) as u64)
        )
    }

    pub fn admin_auth() -> String {
        format!("Bearer {ADMIN}")
    }

    /// Create a sale (`unique(tag)`) through the admin API; returns its id.
    pub fn sale(&self, tag: &str, units: i64, start_ms: i64, end_ms: i64) -> String {
        let sale = unique(tag);
        self.create_sale(&sale, units, start_ms, end_ms);
        sale
    }

    /// Create the sale `sale` through the admin API (the internal listener).
    pub fn create_sale(&self, sale: &str, units: i64, start_ms: i64, end_ms: i64) {
        let body = format!(
            r#"{{"sale":"{sale}","stock":{units},"start_ms":{start_ms},"end_ms":{end_ms}}}"#
        );
        let r = self
            .internal()
            .post("/admin/sales", Some(&Gateway::admin_auth()), Some(&body));
        assert_eq!(r.status, 201, "create {sale}: {}", r.body);
    }

    /// A sale (`unique(tag)`) open since a second ago for an hour; returns its id.
    pub fn open_sale(&self, tag: &str, units: i64) -> String {
        self.sale(tag, units, now_ms() - 1000, now_ms() + 3_600_000)
    }

    pub fn token(&self, sale: &str, user: u64) -> Resp {
        self.post(
            &format!("/v1/sales/{sale}/tokens"),
            Some(&self.ticket(user)),
            None,
        )
    }

    /// A token for `user`, then an order with it: the order's answer.
    pub fn buy(&self, sale: &str, user: u64) -> Resp {
        let t = self.token(sale, user).json()["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.order(sale, user, &t)
    }

    pub fn order(&self, sale: &str, user: u64, token: &str) -> Resp {
        self.post(
            &format!("/v1/sales/{sale}/orders"),
            Some(&self.ticket(user)),
            Some(&format!(r#"{{"token":"{token}"}}"#)),
        )
    }

    /// A metric's value (first sample whose line starts with `prefix`), from the
    /// internal listener's `/metrics`.
    pub fn metric(&self, prefix: &str) -> f64 {
        let m = self.internal().get("/metrics", None);
        m.body
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.proc.kill9();
    }
}

/// A `payment.succeeded` callback body for `order_id`.
pub fn payment_body(order_id: &str, intent: &str, amount_cents: i64, currency: &str) -> String {
    serde_json::json!({
        "id": format!("evt_{order_id}"),
        "type": "payment.succeeded",
        "data": {
            "payment_id": format!("pay_{order_id}"),
            "intent_id": intent,
            "order_id": order_id,
            "amount_cents": amount_cents,
            "currency": currency,
        },
    })
    .to_string()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    /// A string field of the JSON body (panics, showing the body, when there is none).
    pub fn field(&self, name: &str) -> String {
        match self.json()[name].as_str() {
            Some(v) => v.to_string(),
            None => panic!("no string {name:?} in {}", self.body),
        }
    }
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn read_response(s: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut chunk).expect("read response");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "short body");
        body.extend_from_slice(&chunk[..n]);
    }
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body[..len]).to_string(),
    }
}

/// Read every message of `topic` until `want` arrived or `within` passed.
pub fn consume(brokers: &str, topic: &str, want: usize, within: Duration) -> Vec<(String, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("verify"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let end = Instant::now() + within;
    while out.len() < want && Instant::now() < end {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let k = String::from_utf8_lossy(m.key().unwrap_or_default()).to_string();
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            // Sale definitions travel on the same topic; the tests count orders.
            if !v.contains(r#""event":"opened""#) {
                out.push((k, v));
            }
        }
    }
    out
}

/// A TCP connection from `from` (a loopback address: 127.0.0.2, .3 … play other
/// clients) to 127.0.0.1:`port`, with a 10 s read timeout.
pub fn connect_from(from: std::net::Ipv4Addr, port: u16) -> TcpStream {
    use std::net::Ipv4Addr;
    use std::os::fd::FromRawFd;
    let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor owned here and handed to TcpStream
    // (which closes it, also when an assertion below fails).
    let s = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        let local = sa(from, 0);
        let bound = libc::bind(fd, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(bound, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let remote = sa(Ipv4Addr::LOCALHOST, port);
        let connected = libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
        assert_eq!(
            connected,
            0,
            "connect to {port}: {}",
            std::io::Error::last_os_error()
        );
        s
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}
