//! What the devices attached to an IOAS contribute to it: their reserved ranges (no area may
//! overlap one) and their apertures (no area may lie past one).

use super::{span, IoasState};
use crate::error::{Error, Result};
use crate::types::ObjId;

/// A page-rounded reserved IOVA range of an attached device, inclusive.
#[derive(Clone, Debug)]
pub(crate) struct Reservation {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) dev: ObjId,
    /// The attachment that brought it: 0 for the RID, else a PASID.
    pub(crate) pasid: u32,
}

/// What an attached device contributes to an IOAS, per attachment: its RID (PASID 0) or one
/// of its PASIDs (a PASID domain obeys the device's aperture and reserved ranges as the RID
/// domain does).
#[derive(Clone)]
pub(crate) struct DeviceLimits {
    pub(crate) dev: ObjId,
    pub(crate) pasid: u32,
    pub(crate) aperture_last: u64,
    pub(crate) reserved: Vec<(u64, u64)>,
}

impl IoasState {
    /// The first reserved range that overlaps `first ..= last`.
    pub(super) fn reserved_overlapping(&self, first: u64, last: u64) -> Option<&Reservation> {
        self.reserved
            .iter()
            .find(|r| r.first <= last && r.last >= first)
    }

    /// `EINVAL` if some area lies outside the device's aperture.
    pub(crate) fn check_fits(&self, dev: &DeviceLimits, pt: ObjId) -> Result<()> {
        // Areas do not overlap, so the one that starts last also ends last.
        match self.areas.last_key_value() {
            Some((&s, a)) if a.last > dev.aperture_last => Err(Error::Incompatible {
                dev: dev.dev,
                pt,
                mapping: span(s, a.last),
                aperture_end: dev.aperture_last.saturating_add(1),
            }),
            _ => Ok(()),
        }
    }

    /// `EADDRINUSE` if one of the device's reserved ranges collides with an area.
    pub(crate) fn check_reserved(&self, dev: &DeviceLimits) -> Result<()> {
        for &(first, last) in &dev.reserved {
            if let Some((s, a)) = self.area_overlapping(first, last) {
                return Err(Error::ReservedInUse {
                    dev: dev.dev,
                    reserved: span(first, last),
                    mapping: span(s, a.last),
                });
            }
        }
        Ok(())
    }

    /// Records an attached device's reservations and aperture (after the checks passed).
    pub(crate) fn add_device(&mut self, dev: &DeviceLimits) {
        self.apertures
            .push(((dev.dev, dev.pasid), dev.aperture_last));
        for &(first, last) in &dev.reserved {
            debug_assert!(self.area_overlapping(first, last).is_none());
            self.reserved.push(Reservation {
                first,
                last,
                dev: dev.dev,
                pasid: dev.pasid,
            });
            if let Some(h) = &mut self.holes {
                h.occupy(first, last);
            }
        }
        self.refresh_limit();
    }

    /// Forgets an attachment (a device's RID, `pasid` 0, or one of its PASIDs) that left this
    /// IOAS; the device's other attachments to it keep their reservations.
    pub(crate) fn remove_device(&mut self, dev: ObjId, pasid: u32) {
        self.apertures.retain(|&(a, _)| a != (dev, pasid));
        // Free the device's ranges (no area lies in a reserved range), then take back what
        // other devices' reservations still cover (a handful of ranges).
        let mut holes = self.holes.as_mut();
        let mut freed = false;
        self.reserved.retain(|r| {
            if (r.dev, r.pasid) != (dev, pasid) {
                return true;
            }
            if let Some(h) = holes.as_mut() {
                h.release(r.first, r.last);
            }
            freed = true;
            false
        });
        if let (true, Some(h)) = (freed, holes) {
            for r in &self.reserved {
                h.occupy(r.first, r.last);
            }
        }
        self.refresh_limit();
    }
}
