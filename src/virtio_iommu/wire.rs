//! The little-endian layouts of the virtio-iommu request queue (virtio 1.3, section 5.13.6):
//! request types, status codes, flags and the device-readable part of each request, parsed
//! without a panic from any byte string.
//!
//! A request travels as two parts: the device-readable bytes (`head` and the request's fields)
//! and the device-writable bytes (`tail`, preceded by `properties` for PROBE). The parsers
//! here take the readable part only; [`write_offset`] says where a driver that lays a request
//! out as one struct (as Linux does) splits it.

/// `VIRTIO_IOMMU_T_ATTACH`.
pub const T_ATTACH: u8 = 1;
/// `VIRTIO_IOMMU_T_DETACH`.
pub const T_DETACH: u8 = 2;
/// `VIRTIO_IOMMU_T_MAP`.
pub const T_MAP: u8 = 3;
/// `VIRTIO_IOMMU_T_UNMAP`.
pub const T_UNMAP: u8 = 4;
/// `VIRTIO_IOMMU_T_PROBE`.
pub const T_PROBE: u8 = 5;

/// `VIRTIO_IOMMU_ATTACH_F_BYPASS`: attach to a bypass (identity) domain.
pub const ATTACH_F_BYPASS: u32 = 1 << 0;

/// `VIRTIO_IOMMU_MAP_F_READ`.
pub const MAP_F_READ: u32 = 1 << 0;
/// `VIRTIO_IOMMU_MAP_F_WRITE`.
pub const MAP_F_WRITE: u32 = 1 << 1;
/// `VIRTIO_IOMMU_MAP_F_MMIO` (a memory type, only with `VIRTIO_IOMMU_F_MMIO`).
pub const MAP_F_MMIO: u32 = 1 << 2;

/// `VIRTIO_IOMMU_PROBE_T_NONE`: the end of the property list.
pub const PROBE_T_NONE: u16 = 0;
/// `VIRTIO_IOMMU_PROBE_T_RESV_MEM`.
pub const PROBE_T_RESV_MEM: u16 = 1;
/// `VIRTIO_IOMMU_RESV_MEM_T_RESERVED`.
pub const RESV_MEM_T_RESERVED: u8 = 0;
/// `VIRTIO_IOMMU_RESV_MEM_T_MSI`.
pub const RESV_MEM_T_MSI: u8 = 1;

/// `struct virtio_iommu_req_head`: type and 3 reserved bytes.
pub const HEAD_SIZE: usize = 4;
/// `struct virtio_iommu_req_tail`: status and 3 reserved bytes.
pub const TAIL_SIZE: usize = 4;
/// `struct virtio_iommu_req_attach` without its tail.
pub const ATTACH_SIZE: usize = 20;
/// `struct virtio_iommu_req_detach` without its tail.
pub const DETACH_SIZE: usize = 20;
/// `struct virtio_iommu_req_map` without its tail.
pub const MAP_SIZE: usize = 36;
/// `struct virtio_iommu_req_unmap` without its tail.
pub const UNMAP_SIZE: usize = 28;
/// `struct virtio_iommu_req_probe` without `properties` and tail.
pub const PROBE_SIZE: usize = 72;
/// `struct virtio_iommu_probe_resv_mem`, its 4-byte property header included.
pub const RESV_MEM_SIZE: usize = 24;
/// `struct virtio_iommu_probe_property`: type and length.
pub const PROPERTY_HEAD_SIZE: usize = 4;

/// A status code the device writes into a request's tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// `VIRTIO_IOMMU_S_OK` (0): the request succeeded.
    Ok = 0,
    /// `VIRTIO_IOMMU_S_IOERR` (1): virtio communication error.
    IoErr = 1,
    /// `VIRTIO_IOMMU_S_UNSUPP` (2): unsupported request.
    Unsupp = 2,
    /// `VIRTIO_IOMMU_S_DEVERR` (3): internal device error.
    DevErr = 3,
    /// `VIRTIO_IOMMU_S_INVAL` (4): invalid parameters.
    Inval = 4,
    /// `VIRTIO_IOMMU_S_RANGE` (5): out-of-range parameters.
    Range = 5,
    /// `VIRTIO_IOMMU_S_NOENT` (6): entry not found.
    NoEnt = 6,
    /// `VIRTIO_IOMMU_S_FAULT` (7): bad address.
    Fault = 7,
    /// `VIRTIO_IOMMU_S_NOMEM` (8): insufficient resources.
    NoMem = 8,
}

impl Status {
    /// The byte on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The status a byte names, if any.
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::IoErr,
            2 => Status::Unsupp,
            3 => Status::DevErr,
            4 => Status::Inval,
            5 => Status::Range,
            6 => Status::NoEnt,
            7 => Status::Fault,
            8 => Status::NoMem,
            _ => return None,
        })
    }
}

