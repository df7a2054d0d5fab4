//! Intel VT-d scalable-mode first-stage translation (VT-d spec 3.x, section 3.6): x86-64
//! paging entries in a 4-level (48-bit) or 5-level (57-bit) table; the walk QEMU's
//! `vtd_iova_to_fspte` does.

use super::{Context, Reader, Walker};
use crate::translation::FaultKind;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// Address bits 51:12.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// A first-stage table, checked.
#[derive(Debug)]
pub(crate) struct VtdTable {
    root: u64,
    /// 4 or 5.
    levels: u32,
    /// 48 or 57.
    width: u32,
}

impl VtdTable {
    pub(crate) fn parse(pgtbl_addr: u64, addr_width: u8) -> Result<VtdTable, &'static str> {
        let levels = match addr_width {
            48 => 4,
            57 => 5,
            _ => return Err("VT-d first-stage addr_width must be 48 (4-level) or 57 (5-level)"),
        };
        if pgtbl_addr & !ADDR_MASK != 0 {
            return Err("VT-d first-stage table address must be 4 KiB aligned and below 2^52");
        }
        Ok(VtdTable {
            root: pgtbl_addr,
            levels,
            width: u32::from(addr_width),
        })
    }
}

impl Walker for VtdTable {
    /// One table for every substream: a nested VT-d HWPT is one PASID-table entry's first
    /// stage, whichever PASID (or the RID) it is attached at.
    fn context(&self, _ssid: u32, _rd: &Reader<'_>) -> Result<Context, FaultKind> {
        Ok(Context::Table {
            root: self.root,
            level: self.levels - 1,
            input_bits: self.width,
            disabled: false,
        })
    }

    fn walk(
        &self,
        ctx: &Context,
        iova: u64,
        rd: &Reader<'_>,
    ) -> Result<(u64, u64, bool), FaultKind> {
        let Context::Table { root, level, .. } = *ctx else {
            unreachable!("walk is called for table contexts")
        };
        // Canonical for the width: bits 63 .. width-1 all equal.
        let unused = 64 - self.width;
        if (((iova << unused) as i64) >> unused) as u64 != iova {
            return Err(FaultKind::Aperture);
        }
        let mut table = root;
        let mut level = level;
        let mut writable = true;
        loop {
            let shift = 12 + 9 * level;
            let index = (iova >> shift) & 0x1ff;
            let e = rd.read(table + index * 8)?;
            if e & PRESENT == 0 {
                return Err(FaultKind::Unmapped);
            }
            // A write needs R/W at every level.
            writable &= e & WRITABLE != 0;
            let leaf = match level {
                0 => true,
                1 | 2 => e & PAGE_SIZE_BIT != 0,
                // PS is reserved in PML4 and PML5 entries: a reserved-bit fault.
                _ if e & PAGE_SIZE_BIT != 0 => return Err(FaultKind::Unmapped),
                _ => false,
            };
            if leaf {
                let size_mask = (1u64 << shift) - 1;
                return Ok((
                    (e & ADDR_MASK & !size_mask) | (iova & size_mask & !0xfff),
                    size_mask,
                    writable,
                ));
            }
            table = e & ADDR_MASK;
            level -= 1;
        }
    }
}
