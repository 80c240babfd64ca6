//! A sale's stock ledger, and the reconcile of moves between buckets that a master lost
//! half of.
//!
//! Every bucket (and every unbucketed sale) keeps its own ledger, read in one step
//! (`ledger.lua`): `initial − out + in = stock + held + sold`, where `out` is every unit
//! it withdrew for another bucket (in flight or done) and `in` every unit deposited into
//! it. Purchases, settlements, restores and reapplied orders keep it by construction, so
//! the sum over the buckets is exact even under load, without stopping anything. A move
//! is two writes on two masters: if the source master loses its withdrawal (its
//! append-only file's last second, a replica promoted behind) while the deposit survived,
//! the units exist twice — and a deposit lost on the destination while the source
//! recorded it done makes them vanish. [`Stock::reconcile_transfers`] finds both from the
//! two halves of the journal and redoes the lost half, once; the reconciler then checks
//! [`Stock::ledger`] before it trusts the masters again.

use crate::keys::SaleKeys;
use crate::{int_at, outcome, scripts, string_of, Exec, Stock, StockError};
use redis::Value;
use std::collections::HashMap;

/// A sale's ledger summed over its buckets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The sale's initial stock.
    pub initial: i64,
    /// Units for sale, held and sold, in every bucket (in flight between buckets not
    /// counted).
    pub accounted: i64,
    /// Units withdrawn from one bucket and not yet deposited in another.
    pub in_flight: i64,
    /// Units beyond what the buckets' ledgers allow: > 0 means units exist twice (the
    /// sale would oversell), < 0 that units went missing. 0 when conserved.
    pub excess: i64,
}

/// What [`Stock::reconcile_transfers`] redid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransfersReconciled {
    /// Deposits made now: moves in flight, and deposits a destination had lost.
    pub deposited: u64,
    /// Withdrawals a source had lost, taken again.
    pub rewithdrawn: u64,
    /// Units a redone withdrawal found already gone (sold twice).
    pub shortfall: i64,
}

/// One side of a move as its journal records it.
#[derive(Debug, Clone, Copy)]
struct Half {
    /// The other bucket (the destination in a source's journal, the source in `xin`).
    peer: u32,
    units: i64,
    /// Which of the hashes read it came from (for a source: 0 in flight, 1 done).
    kind: usize,
}

/// Both halves of every move of a sale, read race-free: the deposits, then the
/// sources' journals, then the deposits again (a move writes its withdrawal, then its
/// deposit, then marks itself done).
struct Moves {
    /// Deposited (read first): id → (destination, source and units).
    deposits: HashMap<String, (u32, Half)>,
    /// Journaled by a source (in flight or done): id → (source, destination and units).
    journals: HashMap<String, (u32, Half)>,
    /// Deposited (read after the journals).
    deposits_after: HashMap<String, (u32, Half)>,
}

impl Moves {
    /// Deposits whose withdrawal no source journals: lost with the source's master (the
    /// units exist twice). A deposit always follows its withdrawal, so a deposit read
    /// before the journals has its entry there unless the source lost it.
    fn lost_withdrawals(&self) -> impl Iterator<Item = (&String, u32, Half)> {
        self.deposits
            .iter()
            .filter(|(id, _)| !self.journals.contains_key(*id))
            .map(|(id, (to, h))| (id, *to, *h))
    }

    /// Journal entries without a deposit: in flight (kind 0), or done while the
    /// destination lost the deposit (kind 1: the units vanished). An entry is marked
    /// done only after its deposit, so one read before the deposits is decided by them.
    fn undeposited(&self) -> impl Iterator<Item = (&String, u32, Half)> {
        self.journals
            .iter()
            .filter(|(id, _)| !self.deposits_after.contains_key(*id))
            .map(|(id, (from, h))| (id, *from, *h))
    }
}

impl<C: Exec> Stock<C> {
    /// The sale's ledger: every bucket's (each read in one step) summed, plus the moves
    /// between buckets matched half to half. `NoSale` if the sale, or one of its
    /// buckets, is missing. Exact under traffic.
    pub fn ledger(&mut self, sale: &str) -> Result<Ledger, StockError> {
        let n = self.buckets_of(sale)?;
        let top = SaleKeys::new(sale);
        let mut l = Ledger::default();
        let mut initials = 0;
        let parts: Vec<SaleKeys> = if n > 1 {
            (0..n).map(|b| SaleKeys::bucket(sale, b)).collect()
        } else {
            vec![SaleKeys::new(sale)]
        };
        for k in &parts {
            let (xout, xdone, xin) = (k.transfers_out(), k.transfers_done(), k.transfers_in());
            let keys = [
                k.meta.as_str(),
                &k.stock,
                &k.sold,
                &k.reservations,
                &xout,
                &xdone,
                &xin,
            ];
            let r = outcome(self.run(&scripts::LEDGER, &keys, &[])?)?;
            let mut v = [0i64; 6];
            for (j, slot) in v.iter_mut().enumerate() {
                *slot = int_at(&r, j)?;
            }
            let [initial, stock, held, sold, out, inn] = v;
            let here = stock + held + sold;
            l.accounted += here;
            l.excess += here - (initial - out + inn);
            initials += initial;
        }
        l.initial = if n > 1 {
            match self
                .conn
                .exec(redis::cmd("HGET").arg(&top.meta).arg("initial"))?
            {
                Value::Nil => return Err(StockError::NoSale),
                v => crate::int_of(&v)?,
            }
        } else {
            initials
        };
        // Buckets whose shares do not add up to the sale are an imbalance too.
        l.excess += initials - l.initial;
        if n > 1 {
            let m = self.moves(sale, n)?;
            l.excess += m.lost_withdrawals().map(|(_, _, h)| h.units).sum::<i64>();
            for (_, _, h) in m.undeposited() {
                match h.kind {
                    0 => l.in_flight += h.units,
                    _ => l.excess -= h.units,
                }
            }
        }
        Ok(l)
    }

