//! The race: 64 concurrent clients, 10,000 purchase attempts from 2,000 users for
//! 500 units. Exactly 500 sold, at most one per user, stock conserved, and no token
//! accepted twice — even when two clients fire the same token at the same moment.

use std::collections::HashSet;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;
use stock::{SaleSpec, Stock, StockError};

const CLIENTS: usize = 64;
const ATTEMPTS: usize = 10_000;
const USERS: u64 = 2_000;
const UNITS: i64 = 500;

#[test]
fn concurrent_buyers_never_oversell_nor_buy_twice() {
    let stack = stackctl::ensure_up();
    let connect =
        || Stock::new(stock::connect(&stack.redis_url, Duration::from_secs(5)).expect("redis"));
    let now = testkit::now_ms();
    let sale = testkit::unique("race");
    connect()
        .create_sale(
            &sale,
            &SaleSpec {
                stock: UNITS,
                per_user_limit: 1,
                start_ms: now - 1000,
                end_ms: now + 600_000,
            },
        )
        .unwrap();

    // Every accepted (order, user, token); every token anyone used successfully.
    let accepted = Arc::new(Mutex::new(Vec::<(String, u64, String)>::new()));
    // Retries of a token that had bought: (order, user, token) they were answered with.
    let replayed = Arc::new(Mutex::new(Vec::<(String, u64, String)>::new()));
    let faults = Arc::new(Mutex::new(Vec::<StockError>::new()));
    let start = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (sale, accepted, replayed, faults, start) = (
                sale.clone(),
                accepted.clone(),
                replayed.clone(),
                faults.clone(),
                start.clone(),
            );
            let mut s = connect();
            std::thread::spawn(move || {
                start.wait();
                let mut held: Option<(u64, String)> = None;
                for attempt in (c..ATTEMPTS).step_by(CLIENTS) {
                    let user = (attempt as u64 * 7919) % USERS + 1;
                    // Every fifth attempt replays the last token this client saw succeed,
                    // or fires a token of a user another client is also buying for.
                    let (user, token) = match (&held, attempt % 5) {
                        (Some((u, t)), 0) => (*u, t.clone()),
                        _ => match s.issue_token(&sale, user, Duration::from_secs(60)) {
                            Ok(t) => (user, t.token),
                            Err(e) if e.is_fault() => {
                                faults.lock().unwrap().push(e);
                                continue;
                            }
                            Err(_) => continue,
                        },
                    };
                    match s.purchase(&sale, user, &token) {
                        Ok(p) if p.replayed => {
                            replayed.lock().unwrap().push((p.order_id, user, token))
                        }
                        Ok(p) => {
                            accepted
                                .lock()
                                .unwrap()
                                .push((p.order_id, user, token.clone()));
                            held = Some((user, token));
                        }
                        Err(e) if e.is_fault() => faults.lock().unwrap().push(e),
                        Err(_) => {}
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    assert!(
        faults.lock().unwrap().is_empty(),
        "redis faults: {:?}",
        faults.lock().unwrap()
    );
    let accepted = accepted.lock().unwrap();
    let users: HashSet<u64> = accepted.iter().map(|a| a.1).collect();
    let tokens: HashSet<&str> = accepted.iter().map(|a| a.2.as_str()).collect();
    let orders: HashSet<&str> = accepted.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(accepted.len() as i64, UNITS, "exactly the stock is sold");
    assert_eq!(users.len(), accepted.len(), "at most one unit per user");
    assert_eq!(tokens.len(), accepted.len(), "no token accepted twice");
    assert_eq!(orders.len(), accepted.len(), "order ids are unique");
    let replayed = replayed.lock().unwrap();
    assert!(!replayed.is_empty(), "the retries were exercised");
    assert!(
        replayed.iter().all(|r| accepted.contains(r)),
        "a retry is answered with the order its token made, for its user"
    );

    let mut s = connect();
    let st = s.state(&sale).unwrap();
    assert_eq!((st.remaining, st.held, st.sold), (0, UNITS, 0));
    assert!(st.conserved());
    let buyers = s.buyers(&sale).unwrap();
    assert_eq!(buyers.len() as i64, UNITS);
    assert!(buyers.iter().all(|(_, n)| *n == 1));
    assert_eq!(buyers.iter().map(|b| b.0).collect::<HashSet<_>>(), users);
}
