//! The [`IoasMirror`]s of an IOAS (G15): told every map and unmap, in order, under the IOAS's
//! lock (an IOAS-local lock: the order of one IOAS's changes is the order they see).

use super::IoasState;
use crate::error::{Error, Result};
use crate::observers::{IoasMirror, ObserverId};
use crate::types::Prot;
use std::sync::Arc;

/// One registered mirror.
pub(super) type MirrorEntry = (ObserverId, Arc<dyn IoasMirror>);

impl IoasState {
    /// Replays every area (in IOVA order) to `mirror`, then adds it: no map or unmap of this
    /// IOAS comes between (the caller holds the lock). If it refuses one, it is told to unmap
    /// what it accepted and is not added.
    pub(crate) fn add_mirror(&mut self, id: ObserverId, mirror: Arc<dyn IoasMirror>) -> Result<()> {
        for (n, (&start, a)) in self.areas.iter().enumerate() {
            if let Err(e) = mirror.map(start, a.target, a.last - start + 1, a.prot) {
                for (&s, a) in self.areas.iter().take(n) {
                    mirror.unmap(s, a.last - s + 1);
                }
                return Err(Error::MirrorRefused {
                    observer: id,
                    errno: e.errno,
                });
            }
        }
        self.observers.push((id, mirror));
        Ok(())
    }

    /// Removes a mirror; false if it is not one of this IOAS's.
    pub(crate) fn remove_mirror(&mut self, id: ObserverId) -> bool {
        let before = self.observers.len();
        self.observers.retain(|(m, _)| *m != id);
        self.observers.len() != before
    }

    /// True if `id` is one of this IOAS's mirrors.
    pub(crate) fn has_mirror(&self, id: ObserverId) -> bool {
        self.observers.iter().any(|(m, _)| *m == id)
    }

    /// Tells every mirror of a new area, in registration order, before anything else changes.
    /// If one refuses, the mirrors before it are told to unmap it again, and the map fails
    /// with its errno (G8: nothing changed).
    pub(super) fn mirrors_map(&self, iova: u64, target: u64, len: u64, prot: Prot) -> Result<()> {
        for (n, (id, m)) in self.observers.iter().enumerate() {
            if let Err(e) = m.map(iova, target, len, prot) {
                for (_, earlier) in &self.observers[..n] {
                    earlier.unmap(iova, len);
                }
                return Err(Error::MirrorRefused {
                    observer: *id,
                    errno: e.errno,
                });
            }
        }
        Ok(())
    }

    /// Tells every mirror that an area left.
    pub(super) fn mirrors_unmap(&self, iova: u64, len: u64) {
        for (_, m) in &self.observers {
            m.unmap(iova, len);
        }
    }

    /// A destroyed IOAS: tells every mirror that each remaining area left, and drops them.
    pub(crate) fn drain_mirrors(&mut self) {
        let mirrors = std::mem::take(&mut self.observers);
        for (&s, a) in &self.areas {
            for (_, m) in &mirrors {
                m.unmap(s, a.last - s + 1);
            }
        }
    }
}