    /// Buckets of a bucketed sale whose keys are gone while the sale's meta is not (their
    /// master restarted empty): the sale must be restored whole. Empty for a sale
    /// without buckets.
    pub fn lost_buckets(&mut self, sale: &str) -> Result<Vec<u32>, StockError> {
        let n = self.buckets_of(sale)?;
        let mut lost = Vec::new();
        if n <= 1 {
            return Ok(lost);
        }
        for b in 0..n {
            let meta = SaleKeys::bucket(sale, b).meta;
            if self.conn.exec(redis::cmd("EXISTS").arg(&meta))? != Value::Int(1) {
                lost.push(b);
            }
        }
        Ok(lost)
    }

    /// Complete or redo every move between the sale's buckets so that each exists exactly
    /// once on both sides: a move in flight is deposited; a deposit the destination lost
    /// (its source recorded it done) is made again; a withdrawal the source lost (its
    /// deposit survived) is taken again. Idempotent, and safe under traffic ([`Moves`]).
    pub fn reconcile_transfers(&mut self, sale: &str) -> Result<TransfersReconciled, StockError> {
        let n = self.buckets_of(sale)?;
        let mut done = TransfersReconciled::default();
        if n <= 1 {
            return Ok(done);
        }
        let m = self.moves(sale, n)?;
        for (id, to, h) in m.lost_withdrawals() {
            if h.peer >= n {
                continue;
            }
            let k = SaleKeys::bucket(sale, h.peer);
            let keys = [k.stock.clone(), k.transfers_out(), k.transfers_done()];
            let keys = keys.each_ref().map(String::as_str);
            let args = [id.clone(), to.to_string(), h.units.to_string()];
            let r = outcome(self.run(&scripts::REWITHDRAW, &keys, &args)?)?;
            if int_at(&r, 0)? == 1 {
                done.rewithdrawn += 1;
                done.shortfall += int_at(&r, 1)?;
            }
        }
        for (id, from, h) in m.undeposited() {
            if h.peer < n && self.deposit(sale, from, h.peer, id, h.units)? {
                done.deposited += 1;
            }
        }
        for (id, (from, h)) in &m.journals {
            if h.kind == 0 {
                self.acknowledge(sale, *from, id)?;
            }
        }
        Ok(done)
    }

    fn moves(&mut self, sale: &str, n: u32) -> Result<Moves, StockError> {
        let deposits = self.halves(sale, n, |k| vec![k.transfers_in()])?;
        let journals = self.halves(sale, n, |k| vec![k.transfers_out(), k.transfers_done()])?;
        let deposits_after = self.halves(sale, n, |k| vec![k.transfers_in()])?;
        Ok(Moves {
            deposits,
            journals,
            deposits_after,
        })
    }
    /// Every entry of the hashes `which` names in each bucket: id → (bucket, half).
    fn halves(
        &mut self,
        sale: &str,
        n: u32,
        which: impl Fn(&SaleKeys) -> Vec<String>,
    ) -> Result<HashMap<String, (u32, Half)>, StockError> {
        let mut out = HashMap::new();
        for b in 0..n {
            for (kind, key) in which(&SaleKeys::bucket(sale, b)).into_iter().enumerate() {
                let v = self.conn.exec(redis::cmd("HGETALL").arg(&key))?;
                let pairs: Vec<(Value, Value)> = match v {
                    Value::Array(items) => {
                        let mut it = items.into_iter();
                        std::iter::from_fn(|| Some((it.next()?, it.next()?))).collect()
                    }
                    Value::Map(m) => m,
                    v => return Err(StockError::BadReply(format!("HGETALL: {v:?}"))),
                };
                for (id, half) in pairs {
                    let (id, half) = (string_of(&id)?, string_of(&half)?);
                    // A deposit recorded before deposits named their source (a bare
                    // count) cannot be matched: left out, never taken for a lost half.
                    if !half.contains('|') && half.parse::<i64>().is_ok() {
                        continue;
                    }
                    let parsed = half
                        .split_once('|')
                        .and_then(|(p, u)| Some((p.parse().ok()?, u.parse().ok()?)));
                    let Some((peer, units)) = parsed else {
                        return Err(StockError::BadReply(format!("journal entry {half:?}")));
                    };
                    out.insert(id, (b, Half { peer, units, kind }));
                }
            }
        }
        Ok(out)
    }
}