/// A parsed request (its device-readable part).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// ATTACH `endpoint` to `domain`.
    Attach {
        /// Domain ID.
        domain: u32,
        /// Endpoint ID.
        endpoint: u32,
        /// `VIRTIO_IOMMU_ATTACH_F_*`.
        flags: u32,
        /// True if the 4 reserved bytes are not all zero.
        reserved_set: bool,
    },
    /// DETACH `endpoint` from `domain`.
    Detach {
        /// Domain ID.
        domain: u32,
        /// Endpoint ID.
        endpoint: u32,
    },
    /// MAP `virt_start ..= virt_end` to `phys_start ..`.
    Map {
        /// Domain ID.
        domain: u32,
        /// First IOVA.
        virt_start: u64,
        /// Last IOVA (inclusive).
        virt_end: u64,
        /// First physical address.
        phys_start: u64,
        /// `VIRTIO_IOMMU_MAP_F_*`.
        flags: u32,
    },
    /// UNMAP every mapping inside `virt_start ..= virt_end`.
    Unmap {
        /// Domain ID.
        domain: u32,
        /// First IOVA.
        virt_start: u64,
        /// Last IOVA (inclusive).
        virt_end: u64,
        /// True if the 4 reserved bytes are not all zero.
        reserved_set: bool,
    },
    /// PROBE the properties of `endpoint`.
    Probe {
        /// Endpoint ID.
        endpoint: u32,
    },
}

/// Why the readable part of a request could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than a `virtio_iommu_req_head`: the type is unknown.
    NoHead,
    /// A type this device does not recognize.
    UnknownType(u8),
    /// Fewer bytes than the request's type needs.
    Short {
        /// The request type.
        kind: u8,
        /// The bytes the type needs.
        need: usize,
        /// The bytes given.
        got: usize,
    },
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn nonzero(b: &[u8], range: std::ops::Range<usize>) -> bool {
    b.get(range).is_some_and(|s| s.iter().any(|&x| x != 0))
}

/// The size of the device-readable part of a request of type `kind`, if the type is known.
pub fn readable_size(kind: u8) -> Option<usize> {
    Some(match kind {
        T_ATTACH => ATTACH_SIZE,
        T_DETACH => DETACH_SIZE,
        T_MAP => MAP_SIZE,
        T_UNMAP => UNMAP_SIZE,
        T_PROBE => PROBE_SIZE,
        _ => return None,
    })
}

/// Where a request laid out as one struct of `len` bytes (head, fields, properties, tail)
/// splits into its device-readable and device-writable parts: as Linux's
/// `viommu_get_write_desc_offset`, the PROBE fields for a PROBE, else all but the tail.
/// `None` if the buffer is too short to hold its head and a tail.
pub fn write_offset(request: &[u8]) -> Option<usize> {
    let kind = *request.first()?;
    let off = if kind == T_PROBE {
        PROBE_SIZE
    } else {
        request.len().checked_sub(TAIL_SIZE)?
    };
    (off >= HEAD_SIZE && off.checked_add(TAIL_SIZE)? <= request.len()).then_some(off)
}

/// Parses the device-readable part of a request. The head's reserved bytes are ignored (the
/// device MUST ignore them); bytes after the request's fields are ignored.
pub fn parse(readable: &[u8]) -> Result<Request, ParseError> {
    let kind = *readable.first().ok_or(ParseError::NoHead)?;
    if readable.len() < HEAD_SIZE {
        return Err(ParseError::NoHead);
    }
    let need = readable_size(kind).ok_or(ParseError::UnknownType(kind))?;
    if readable.len() < need {
        return Err(ParseError::Short {
            kind,
            need,
            got: readable.len(),
        });
    }
    let b = readable;
    Ok(match kind {
        T_ATTACH => Request::Attach {
            domain: le32(b, 4),
            endpoint: le32(b, 8),
            flags: le32(b, 12),
            reserved_set: nonzero(b, 16..20),
        },
        T_DETACH => Request::Detach {
            domain: le32(b, 4),
            endpoint: le32(b, 8),
        },
        T_MAP => Request::Map {
            domain: le32(b, 4),
            virt_start: le64(b, 8),
            virt_end: le64(b, 16),
            phys_start: le64(b, 24),
            flags: le32(b, 32),
        },
        T_UNMAP => Request::Unmap {
            domain: le32(b, 4),
            virt_start: le64(b, 8),
            virt_end: le64(b, 16),
            reserved_set: nonzero(b, 24..28),
        },
        _ => Request::Probe {
            endpoint: le32(b, 4),
        },
    })
}

