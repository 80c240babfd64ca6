//! The reference for the gateway's throughput: a hello-world may_minihttp server with
//! the same worker count and stack size. `hello [ADDR]` (default 127.0.0.1:18081).

use may_minihttp::{HttpServer, HttpService, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> std::io::Result<()> {
        rsp.header("Content-Type: text/plain");
        rsp.body("Hello, World!");
        Ok(())
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    may::config()
        .set_workers(workers)
        .set_stack_size(128 * 1024);
    match HttpServer(Hello).start(&addr) {
        Ok(server) => {
            let _ = server.join();
        }
        Err(e) => {
            eprintln!("hello: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
}
