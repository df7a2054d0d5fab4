//! The retired list: tables an unmap or a prune unlinked, freed (or pooled) after their grace
//! period.

use super::pool::Pool;
use super::table::Table;
use crate::sync::Arc;
use smallvec::SmallVec;
use std::ptr::NonNull;

/// Page-table nodes an unmap unlinked, waiting for their grace period
/// ([`crate::grace::Garbage::Tables`]); dropping this hands them back to their page tables'
/// pools (bounded) or frees them.
#[derive(Default)]
pub(crate) struct RetiredTables {
    /// The nodes, inline for a few (a 4 KiB unmap empties up to three).
    tables: SmallVec<[NonNull<Table>; 4]>,
    /// The pool of each run of `tables`: `(pool, end)` covers `tables[previous end .. end]`.
    pools: SmallVec<[(Arc<Pool>, usize); 1]>,
}

// SAFETY: the nodes are unlinked and owned by this list alone; nothing else touches them.
unsafe impl Send for RetiredTables {}

impl RetiredTables {
    pub(super) fn push(&mut self, table: NonNull<Table>, pool: &Arc<Pool>) {
        self.tables.push(table);
        let end = self.tables.len();
        match self.pools.last_mut() {
            Some((p, e)) if Arc::ptr_eq(p, pool) => *e = end,
            _ => self.pools.push((pool.clone(), end)),
        }
    }

    /// True if nothing was retired.
    pub(crate) fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }
}

impl Drop for RetiredTables {
    fn drop(&mut self) {
        let mut begin = 0;
        for (pool, end) in self.pools.drain(..) {
            // Each node is unlinked (no new reader can reach it) and empty (all zeros, no
            // children); the list is dropped only after a grace period, when no guard that
            // reached it before the unlink is alive; each node is in one list once. So it may
            // be reused as a fresh table, or freed.
            for &table in pool.give(&self.tables[begin..end]) {
                // SAFETY: as above.
                unsafe { Table::free(table, &pool.counters) };
            }
            begin = end;
        }
    }
}
