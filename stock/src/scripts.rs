//! The Lua scripts, each prefixed with the shared prelude (`clock.lua`), and their SHAs.

use std::sync::LazyLock;

const PRELUDE: &str = include_str!("lua/clock.lua");

pub struct Script {
    body: String,
    sha: String,
}

impl Script {
    fn new(src: &str) -> Script {
        let body = format!("{PRELUDE}\n{src}");
        let sha = redis::Script::new(&body).get_hash().to_string();
        Script { body, sha }
    }
    pub fn body(&self) -> &str {
        &self.body
    }
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

macro_rules! script {
    ($name:ident, $file:literal) => {
        pub static $name: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!($file)));
    };
}

script!(CREATE, "lua/create.lua");
script!(TOKEN, "lua/token.lua");
script!(PURCHASE, "lua/purchase.lua");
script!(SETTLE, "lua/settle.lua");
script!(STATE, "lua/state.lua");
script!(PAUSE, "lua/pause.lua");
script!(PRICE, "lua/price.lua");
script!(ORDER, "lua/order.lua");
script!(RESTORE, "lua/restore.lua");
script!(REAPPLY, "lua/reapply.lua");
script!(VOID, "lua/void.lua");
script!(EXPIRED, "lua/expired.lua");

// Bucketed sales (`buckets` > 1; see `buckets.rs`). Token, purchase, settle, order,
// expired and pause run unchanged on a bucket's keys (token and purchase take the
// bucket count and the empty-bucket answer as arguments).
script!(BCREATE, "lua/bcreate.lua");
script!(BUCKET, "lua/bucket.lua");
script!(BSTATE, "lua/bstate.lua");
script!(WITHDRAW, "lua/withdraw.lua");
script!(DEPOSIT, "lua/deposit.lua");
script!(MOVED, "lua/moved.lua");
// The reconcile's view of a transfer half lost with a master, and every sale's ledger.
script!(REWITHDRAW, "lua/rewithdraw.lua");
script!(LEDGER, "lua/ledger.lua");
// Restoring a lost bucketed sale: each bucket, then the sale's meta last (`buckets/restore.rs`).
script!(BRESTORE, "lua/brestore.lua");
script!(BRESTORE_META, "lua/brestoremeta.lua");

/// Every script of single-bucket sales, for preloading.
pub fn all() -> [&'static Script; 9] {
    [
        &CREATE, &TOKEN, &PURCHASE, &SETTLE, &STATE, &PAUSE, &ORDER, &RESTORE, &EXPIRED,
    ]
}

/// The scripts only bucketed sales use, for preloading.
pub fn bucketed() -> [&'static Script; 6] {
    [&BCREATE, &BUCKET, &BSTATE, &WITHDRAW, &DEPOSIT, &MOVED]
}
