//! The unsynchronized limit: the plain radix walk with plain loads, no guard, no lock and no
//! writer. Its table is built before the readers start and never changes, so this is what
//! a translation costs when synchronization costs nothing. It cannot switch, map or unmap
//! while shared; scenarios with a writer run it without one, as the reference.

use super::mutex_radix::{build, fault, need};
use super::radix::Radix;
use super::{DomainIdx, Layout, OpError, Translator};
use viommu::{Access, FaultKind};

/// Domain 0 as an immutable radix table.
pub struct UnsyncRadix {
    table: Radix,
}

impl UnsyncRadix {
    /// Domain 0 of `layout` (the only one it ever translates).
    pub fn new(layout: &Layout) -> UnsyncRadix {
        UnsyncRadix {
            table: build(layout, 0),
        }
    }
}

impl Translator for UnsyncRadix {
    #[inline]
    fn translate(&self, iova: u64, len: u64, access: Access) -> Result<u64, FaultKind> {
        self.table.translate(iova, len, need(access)).map_err(fault)
    }

    fn replace(&self, _to: DomainIdx) -> Result<(), OpError> {
        Err(OpError::Unsupported)
    }

    fn map(&self, _: DomainIdx, _: u64, _: u64, _: u64) -> Result<(), OpError> {
        Err(OpError::Unsupported)
    }

    fn unmap(&self, _: DomainIdx, _: u64, _: u64) -> Result<(), OpError> {
        Err(OpError::Unsupported)
    }
}
