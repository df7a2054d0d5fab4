//! Budgets: what a caller can make the library allocate for one IOAS.
//!
//! A map allocates an area (a node of the area index) and page-table nodes in every domain
//! that mirrors the IOAS; how many nodes depends on the range's size and alignment, which the
//! caller chooses (a guest, through a virtio-iommu front end). A [`Budget`] bounds both, as
//! VFIO type1's `dma_entry_limit` bounds DMA entries and iommufd charges page-table memory:
//! a map that could take the IOAS past it fails with `ENOMEM` ([`Error::BudgetExceeded`])
//! before anything changes (G8).
//!
//! Page-table memory is checked against an upper bound computed from the map's arguments
//! ([`PageTable::tables_bound`](crate::pagetable::PageTable)) plus what each domain owns now,
//! so the check is O(domains) and the work a map can do is known before it starts.
//!
//! [`Error::BudgetExceeded`]: crate::Error::BudgetExceeded

use super::IoasState;
use crate::error::{Error, Result};
use crate::pagetable::TABLE_BYTES;

/// Limits on what maps can make the library allocate for one IOAS
/// ([`Iommu::ioas_set_budget`](crate::Iommu::ioas_set_budget)). The default is unlimited,
/// as a new IOAS's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Areas (mappings) the IOAS may hold at once, like VFIO type1's `dma_entry_limit`.
    pub max_areas: u64,
    /// Page-table bytes the domains of the IOAS may own at once, summed over its domains
    /// (each domain holds every area, so a second domain doubles the use). Counted in whole
    /// 4 KiB tables, roots included; a map is refused if the tables it could add (an upper
    /// bound from its IOVA, target and length) would pass this.
    pub max_table_bytes: u64,
    /// Page-table bytes one map may add, summed over the domains: bounds the work of one
    /// call (building 1 MiB of tables takes about 2 ms), so that a caller serving a guest
    /// is not held for long by one request.
    pub max_map_table_bytes: u64,
}

impl Budget {
    /// No limit (the default of a new IOAS).
    pub const UNLIMITED: Budget = Budget {
        max_areas: u64::MAX,
        max_table_bytes: u64::MAX,
        max_map_table_bytes: u64::MAX,
    };
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::UNLIMITED
    }
}

/// What an IOAS uses of its budget now ([`Iommu::ioas_usage`](crate::Iommu::ioas_usage)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BudgetUsage {
    /// Areas the IOAS holds.
    pub areas: u64,
    /// Page-table bytes its domains own (committed and pending ones; roots included).
    pub table_bytes: u64,
}

impl IoasState {
    /// Sets the budget; what the IOAS already uses stays (later maps see the new limits).
    pub(crate) fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// What the IOAS uses now.
    pub(crate) fn usage(&self) -> BudgetUsage {
        BudgetUsage {
            areas: self.areas.len() as u64,
            table_bytes: self.owned_tables().saturating_mul(TABLE_BYTES),
        }
    }

    /// Tables the live mirrors own (a spoiled pending domain is about to be dropped).
    fn owned_tables(&self) -> u64 {
        self.mirrors()
            .filter_map(|d| d.page_table())
            .map(|pt| pt.owned_tables())
            .sum()
    }

    /// `ENOMEM` if mapping `len` bytes of `target` at `iova` could take the IOAS past its
    /// budget. O(domains); nothing changes.
    pub(super) fn check_budget(&self, iova: u64, target: u64, len: u64) -> Result<()> {
        let b = &self.budget;
        if *b == Budget::UNLIMITED {
            return Ok(());
        }
        let areas = self.areas.len() as u64;
        if areas >= b.max_areas {
            return Err(Error::BudgetExceeded {
                what: "areas",
                limit: b.max_areas,
                needed: areas + 1,
            });
        }
        let (mut now, mut add) = (0u64, 0u64);
        for pt in self.mirrors().filter_map(|d| d.page_table()) {
            now = now.saturating_add(pt.owned_tables());
            add = add.saturating_add(pt.tables_bound(iova, target, len));
        }
        let add = add.saturating_mul(TABLE_BYTES);
        if add > b.max_map_table_bytes {
            return Err(Error::BudgetExceeded {
                what: "page-table bytes one map may add",
                limit: b.max_map_table_bytes,
                needed: add,
            });
        }
        let total = now.saturating_mul(TABLE_BYTES).saturating_add(add);
        if total > b.max_table_bytes {
            return Err(Error::BudgetExceeded {
                what: "page-table bytes",
                limit: b.max_table_bytes,
                needed: total,
            });
        }
        Ok(())
    }

    /// `ENOMEM` if the domains own more page-table bytes than the budget allows (checked
    /// after a new domain was populated, before it is committed).
    pub(crate) fn check_tables(&self) -> Result<()> {
        let total = self.owned_tables().saturating_mul(TABLE_BYTES);
        if total > self.budget.max_table_bytes {
            return Err(Error::BudgetExceeded {
                what: "page-table bytes",
                limit: self.budget.max_table_bytes,
                needed: total,
            });
        }
        Ok(())
    }
}
