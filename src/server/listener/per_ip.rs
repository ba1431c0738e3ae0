//! The count of open connections per client address, and the cap on it.
//!
//! The address is the TCP peer's, IPv4-mapped IPv6 addresses counted as their IPv4 address.
//! Behind a load balancer every connection comes from the balancer's address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Open connections per client address.
pub(super) struct PerIp {
    max: usize,
    // INVARIANT: every entry counts at least one open connection, so the map holds at most as
    // many entries as there are open connections (bounded by `max_connections`).
    open: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
}

/// One admitted connection; dropping it gives its place back.
pub(super) struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

/// A connection over the cap of its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct OverCap {
    /// Connections refused this way since the listener started, this one included.
    pub(super) refused_total: u64,
}

// === impl PerIp ===

impl PerIp {
    /// A table allowing `max` open connections per address.
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits one more connection from `ip`, unless `ip` already has `max` open.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<IpSlot, OverCap> {
        let ip = ip.to_canonical();
        let mut open = self.lock();
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            if *n == 0 {
                open.remove(&ip);
            }
            drop(open);
            let refused_total = self
                .refused
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            return Err(OverCap { refused_total });
        }
        *n += 1;
        Ok(IpSlot {
            table: Arc::clone(self),
            ip,
        })
    }

    /// Connections refused for being over the cap since the listener started.
    pub(super) fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn release(&self, ip: IpAddr) {
        let mut open = self.lock();
        if let Some(n) = open.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl IpSlot ===

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.table.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn caps_each_address_and_gives_places_back() {
        let table = PerIp::new(2);
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        let first = table.admit(a).unwrap();
        let _second = table.admit(a).unwrap();
        assert_eq!(table.admit(a).err(), Some(OverCap { refused_total: 1 }));
        // Another address is counted on its own.
        let _other = table.admit(b).unwrap();
        drop(first);
        let _third = table.admit(a).unwrap();
        assert_eq!(table.admit(a).err(), Some(OverCap { refused_total: 2 }));
        assert_eq!(table.refused_total(), 2);
    }

    #[test]
    fn an_ipv4_mapped_address_counts_as_its_ipv4_address() {
        let table = PerIp::new(1);
        let _v4 = table.admit(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert!(table.admit(mapped).is_err());
        assert!(table.admit(IpAddr::V6(Ipv6Addr::LOCALHOST)).is_ok());
    }

    #[test]
    fn the_table_forgets_addresses_without_connections() {
        let table = PerIp::new(1);
        drop(table.admit(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap());
        assert!(table.lock().is_empty());
    }
}
