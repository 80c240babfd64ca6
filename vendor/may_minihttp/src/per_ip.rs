//! Connections open per client address (`Limits::max_connections_per_ip`; patch 10).
//! One entry per address with a connection open: an entry is removed when its count
//! drops to 0, so the map never holds more entries than there are open connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub(crate) struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted under its address; uncounted on drop.
pub(crate) struct IpSlot {
    map: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    /// `max` connections per address; 0: no cap (and nothing is counted).
    pub(crate) fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Count one more connection from `ip`: `Ok(None)` when there is no cap, `Err(())`
    /// when `ip` already has `max` open. An IPv4-mapped IPv6 address counts as its
    /// IPv4 address.
    #[allow(clippy::result_unit_err)]
    pub(crate) fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, ()> {
        if self.max == 0 {
            return Ok(None);
        }
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            return Err(());
        }
        *n += 1;
        Ok(Some(IpSlot {
            map: self.clone(),
            ip,
        }))
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.map.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_max_and_entries_go_with_their_last_connection() {
        let map = PerIp::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = map.acquire(a).unwrap();
        let a2 = map.acquire(a).unwrap();
        assert!(map.acquire(a).is_err());
        // The same address written as IPv4-mapped IPv6 is the same client.
        assert!(map.acquire("::ffff:10.0.0.1".parse().unwrap()).is_err());
        let b1 = map.acquire(b).unwrap();
        assert_eq!(map.entries(), 2);
        drop(a1);
        let a3 = map.acquire(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(map.entries(), 0, "no entry outlives its connections");
    }

    #[test]
    fn zero_is_no_cap_and_counts_nothing() {
        let map = PerIp::new(0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| map.acquire(ip).unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        assert_eq!(map.entries(), 0);
    }
}
