//! The pool of a page table: emptied tables past their grace period, kept for the next map.

use super::pool_tables;
use super::table::Table;
use crate::grace::Counters;
use crate::sync::{lock, Arc, Mutex};
use std::ptr::NonNull;

/// A page table's reusable tables: emptied, unlinked, past their grace period, all zeros.
/// Shared with the [`RetiredTables`](super::RetiredTables) lists that return tables to it,
/// which may outlive the page table (then `closed` is set and they free their tables
/// instead).
pub(super) struct Pool {
    pub(super) state: Mutex<PoolState>,
    pub(super) counters: Arc<Counters>,
}

pub(super) struct PoolState {
    pub(super) tables: Vec<NonNull<Table>>,
    pub(super) closed: bool,
}

// SAFETY: the pooled tables are unreachable by readers and owned by the pool alone; every
// access goes through the mutex.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl Pool {
    /// A pooled table, if there is one.
    pub(super) fn take(&self) -> Option<NonNull<Table>> {
        lock(&self.state).tables.pop()
    }

    /// Keeps as many of `tables` for reuse as there is room for (one lock); returns the
    /// rest, for the caller to free.
    pub(super) fn give<'t>(&self, tables: &'t [NonNull<Table>]) -> &'t [NonNull<Table>] {
        let mut st = lock(&self.state);
        if st.closed {
            return tables;
        }
        let keep = pool_tables()
            .saturating_sub(st.tables.len())
            .min(tables.len());
        st.tables.extend_from_slice(&tables[..keep]);
        &tables[keep..]
    }

    /// Frees every pooled table (`Iommu::synchronize`, so that memory returns to its
    /// baseline, G9); the pool fills again with later unmaps.
    pub(super) fn drain(&self) {
        let tables = std::mem::take(&mut lock(&self.state).tables);
        for t in tables {
            // SAFETY: pooled tables are unreachable by readers and owned by the pool.
            unsafe { Table::free(t, &self.counters) };
        }
    }

    /// Frees every pooled table and refuses new ones (the page table is being dropped).
    pub(super) fn close(&self) {
        let tables = {
            let mut st = lock(&self.state);
            st.closed = true;
            std::mem::take(&mut st.tables)
        };
        for t in tables {
            // SAFETY: pooled tables are unreachable by readers and owned by the pool.
            unsafe { Table::free(t, &self.counters) };
        }
    }
}