impl Request {
    /// The request type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Request::Attach { .. } => T_ATTACH,
            Request::Detach { .. } => T_DETACH,
            Request::Map { .. } => T_MAP,
            Request::Unmap { .. } => T_UNMAP,
            Request::Probe { .. } => T_PROBE,
        }
    }

    /// The device-readable bytes of this request, as a driver sends them (reserved bytes zero,
    /// or one reserved byte set for `reserved_set`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; readable_size(self.kind()).unwrap_or(HEAD_SIZE)];
        b[0] = self.kind();
        let put32 =
            |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        match *self {
            Request::Attach {
                domain,
                endpoint,
                flags,
                reserved_set,
            } => {
                put32(&mut b, 4, domain);
                put32(&mut b, 8, endpoint);
                put32(&mut b, 12, flags);
                b[16] = u8::from(reserved_set);
            }
            Request::Detach { domain, endpoint } => {
                put32(&mut b, 4, domain);
                put32(&mut b, 8, endpoint);
            }
            Request::Map {
                domain,
                virt_start,
                virt_end,
                phys_start,
                flags,
            } => {
                put32(&mut b, 4, domain);
                put64(&mut b, 8, virt_start);
                put64(&mut b, 16, virt_end);
                put64(&mut b, 24, phys_start);
                put32(&mut b, 32, flags);
            }
            Request::Unmap {
                domain,
                virt_start,
                virt_end,
                reserved_set,
            } => {
                put32(&mut b, 4, domain);
                put64(&mut b, 8, virt_start);
                put64(&mut b, 16, virt_end);
                b[24] = u8::from(reserved_set);
            }
            Request::Probe { endpoint } => put32(&mut b, 4, endpoint),
        }
        b
    }
}

/// Writes a `virtio_iommu_probe_resv_mem` property (24 bytes) at the start of `out`; `false`
/// (and nothing written) if it does not fit.
pub(crate) fn put_resv_mem(out: &mut [u8], subtype: u8, start: u64, end: u64) -> bool {
    let Some(p) = out.get_mut(..RESV_MEM_SIZE) else {
        return false;
    };
    p.fill(0);
    p[0..2].copy_from_slice(&PROBE_T_RESV_MEM.to_le_bytes());
    // The length excludes the property header (the spec's MUST).
    p[2..4].copy_from_slice(&((RESV_MEM_SIZE - PROPERTY_HEAD_SIZE) as u16).to_le_bytes());
    p[4] = subtype;
    p[8..16].copy_from_slice(&start.to_le_bytes());
    p[16..24].copy_from_slice(&end.to_le_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        let reqs = [
            Request::Attach {
                domain: 7,
                endpoint: 8,
                flags: 1,
                reserved_set: true,
            },
            Request::Detach {
                domain: 7,
                endpoint: 8,
            },
            Request::Map {
                domain: 1,
                virt_start: 0x1000,
                virt_end: 0x1fff,
                phys_start: 0xa000,
                flags: MAP_F_READ,
            },
            Request::Unmap {
                domain: 1,
                virt_start: 0x1000,
                virt_end: 0x1fff,
                reserved_set: false,
            },
            Request::Probe { endpoint: 3 },
        ];
        for r in reqs {
            let b = r.to_bytes();
            assert_eq!(Some(b.len()), readable_size(r.kind()));
            assert_eq!(parse(&b), Ok(r));
            assert!(matches!(
                parse(&b[..b.len() - 1]),
                Err(ParseError::Short { .. })
            ));
        }
        assert_eq!(parse(&[]), Err(ParseError::NoHead));
        assert_eq!(parse(&[1, 0]), Err(ParseError::NoHead));
        assert_eq!(parse(&[9, 0, 0, 0]), Err(ParseError::UnknownType(9)));
        // The struct sizes of the specification, tails included.
        assert_eq!(ATTACH_SIZE + TAIL_SIZE, 24);
        assert_eq!(MAP_SIZE + TAIL_SIZE, 40);
        assert_eq!(UNMAP_SIZE + TAIL_SIZE, 32);
    }

    #[test]
    fn write_offsets() {
        assert_eq!(write_offset(&[T_MAP; 40]), Some(36));
        let mut probe = vec![0u8; PROBE_SIZE + 512 + TAIL_SIZE];
        probe[0] = T_PROBE;
        assert_eq!(write_offset(&probe), Some(PROBE_SIZE));
        assert_eq!(write_offset(&probe[..PROBE_SIZE + 2]), None);
        assert_eq!(write_offset(&[T_MAP; 7]), None);
        assert_eq!(write_offset(&[]), None);
    }
}
