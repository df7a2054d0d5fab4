//! The checks of a map or unmap's own arguments, made before any state is looked at.

use crate::error::{Error, Result};
use crate::types::PAGE_SIZE;

/// Validates a map or unmap's own arguments (no state needed): non-zero, 4 KiB aligned, no
/// wrap-around.
pub(crate) fn check_range_args(
    what: &'static str,
    iova: u64,
    target: Option<u64>,
    len: u64,
) -> Result<()> {
    if len == 0 {
        return Err(Error::ZeroLength { what });
    }
    if iova % PAGE_SIZE != 0 {
        return Err(Error::Misaligned {
            what: "iova",
            value: iova,
        });
    }
    if let Some(t) = target {
        if t % PAGE_SIZE != 0 {
            return Err(Error::Misaligned {
                what: "target",
                value: t,
            });
        }
    }
    if len % PAGE_SIZE != 0 {
        return Err(Error::Misaligned {
            what: "length",
            value: len,
        });
    }
    if iova.checked_add(len - 1).is_none() {
        return Err(Error::Overflow {
            what: "iova",
            start: iova,
            len,
        });
    }
    if let Some(t) = target {
        if t.checked_add(len - 1).is_none() {
            return Err(Error::Overflow {
                what: "target",
                start: t,
                len,
            });
        }
    }
    Ok(())
}
