//! A vhost-style device IOTLB over viommu, end to end (shared by `tests/vhost_iotlb.rs` and
//! `examples/vhost_iotlb.rs`, which include it with `#[path]`).
//!
//! * The **back end** (a thread) keeps its own IOTLB, a `BTreeMap` from IOVA ranges to guest
//!   addresses and permissions, and "copies" by reading guest memory through it. It talks to
//!   the front end over one `UnixStream` of a socket pair, nothing else: on a miss it sends
//!   `VHOST_IOTLB_MISS` and waits for `VHOST_IOTLB_UPDATE` (or `VHOST_IOTLB_ACCESS_FAIL`); on
//!   `VHOST_IOTLB_INVALIDATE` it drops the range and echoes the message back as its
//!   acknowledgment. It reads its socket between batches of copies, as a vhost worker reads
//!   its IOTLB messages between runs over its rings.
//! * The **front end** (a thread reading the other end) answers a miss from
//!   `Device::translate_chunk`, and completes the oldest pending `AckToken` on each echo.
//! * A `DeviceObserver` on the device sends `VHOST_IOTLB_INVALIDATE` and returns
//!   `Ack::pending()`: the fencing call (`ioas_unmap`, `device_replace`) returns only after the
//!   back end dropped the range.
//! * The **control** side (the caller's thread) maps, unmaps and replaces the device between
//!   two IOASes. The guest reuses an unmapped page at once: right after `ioas_unmap` returns it
//!   writes `POISON` into the page. A copy that reads `POISON` went through a stale entry.
//!
//! The front end translates and sends its UPDATE under the same lock the observer sends its
//! INVALIDATE under. Otherwise an UPDATE built from a translation made before an unmap could
//! reach the back end after that unmap's INVALIDATE, and install an entry nothing removes.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::ops::RangeInclusive;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use viommu::{Access, Ack, AckToken, DeviceInfo, DeviceObserver, GroupId, Iommu, ObjId, Prot};

#[path = "rng.rs"]
mod rng;
use rng::Rng;

// The message types and permissions of `struct vhost_iotlb_msg`, as Linux's
// include/uapi/linux/vhost_types.h defines them.
/// `VHOST_ACCESS_RO`.
pub const VHOST_ACCESS_RO: u8 = 0x1;
/// `VHOST_ACCESS_WO`.
pub const VHOST_ACCESS_WO: u8 = 0x2;
/// `VHOST_ACCESS_RW`.
pub const VHOST_ACCESS_RW: u8 = 0x3;
/// `VHOST_IOTLB_MISS`: back end to front end, a translation is missing.
pub const VHOST_IOTLB_MISS: u8 = 1;
/// `VHOST_IOTLB_UPDATE`: front end to back end, a translation.
pub const VHOST_IOTLB_UPDATE: u8 = 2;
/// `VHOST_IOTLB_INVALIDATE`: front end to back end, drop a range; echoed back by the back end
/// as its acknowledgment (this protocol's own convention).
pub const VHOST_IOTLB_INVALIDATE: u8 = 3;
/// `VHOST_IOTLB_ACCESS_FAIL`: front end to back end, the miss cannot be served.
pub const VHOST_IOTLB_ACCESS_FAIL: u8 = 4;

/// `struct vhost_iotlb_msg` (vhost_types.h): three `__u64`, two `__u8`, padded to 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(C)]
pub struct IotlbMsg {
    pub iova: u64,
    pub size: u64,
    pub uaddr: u64,
    pub perm: u8,
    pub kind: u8,
}

/// The message's size on the wire (`sizeof(struct vhost_iotlb_msg)`).
pub const MSG_LEN: usize = 32;

impl IotlbMsg {
    /// The wire form, in the host's byte order as the kernel's.
    pub fn encode(&self) -> [u8; MSG_LEN] {
        let mut b = [0u8; MSG_LEN];
        b[0..8].copy_from_slice(&self.iova.to_ne_bytes());
        b[8..16].copy_from_slice(&self.size.to_ne_bytes());
        b[16..24].copy_from_slice(&self.uaddr.to_ne_bytes());
        b[24] = self.perm;
        b[25] = self.kind;
        b
    }

    pub fn decode(b: &[u8]) -> IotlbMsg {
        let u = |i: usize| u64::from_ne_bytes(b[i..i + 8].try_into().unwrap());
        IotlbMsg {
            iova: u(0),
            size: u(8),
            uaddr: u(16),
            perm: b[24],
            kind: b[25],
        }
    }

