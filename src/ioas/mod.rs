//! The IOAS: the authoritative set of IOVA → target mappings ("areas") of one I/O address
//! space, the reserved ranges of the devices attached to it, and the paging domains that
//! mirror it.
//!
//! Every change to the area set is applied to every mirroring domain before the IOAS lock is
//! released, and a new domain is populated under the same lock before it joins the list, so a
//! domain always holds exactly its IOAS's areas (G7). The rules are iommufd's: fixed or
//! automatic IOVAs, `EEXIST` on overlap, areas never split, unmap-all with `(0, u64::MAX)`.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | [`Ioas`] and its locked state, the aperture limit |
//! | `areas.rs` | the area set: overlap lookups, map (fixed or automatic IOVA), unmap |
//! | `args.rs` | the checks of a map or unmap's own arguments |
//! | `budget.rs` | [`Budget`]: what maps may make the library allocate for the IOAS |
//! | `devices.rs` | what attached devices contribute: reserved ranges and apertures |
//! | `mirrors.rs` | the mirror list: the paging domains built on the IOAS, committed or pending |
//! | `observers.rs` | the [`crate::IoasMirror`]s: told every map and unmap, in order (G15) |
//! | `holes.rs` | the hole index: the free IOVA ranges, for automatic IOVAs |
//! | `treap.rs` | the augmented treap the hole index is built on |

mod areas;
mod args;
mod budget;
mod devices;
mod holes;
mod mirrors;
mod observers;
mod treap;

pub(crate) use areas::Area;
pub(crate) use args::check_range_args;
pub use budget::{Budget, BudgetUsage};
pub(crate) use devices::{DeviceLimits, Reservation};

use crate::sync::Mutex;
use crate::types::ObjId;
use holes::Holes;
use mirrors::Mirror;
use std::collections::BTreeMap;
use std::ops::Range;

/// The half-open range `first ..= last` as errors print it (saturating at the top page).
pub(crate) fn span(first: u64, last: u64) -> Range<u64> {
    first..last.saturating_add(1)
}

/// An I/O address space.
pub(crate) struct Ioas {
    pub(crate) id: ObjId,
    pub(crate) state: Mutex<IoasState>,
}

impl Ioas {
    pub(crate) fn new(id: ObjId) -> Ioas {
        Ioas {
            id,
            state: Mutex::new(IoasState::default()),
        }
    }
}

/// The part of an IOAS its lock protects.
pub(crate) struct IoasState {
    /// Set by `destroy`: a map or unmap that looked the IOAS up just before fails `ENOENT`.
    pub(crate) destroyed: bool,
    pub(crate) areas: BTreeMap<u64, Area>,
    /// Every paging domain built on this IOAS: committed ones by HWPT id, and pending ones
    /// (populated by an attach or `hwpt_alloc` that has not committed yet).
    domains: Vec<Mirror>,
    reserved: Vec<Reservation>,
    /// Aperture ends of the attached devices, by attachment (device, PASID or 0).
    apertures: Vec<((ObjId, u32), u64)>,
    /// The free IOVA ranges (everything outside `areas` and `reserved`), for automatic
    /// IOVAs: built by the first automatic map, then kept up to date, so that an IOAS whose
    /// maps all have fixed IOVAs (a virtio-iommu front end's) does not pay for it.
    holes: Option<Holes>,
    /// [`IoasState::limit`], recomputed when a device or a committed domain comes or goes.
    limit: u64,
    /// What maps may make the library allocate ([`Budget`]).
    budget: Budget,
    /// The [`crate::IoasMirror`]s, in registration order.
    observers: Vec<observers::MirrorEntry>,
}

impl Default for IoasState {
    fn default() -> IoasState {
        IoasState {
            destroyed: false,
            areas: BTreeMap::new(),
            domains: Vec::new(),
            reserved: Vec::new(),
            apertures: Vec::new(),
            holes: None,
            limit: u64::MAX,
            budget: Budget::UNLIMITED,
            observers: Vec::new(),
        }
    }
}

impl IoasState {
    /// The last IOVA every attached device and every committed domain can reach (a pending
    /// domain narrows nothing: see `mirrors.rs`).
    pub(crate) fn limit(&self) -> u64 {
        debug_assert_eq!(self.limit, self.compute_limit());
        self.limit
    }

    fn compute_limit(&self) -> u64 {
        let devs = self.apertures.iter().map(|&(_, last)| last);
        let doms = self
            .domains
            .iter()
            .filter(|m| m.hwpt.is_some())
            .filter_map(|m| m.domain.page_table().map(|pt| pt.aperture_last()));
        devs.chain(doms).min().unwrap_or(u64::MAX)
    }

    /// Recomputes the cached limit after the device or domain lists changed.
    fn refresh_limit(&mut self) {
        self.limit = self.compute_limit();
    }
}
