//! The memory a payload takes once parsed, counted while its tree is built, so that a body
//! whose JSON costs many times its size (`[0,0,…]`, thousands of keys, lists of empty
//! objects) is refused before it is held rather than after.

use std::cell::Cell;
use std::fmt;
use std::mem::size_of;

use serde::de;

/// Why the parse was stopped for memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The body alone needs more than one request may hold.
    Limit,
    /// The bridge's in-flight budget has no room for it now.
    Busy,
}

/// Asks for `n` more bytes for the request; refuses with the reason.
pub type Grow<'g> = &'g dyn Fn(usize) -> Result<(), Exceeded>;

/// Counts what a payload's parse tree allocates, against what the request was granted,
/// and asks for more in steps as the tree grows.
pub struct Meter<'g> {
    used: Cell<usize>,
    peak: Cell<usize>,
    granted: Cell<usize>,
    grow: Option<Grow<'g>>,
    refused: Cell<Option<Exceeded>>,
}

/// Memory is asked for in steps of at least this much, so a growing tree asks rarely.
const STEP: usize = 64 << 10;

impl<'g> Meter<'g> {
    /// A meter that starts with `granted` bytes and asks `grow` for more.
    pub fn new(granted: usize, grow: Grow<'g>) -> Self {
        Self {
            used: Cell::new(0),
            peak: Cell::new(0),
            granted: Cell::new(granted),
            grow: Some(grow),
            refused: Cell::new(None),
        }
    }

    /// A meter that only counts (tools, tests).
    pub fn unlimited() -> Self {
        Self {
            used: Cell::new(0),
            peak: Cell::new(0),
            granted: Cell::new(usize::MAX),
            grow: None,
            refused: Cell::new(None),
        }
    }

    /// Bytes counted so far.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The most bytes counted at once.
    pub fn peak(&self) -> usize {
        self.peak.get()
    }

    /// Bytes granted so far (at least [`peak`](Self::peak)).
    pub fn granted(&self) -> usize {
        self.granted.get()
    }

    /// Why the last charge was refused, if one was.
    pub fn refused(&self) -> Option<Exceeded> {
        self.refused.get()
    }

    /// Counts `n` bytes, asking for more when they pass what was granted.
    pub fn charge(&self, n: usize) -> Result<(), Exceeded> {
        let used = self.used.get().saturating_add(n);
        let granted = self.granted.get();
        if used > granted {
            let more = (used - granted).max(STEP);
            let grow = self.grow.ok_or(Exceeded::Limit)?;
            if let Err(e) = grow(more) {
                self.refused.set(Some(e));
                return Err(e);
            }
            self.granted.set(granted + more);
        }
        self.used.set(used);
        self.peak.set(self.peak.get().max(used));
        Ok(())
    }

    /// Stops counting `n` bytes that were freed; what was granted stays granted.
    pub fn release(&self, n: usize) {
        self.used.set(self.used.get().saturating_sub(n));
    }

    /// [`charge`](Self::charge), as a deserializer error.
    pub(crate) fn take<E: de::Error>(&self, n: usize) -> Result<(), E> {
        self.charge(n).map_err(|e| E::custom(e))
    }

    /// Pushes `item`, counting the vector's growth: it doubles, as `Vec` does, and while it
    /// moves both the old and the new block are held.
    pub(crate) fn push<T, E: de::Error>(&self, items: &mut Vec<T>, item: T) -> Result<(), E> {
        if items.len() == items.capacity() {
            let old = items.capacity() * size_of::<T>();
            let more = items.capacity().max(4);
            self.take(old + more * size_of::<T>())?;
            items.reserve_exact(more);
            self.release(old);
        }
        items.push(item);
        Ok(())
    }
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Self::Limit => "the body takes more memory to read than one request may hold",
            Self::Busy => "the bridge has no memory to spare for this body now",
        })
    }
}