    /// The last IOVA the message covers (`size` 0 is not sent).
    fn last(&self) -> u64 {
        self.iova.saturating_add(self.size - 1)
    }
}

/// Reads whole messages from a stream (blocking or not), keeping a partial one for later.
struct Reader {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Reader {
    /// The next message: `Ok(None)` if none is ready (non-blocking stream) and `Err` at EOF.
    fn next(&mut self) -> Result<Option<IotlbMsg>, ()> {
        loop {
            if self.buf.len() >= MSG_LEN {
                let m = IotlbMsg::decode(&self.buf[..MSG_LEN]);
                self.buf.drain(..MSG_LEN);
                return Ok(Some(m));
            }
            let mut chunk = [0u8; 16 * MSG_LEN];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }
}

/// The guest's page size, and the unit of everything here.
pub const PAGE: u64 = 0x1000;
/// The IOVAs the back end copies from: `IOVA_PAGES` pages at `IOVA_BASE`.
pub const IOVA_BASE: u64 = 0x10_0000;
pub const IOVA_PAGES: u64 = 16;
/// Guest memory: one word per page, `MEM_PAGES` pages from guest address 0.
pub const MEM_PAGES: u64 = 256;
/// What the guest writes into a page it reused: a copy never reads it through a valid entry.
pub const POISON: u64 = u64::MAX;

/// One run's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The broken protocol: the observer returns `Ack::Done` as soon as the INVALIDATE is
    /// sent, without waiting for the back end, which sends no acknowledgment. (A back end that
    /// still echoed each INVALIDATE to a front end that does not wait could fill both
    /// sockets' buffers, each side blocked writing to the other.)
    pub skip_ack: bool,
    /// Run until this many copies, unmaps (of the attached IOAS) and replaces are done ...
    pub min_copies: u64,
    pub min_unmaps: u64,
    pub min_replaces: u64,
    /// ... or this much time passed.
    pub max_time: Duration,
    /// Stop at the first stale read.
    pub stop_on_stale: bool,
    /// Copies the back end makes between two reads of its socket.
    pub batch: u32,
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            skip_ack: false,
            min_copies: 1_000_000,
            min_unmaps: 10_000,
            min_replaces: 10_000,
            max_time: Duration::from_secs(60),
            stop_on_stale: false,
            batch: 64,
            seed: 1,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Reads of guest memory through an IOTLB entry.
    pub copies: u64,
    /// Of those, reads that found `POISON`: through an entry whose unmap had returned.
    pub stale: u64,
    /// MISS messages, and of them the ones answered ACCESS_FAIL.
    pub misses: u64,
    pub faults: u64,
    /// Unmaps of the device's IOAS (each invalidated the back end), and of the other IOAS.
    pub unmaps: u64,
    pub detached_unmaps: u64,
    pub replaces: u64,
    /// Time spent in `ioas_unmap` of the device's IOAS, and in `device_replace`.
    pub unmap_time: Duration,
    pub replace_time: Duration,
    pub elapsed: Duration,
}

/// The front end's half of the socket: written by the miss handler and by the observer,
/// under one lock, with the acknowledgments the back end still owes in sending order.
struct Link {
    stream: UnixStream,
    pending: VecDeque<AckToken>,
}

impl Link {
    fn send(&mut self, m: IotlbMsg) {
        // The peer closing early is the end of the run; nothing to report.
        let _ = self.stream.write_all(&m.encode());
    }
}

/// The device observer: an invalidation is a message to the back end.
struct VhostObserver {
    link: Arc<Mutex<Link>>,
    skip_ack: bool,
}

impl DeviceObserver for VhostObserver {
    fn invalidate(&self, _pasid: Option<u32>, iovas: RangeInclusive<u64>) -> Ack {
        let (first, last) = (*iovas.start(), *iovas.end());
        let mut link = self.link.lock().unwrap();
        link.send(IotlbMsg {
            iova: first,
            // Every IOVA is `0..=u64::MAX`, one byte more than a u64 counts: the last byte of
            // the space is left out (no page the back end uses lies there).
            size: (last - first).saturating_add(1),
            uaddr: 0,
            perm: 0,
            kind: VHOST_IOTLB_INVALIDATE,
        });
        if self.skip_ack {
            return Ack::Done;
        }
        let (ack, token) = Ack::pending();
        link.pending.push_back(token);
        ack
    }
}

/// The front end's socket reader: serves misses, completes acknowledgments; returns at EOF.
fn front_end(stream: UnixStream, link: Arc<Mutex<Link>>, dev: viommu::Device) {
    let mut rx = Reader {
        stream,
        buf: Vec::new(),
    };
    while let Ok(Some(m)) = rx.next() {
        match m.kind {
            VHOST_IOTLB_MISS => {
                let access = if m.perm & VHOST_ACCESS_WO != 0 {
                    Access::Write
                } else {
                    Access::Read
                };
                // Translate and send under the link's lock: see the module's docs.
                let mut link = link.lock().unwrap();
                let reply = match dev.translate_chunk(m.iova, PAGE - m.iova % PAGE, access) {
                    Ok(c) => IotlbMsg {
                        iova: c.iova,
                        size: c.len,
                        uaddr: c.target,
                        perm: m.perm,
                        kind: VHOST_IOTLB_UPDATE,
                    },
                    Err(_) => IotlbMsg {
                        kind: VHOST_IOTLB_ACCESS_FAIL,
                        ..m
                    },
                };
                link.send(reply);
            }
            VHOST_IOTLB_INVALIDATE => {
                // The echo: the back end dropped the range of the oldest INVALIDATE.
                let token = link.lock().unwrap().pending.pop_front();
                token
                    .expect("an acknowledgment nobody waits for")
                    .complete();
            }
            other => panic!("front end: unexpected message type {other}"),
        }
    }
}

/// The back end's IOTLB: first IOVA -> (last IOVA, guest address, permissions).
type Iotlb = BTreeMap<u64, (u64, u64, u8)>;

fn iotlb_find(tlb: &Iotlb, iova: u64) -> Option<(u64, u8)> {
    tlb.range(..=iova)
        .next_back()
        .filter(|(_, &(last, _, _))| iova <= last)
        .map(|(&first, &(_, uaddr, perm))| (uaddr + (iova - first), perm))
}

struct BackEnd {
    rx: Reader,
    tx: UnixStream,
    tlb: Iotlb,
    mem: Arc<Vec<AtomicU64>>,
    /// Acknowledge each INVALIDATE (the protocol) or not (`Config::skip_ack`).
    ack: bool,
}

impl BackEnd {
    /// Applies one message from the front end; an UPDATE or ACCESS_FAIL is returned.
    fn handle(&mut self, m: IotlbMsg) -> Option<IotlbMsg> {
        match m.kind {
            VHOST_IOTLB_INVALIDATE => {
                let last = m.last();
                let doomed: Vec<u64> = self
                    .tlb
                    .range(..=last)
                    .filter(|(_, &(l, _, _))| l >= m.iova)
                    .map(|(&f, _)| f)
                    .collect();
                for f in doomed {
                    self.tlb.remove(&f);
                }
                // Dropped: acknowledge.
                if self.ack {
                    let _ = self.tx.write_all(&m.encode());
                }
                None
            }
            VHOST_IOTLB_UPDATE | VHOST_IOTLB_ACCESS_FAIL => Some(m),
            other => panic!("back end: unexpected message type {other}"),
        }
    }

