//! The pool's instances and how many there are now: [`Instances`] (indices `0..len()`,
//! `len()` being the pool's `count`, which `resize` and `reload` change) and [`SizeState`]
//! (what the sizing policy keeps between calls: the spec new incarnations start from, the
//! indices being started in the background, what waits to retire, grow and shrink counts).
//!
//! Storage only grows: an index a shrink removed keeps its [`Instance`] (stopped), so a
//! request or lease still in flight on it finishes, and a later grow reuses it. The sizing
//! module (the policy) is the one caller that changes `len` and the state here.

use crate::incarnation::Incarnation;
use crate::instance::Instance;
use crate::spec::{ToolSpec, MAX_COUNT};
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// Chunk `k` holds room for `2^k` instances: 13 chunks hold 8191, more than
/// [`MAX_COUNT`]. Only the instances below the largest count so far are made (the room
/// beyond is empty `OnceLock`s).
const CHUNKS: usize = 13;
const _: () = assert!((1 << CHUNKS) > MAX_COUNT);

/// The instances of a pool: an append-only list (never moved, so `&Instance` stays valid
/// while the pool lives) and the current count.
pub(crate) struct Instances {
    chunks: [OnceLock<Box<[OnceLock<Instance>]>>; CHUNKS],
    len: AtomicUsize,
}

/// Chunk and offset of index `i`.
fn place(i: usize) -> (usize, usize) {
    let k = (usize::BITS - 1 - (i + 1).leading_zeros()) as usize;
    (k, i + 1 - (1 << k))
}

impl Instances {
    /// `n` instances (at most [`MAX_COUNT`]).
    pub fn new(n: usize) -> Instances {
        let list = Instances {
            chunks: Default::default(),
            len: AtomicUsize::new(0),
        };
        list.allocate(n);
        list.len.store(n, Ordering::Release);
        list
    }

    /// Make sure indices `0..n` exist (nothing is started; `len` is unchanged).
    pub fn allocate(&self, n: usize) {
        for i in 0..n.min(MAX_COUNT) {
            let (k, off) = place(i);
            let chunk =
                self.chunks[k].get_or_init(|| (0..1usize << k).map(|_| OnceLock::new()).collect());
            chunk[off].get_or_init(Instance::default);
        }
    }

    /// The current count: indices `0..len()` are the pool's instances.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Set the current count (the sizing policy only; `0..n` must be allocated).
    pub fn set_len(&self, n: usize) {
        self.len.store(n, Ordering::Release);
    }

    /// How many indices were ever made (beyond `len()` too): the largest count so far.
    pub fn allocated(&self) -> usize {
        self.chunks
            .iter()
            .filter_map(|c| c.get())
            .map(|c| c.iter().take_while(|i| i.get().is_some()).count())
            .sum()
    }

    /// The instances `0..len()`.
    pub fn iter(&self) -> impl Iterator<Item = &Instance> + '_ {
        (0..self.len()).map(move |i| &self[i])
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = &'a Instance;
    type IntoIter = Box<dyn Iterator<Item = &'a Instance> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl std::ops::Index<usize> for Instances {
    type Output = Instance;

    /// Instance `i`; it must have been allocated (every index below a `len()` ever seen
    /// is): a bug otherwise.
    fn index(&self, i: usize) -> &Instance {
        let (k, off) = place(i);
        self.chunks[k]
            .get()
            .and_then(|c| c[off].get())
            .expect("instance index was allocated")
    }
}

/// What waits to retire once nobody uses it.
pub(crate) enum Retiree {
    /// An index a shrink removed while it was busy or leased: its incarnation stops once
    /// the index is idle (unless a grow brought the index back).
    Index(usize),
    /// An incarnation a reload replaced while requests were still using it: it stops
    /// once the last of them lets go.
    Incarnation(Arc<Incarnation>),
}

/// The sizing policy's state (changed only by the sizing module).
pub(crate) struct SizeState {
    /// The spec new incarnations start from; its `count` is `Instances::len()` and a
    /// reload replaces it.
    spec: RwLock<Arc<ToolSpec>>,
    /// Serialises resizes and reloads.
    change: Mutex<()>,
    /// Indices being started in the background for callers that would otherwise wait.
    pub starting: Mutex<BTreeSet<usize>>,
    /// Threads of those starts (joined when done, and at shutdown).
    pub starters: Mutex<Vec<JoinHandle<()>>>,
    /// What waits to retire, the thread that retires it, and whether that thread is
    /// still looking (it stops when nothing is left).
    pub retirees: Mutex<(Vec<Retiree>, Option<JoinHandle<()>>, bool)>,
    /// Instances started because every started one was busy (counted when the start
    /// begins, taken back when it fails).
    pub grows: AtomicU64,
    /// Instances stopped because they were idle longer than `idle_timeout_ms`.
    pub shrinks: AtomicU64,
}

impl SizeState {
    /// For a pool created from `spec`.
    pub fn new(spec: ToolSpec) -> SizeState {
        SizeState {
            spec: RwLock::new(Arc::new(spec)),
            change: Mutex::new(()),
            starting: Mutex::new(BTreeSet::new()),
            starters: Mutex::new(Vec::new()),
            retirees: Mutex::new((Vec::new(), None, false)),
            grows: AtomicU64::new(0),
            shrinks: AtomicU64::new(0),
        }
    }

    /// The spec now (what new incarnations start from).
    pub fn spec(&self) -> Arc<ToolSpec> {
        Arc::clone(&self.spec.read())
    }

    /// Replace the spec (the sizing policy only).
    pub fn set_spec(&self, spec: ToolSpec) {
        *self.spec.write() = Arc::new(spec);
    }

    /// Held while a resize or a reload changes the pool.
    pub fn change_lock(&self) -> MutexGuard<'_, ()> {
        self.change.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_cover_every_index_once() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..MAX_COUNT {
            let (k, off) = place(i);
            assert!(k < CHUNKS && off < (1 << k), "index {i}");
            assert!(seen.insert((k, off)));
        }
    }

    #[test]
    fn grows_without_moving() {
        let list = Instances::new(3);
        assert_eq!(list.len(), 3);
        let first: *const Instance = &list[0];
        list.allocate(100);
        assert!(std::ptr::eq(first, &list[0]));
        assert_eq!(list.allocated(), 100);
        assert_eq!(list.len(), 3);
        assert_eq!(list.iter().count(), 3);
    }
}
