//! A hello/echo server with the default limits, for trying hostile clients by hand:
//! `cargo run --release -p may_minihttp --example edge_echo -- 127.0.0.1:8089 [TIMEOUT_MS]`
//! (TIMEOUT_MS: head, body and idle timeouts; default: the library's).

use may_minihttp::{HttpService, HttpServiceFactory, Limits, Request, Response};
use std::io::{self, Read};
use std::time::Duration;

struct Svc;

impl HttpService for Svc {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        match req.path() {
            "/echo" => {
                let mut body = Vec::new();
                req.body().read_to_end(&mut body)?;
                rsp.body_vec(body);
            }
            _ => rsp.body("hello"),
        }
        Ok(())
    }
}

struct Factory(Limits);

impl HttpServiceFactory for Factory {
    type Service = Svc;
    fn new_service(&self, _id: usize) -> Svc {
        Svc
    }
    fn limits(&self) -> Limits {
        self.0.clone()
    }
}

fn main() -> io::Result<()> {
    may::config().set_stack_size(128 * 1024);
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8089".into());
    let mut limits = Limits::default();
    if let Some(ms) = std::env::args().nth(2).and_then(|v| v.parse().ok()) {
        let t = Duration::from_millis(ms);
        (limits.head_timeout, limits.body_timeout, limits.idle_timeout) = (t, t, t);
    }
    Factory(limits).start(&addr)?.join().ok();
    Ok(())
}