    /// Reads every message ready now; false at EOF.
    fn poll(&mut self) -> bool {
        loop {
            match self.rx.next() {
                Ok(Some(m)) => {
                    assert!(self.handle(m).is_none(), "an answer to no miss");
                }
                Ok(None) => return true,
                Err(()) => return false,
            }
        }
    }

    /// Sends a MISS for `iova` and waits for its answer (handling the invalidations that come
    /// first); true if it installed an entry.
    fn miss(&mut self, iova: u64) -> bool {
        let _ = self.tx.write_all(
            &IotlbMsg {
                iova,
                size: 0,
                uaddr: 0,
                perm: VHOST_ACCESS_RO,
                kind: VHOST_IOTLB_MISS,
            }
            .encode(),
        );
        self.rx.stream.set_nonblocking(false).unwrap();
        let answer = loop {
            match self.rx.next() {
                Ok(Some(m)) => {
                    if let Some(a) = self.handle(m) {
                        break Some(a);
                    }
                }
                Ok(None) => unreachable!("blocking"),
                Err(()) => break None,
            }
        };
        self.rx.stream.set_nonblocking(true).unwrap();
        match answer {
            Some(a) if a.kind == VHOST_IOTLB_UPDATE => {
                self.tlb.insert(a.iova, (a.last(), a.uaddr, a.perm));
                true
            }
            _ => false,
        }
    }
}

struct Counters {
    copies: AtomicU64,
    stale: AtomicU64,
    misses: AtomicU64,
    faults: AtomicU64,
    stop: AtomicBool,
}

fn back_end(mut be: BackEnd, c: &Counters, batch: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let (mut copies, mut stale) = (0u64, 0u64);
    while !c.stop.load(Ordering::Relaxed) {
        if !be.poll() {
            break;
        }
        for _ in 0..batch {
            let iova = IOVA_BASE + (rng.next_u64() % IOVA_PAGES) * PAGE + rng.next_u64() % PAGE;
            let uaddr = match iotlb_find(&be.tlb, iova) {
                Some((uaddr, perm)) if perm & VHOST_ACCESS_RO != 0 => uaddr,
                _ => {
                    c.misses.fetch_add(1, Ordering::Relaxed);
                    if !be.miss(iova) {
                        c.faults.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    iotlb_find(&be.tlb, iova).expect("just installed").0
                }
            };
            // The copy: read the guest page through the entry.
            let v = be.mem[(uaddr / PAGE) as usize].load(Ordering::Acquire);
            copies += 1;
            if v == POISON {
                stale += 1;
            }
        }
        c.copies.store(copies, Ordering::Relaxed);
        c.stale.store(stale, Ordering::Relaxed);
    }
    c.copies.store(copies, Ordering::Relaxed);
    c.stale.store(stale, Ordering::Relaxed);
}

/// One IOAS as the guest sees it: which page each IOVA page maps.
struct Space {
    id: ObjId,
    pages: [Option<u64>; IOVA_PAGES as usize],
}

/// The guest's side: memory and the pages not mapped anywhere (oldest freed first, so a
/// freed page stays poisoned as long as possible before it is reused).
struct Guest {
    mem: Arc<Vec<AtomicU64>>,
    free: VecDeque<u64>,
}

impl Guest {
    fn map(&mut self, iommu: &Iommu, s: &mut Space, i: usize) {
        let page = self.free.pop_front().expect("guest memory exhausted");
        // A fresh value before the page is mapped: the map publishes it.
        self.mem[page as usize].store(page, Ordering::Release);
        iommu
            .ioas_map(
                s.id,
                Some(IOVA_BASE + i as u64 * PAGE),
                page * PAGE,
                PAGE,
                Prot::RW,
            )
            .unwrap();
        s.pages[i] = Some(page);
    }

    /// Unmaps IOVA page `i`, then reuses its page at once: poison.
    fn unmap(&mut self, iommu: &Iommu, s: &mut Space, i: usize) {
        let page = s.pages[i].take().unwrap();
        assert_eq!(
            iommu
                .ioas_unmap(s.id, IOVA_BASE + i as u64 * PAGE, PAGE)
                .unwrap(),
            PAGE
        );
        self.mem[page as usize].store(POISON, Ordering::Release);
        self.free.push_back(page);
    }
}

fn pick(rng: &mut Rng, s: &Space, mapped: bool) -> Option<usize> {
    let n = s.pages.iter().filter(|p| p.is_some() == mapped).count();
    if n == 0 {
        return None;
    }
    let k = (rng.next_u64() % n as u64) as usize;
    s.pages
        .iter()
        .enumerate()
        .filter(|(_, p)| p.is_some() == mapped)
        .nth(k)
        .map(|(i, _)| i)
}

/// Runs the scenario; the calling thread is the control side.
pub fn run(cfg: &Config) -> Report {
    let iommu = Iommu::new();
    let (dev_id, dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let mem: Arc<Vec<AtomicU64>> = Arc::new((0..MEM_PAGES).map(AtomicU64::new).collect());
    let mut guest = Guest {
        mem: mem.clone(),
        free: (0..MEM_PAGES).collect(),
    };
    let mut spaces = [0, 1].map(|_| Space {
        id: iommu.ioas_alloc().unwrap(),
        pages: [None; IOVA_PAGES as usize],
    });
    let mut rng = Rng::new(cfg.seed);
    for s in spaces.iter_mut() {
        for i in 0..IOVA_PAGES as usize {
            if rng.next_u64() % 4 != 0 {
                guest.map(&iommu, s, i);
            }
        }
    }
    iommu.device_attach(dev_id, spaces[0].id).unwrap();

    let (front, back) = UnixStream::pair().unwrap();
    let link = Arc::new(Mutex::new(Link {
        stream: front.try_clone().unwrap(),
        pending: VecDeque::new(),
    }));
    // A generous deadline: a loaded machine must not turn a slow acknowledgment into a failure.
    iommu
        .device_add_observer_with_deadline(
            dev_id,
            Arc::new(VhostObserver {
                link: link.clone(),
                skip_ack: cfg.skip_ack,
            }),
            Duration::from_secs(30),
        )
        .unwrap();
    let counters = Arc::new(Counters {
        copies: AtomicU64::new(0),
        stale: AtomicU64::new(0),
        misses: AtomicU64::new(0),
        faults: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    back.set_nonblocking(true).unwrap();
    let be = BackEnd {
        rx: Reader {
            stream: back.try_clone().unwrap(),
            buf: Vec::new(),
        },
        tx: back,
        tlb: Iotlb::new(),
        mem,
        ack: !cfg.skip_ack,
    };
    let backend = {
        let c = counters.clone();
        let (batch, seed) = (cfg.batch, cfg.seed ^ 0x5eed);
        thread::spawn(move || back_end(be, &c, batch, seed))
    };
    let frontend = {
        let link = link.clone();
        thread::spawn(move || front_end(front, link, dev))
    };

    let mut r = Report::default();
    let start = Instant::now();
    let mut cur = 0usize;
    loop {
        let copies = counters.copies.load(Ordering::Relaxed);
        let stale = counters.stale.load(Ordering::Relaxed);
        let done = copies >= cfg.min_copies
            && r.unmaps >= cfg.min_unmaps
            && r.replaces >= cfg.min_replaces;
        if done || start.elapsed() >= cfg.max_time || (cfg.stop_on_stale && stale > 0) {
            break;
        }
        // The device's IOAS: unmap one page (the guest reuses it), map one.
        if let Some(i) = pick(&mut rng, &spaces[cur], true) {
            let t = Instant::now();
            guest.unmap(&iommu, &mut spaces[cur], i);
            r.unmap_time += t.elapsed();
            r.unmaps += 1;
        }
        for _ in 0..2 {
            if let Some(i) = pick(&mut rng, &spaces[cur], false) {
                guest.map(&iommu, &mut spaces[cur], i);
            }
        }
        // Every other round, move the device to the other IOAS; then change the one it left,
        // which no longer invalidates the back end: an entry that survived the replace would
        // read the reused page.
        if r.unmaps % 2 == 0 {
            let t = Instant::now();
            iommu.device_replace(dev_id, spaces[1 - cur].id).unwrap();
            r.replace_time += t.elapsed();
            r.replaces += 1;
            let old = &mut spaces[cur];
            cur = 1 - cur;
            if let Some(i) = pick(&mut rng, old, true) {
                guest.unmap(&iommu, old, i);
                r.detached_unmaps += 1;
            }
            if let Some(i) = pick(&mut rng, old, false) {
                guest.map(&iommu, old, i);
            }
        }
    }
    r.elapsed = start.elapsed();
    counters.stop.store(true, Ordering::Relaxed);
    backend.join().unwrap();
    // The back end's socket is closed: the front end reads EOF and returns.
    frontend.join().unwrap();
    r.copies = counters.copies.load(Ordering::Relaxed);
    r.stale = counters.stale.load(Ordering::Relaxed);
    r.misses = counters.misses.load(Ordering::Relaxed);
    r.faults = counters.faults.load(Ordering::Relaxed);
    r
}

/// A device observer that acknowledges at once, for measuring what one observer costs.
struct Immediate;

impl DeviceObserver for Immediate {
    fn invalidate(&self, _: Option<u32>, _: RangeInclusive<u64>) -> Ack {
        Ack::Done
    }
}

/// The mean time of `ioas_unmap` of one page of an attached device's IOAS over `iters`
/// map/unmap pairs, with no device observer or with one that acknowledges at once.
pub fn unmap_latency(with_observer: bool, iters: u32) -> Duration {
    let iommu = Iommu::new();
    let (dev_id, _dev) = iommu
        .device_bind(GroupId(1), DeviceInfo::default())
        .unwrap();
    let ioas = iommu.ioas_alloc().unwrap();
    iommu.device_attach(dev_id, ioas).unwrap();
    if with_observer {
        iommu
            .device_add_observer(dev_id, Arc::new(Immediate))
            .unwrap();
    }
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        iommu
            .ioas_map(ioas, Some(IOVA_BASE), 0x8000_0000, PAGE, Prot::RW)
            .unwrap();
        let t = Instant::now();
        iommu.ioas_unmap(ioas, IOVA_BASE, PAGE).unwrap();
        total += t.elapsed();
    }
    total / iters
}
