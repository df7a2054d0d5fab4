//! Identity domains: a domain that translates an IOVA to the same address inside the ranges
//! its HWPT was allocated with (a VMM's guest RAM and, if it chooses, MMIO windows), and
//! faults `Unmapped` outside them. What firmware and an early kernel see through an IOMMU
//! in bypass ([`crate::Iommu::hwpt_alloc_identity`]).
//!
//! No page table and no walk: a translation is a binary search of a short sorted list.

use crate::translation::{Chunk, Fault, FaultKind, Translation};
use std::ops::Range;

/// Up to this many ranges, a lookup scans them in order (guest RAM, usually the first range,
/// is found by the first comparison); more take a binary search.
const LINEAR: usize = 8;

/// The ranges of an identity domain: sorted, disjoint and not adjacent (touching ranges are
/// merged), inclusive `(first, last)` pairs.
pub(crate) struct IdentityMap {
    ranges: Box<[(u64, u64)]>,
}

impl IdentityMap {
    /// The map of `ranges` (half-open, none empty: the caller checked), in any order;
    /// overlapping and touching ranges are merged.
    pub(crate) fn new(ranges: &[Range<u64>]) -> IdentityMap {
        let mut sorted: Vec<(u64, u64)> = ranges.iter().map(|r| (r.start, r.end - 1)).collect();
        sorted.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
        for (first, last) in sorted {
            match merged.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => merged.push((first, last)),
            }
        }
        IdentityMap {
            ranges: merged.into_boxed_slice(),
        }
    }

    /// The ranges, as half-open ranges in address order.
    pub(crate) fn ranges(&self) -> Vec<Range<u64>> {
        self.ranges.iter().map(|&(f, l)| f..l + 1).collect()
    }

    /// The last address of the range that holds `iova`.
    #[inline]
    fn range_last(&self, iova: u64) -> Option<u64> {
        if self.ranges.len() <= LINEAR {
            for &(first, last) in self.ranges.iter() {
                if iova < first {
                    return None;
                }
                if iova <= last {
                    return Some(last);
                }
            }
            return None;
        }
        let i = self.ranges.partition_point(|&(first, _)| first <= iova);
        let &(_, last) = self.ranges.get(i.checked_sub(1)?)?;
        (iova <= last).then_some(last)
    }

    /// The piece of `iova ..= last` that the range holding `iova` covers, at the same
    /// address; `Unmapped` if no range holds it.
    #[inline]
    pub(crate) fn translate_chunk(&self, iova: u64, last: u64) -> Result<Chunk, Fault> {
        let Some(end) = self.range_last(iova) else {
            return Err(Fault {
                iova,
                kind: FaultKind::Unmapped,
            });
        };
        // `end` is below 2^64 - 1 (ranges are half-open), so the length cannot wrap.
        Ok(Chunk {
            iova,
            target: iova,
            len: end.min(last) - iova + 1,
        })
    }

    /// All of `iova ..= last` as one chunk, or `Unmapped` at the first address past the range
    /// that holds `iova` (ranges are merged, so the next address is outside every range).
    pub(crate) fn translate(&self, iova: u64, last: u64) -> Result<Translation<'static>, Fault> {
        let chunk = self.translate_chunk(iova, last)?;
        if chunk.len - 1 < last - iova {
            return Err(Fault {
                iova: iova + chunk.len,
                kind: FaultKind::Unmapped,
            });
        }
        Ok(Translation::one(chunk))
    }
}

#[cfg(all(test, not(viommu_loom)))]
mod tests {
    use super::*;

    #[test]
    fn merges_and_translates() {
        let m = IdentityMap::new(&[0x3000..0x4000, 0x1000..0x2000, 0x2000..0x2800, 0x10..0x20]);
        assert_eq!(m.ranges(), vec![0x10..0x20, 0x1000..0x2800, 0x3000..0x4000]);
        let c = m.translate_chunk(0x1800, 0x2fff).unwrap();
        assert_eq!((c.iova, c.target, c.len), (0x1800, 0x1800, 0x1000));
        assert_eq!(m.translate(0x1800, 0x2fff).unwrap_err().iova, 0x2800);
        assert_eq!(m.translate_chunk(0x2800, 0x2800).unwrap_err().iova, 0x2800);
        assert_eq!(
            m.translate_chunk(0, 0).unwrap_err().kind,
            FaultKind::Unmapped
        );
        assert_eq!(m.translate_chunk(0x4000, 0x4000).unwrap_err().iova, 0x4000);
        let t = m.translate(0x3000, 0x3fff).unwrap();
        assert_eq!(t.as_slice()[0].len, 0x1000);
        let many: Vec<Range<u64>> = (0..20u64).map(|i| i * 0x1000..i * 0x1000 + 0x800).collect();
        let m = IdentityMap::new(&many);
        assert_eq!(m.translate_chunk(0x5400, 0x5400).unwrap().target, 0x5400);
        assert_eq!(m.translate_chunk(0x5800, 0x5800).unwrap_err().iova, 0x5800);
        assert_eq!(m.translate_chunk(0x13_7ff, 0x20_000).unwrap().len, 1);
        assert!(m.translate_chunk(u64::MAX, u64::MAX).is_err());
        let everything = std::iter::once(0..u64::MAX).collect::<Vec<_>>();
        let top = IdentityMap::new(everything.as_slice());
        let c = top.translate_chunk(0, u64::MAX).unwrap();
        assert_eq!(c.len, u64::MAX);
    }
}
