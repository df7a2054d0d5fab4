//! A `Mutex` around the plain radix page table: every translation, switch, map and unmap
//! takes the one lock. Unmap frees emptied tables at once (no reader can be inside them while
//! the unmapper holds the lock), so no grace period is needed, and none is paid for.

use super::radix::{Radix, RadixError, READ, WRITE};
use super::{DomainIdx, Layout, OpError, Translator};
use std::sync::Mutex;
use viommu::{Access, FaultKind};

struct State {
    active: DomainIdx,
    tables: [Radix; 2],
}

/// Two radix tables and the active index, under one mutex.
pub struct MutexRadix {
    state: Mutex<State>,
}

/// Builds domain `d` of `layout` as a radix table.
pub(crate) fn build(layout: &Layout, d: DomainIdx) -> Radix {
    let mut r = Radix::new();
    for (iova, target, len) in layout.mappings(d) {
        r.map(iova, target, len, READ | WRITE)
            .expect("layout mappings are aligned and disjoint");
    }
    r
}

/// The leaf permission bits `access` needs.
#[inline(always)]
pub(crate) fn need(access: Access) -> u64 {
    match access {
        Access::Read => READ,
        Access::Write => WRITE,
    }
}

/// A radix error as the fault a reader sees.
#[inline]
pub(crate) fn fault(e: RadixError) -> FaultKind {
    match e {
        RadixError::Permission(_) => FaultKind::Permission,
        RadixError::Invalid => FaultKind::Aperture,
        _ => FaultKind::Unmapped,
    }
}

impl MutexRadix {
    /// Both domains from `layout`, domain 0 active.
    pub fn new(layout: &Layout) -> MutexRadix {
        MutexRadix {
            state: Mutex::new(State {
                active: 0,
                tables: [build(layout, 0), build(layout, 1)],
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("radix lock poisoned")
    }
}

impl Translator for MutexRadix {
    #[inline]
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind> {
        let s = self.lock();
        s.tables[s.active]
            .translate(iova, len, need(access))
            .map_err(fault)
    }

    fn replace(&self, to: DomainIdx) -> Result<(), OpError> {
        self.lock().active = to;
        Ok(())
    }

    fn map(&self, dom: DomainIdx, iova: u64, target: u64, len: u64) -> Result<(), OpError> {
        self.lock().tables[dom]
            .map(iova, target, len, READ | WRITE)
            .map_err(|e| OpError::Failed(e.to_string()))
    }

    fn unmap(&self, dom: DomainIdx, iova: u64, len: u64) -> Result<(), OpError> {
        match self.lock().tables[dom].unmap(iova, len) {
            Ok(0) => Err(OpError::Failed(format!("nothing mapped at {iova:#x}"))),
            Ok(_) => Ok(()),
            Err(e) => Err(OpError::Failed(e.to_string())),
        }
    }
}
