#[macro_use]
extern crate log;

mod date;
mod http_server;
mod limits;
mod per_ip;
pub mod proxy;
mod request;
mod response;

pub use http_server::{HttpServer, HttpService, HttpServiceFactory};
pub use limits::{Hangup, Limits, Refusal};
pub use proxy::TrustedNet;
pub use request::{BodyReader, Request};
pub use response::Response;
