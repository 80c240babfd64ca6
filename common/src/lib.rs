//! What the seckill crates truly share, and nothing else:
//!
//! - [`config`]: load a flat configuration struct from defaults, a TOML file and
//!   `SECKILL_*` environment variables, in that order.
//! - [`stack`]: the addresses of the project-local stack (`./dev up`), which are the
//!   defaults every component points at.

pub mod config;
pub mod stack;

pub use config::{load_config, ConfigError};
