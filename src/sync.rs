//! The one policy for a lock whose holder panicked: carry on with the data as the panic
//! left it. Every lock here guards state that is changed in single steps (counters, maps of
//! counts, a slot), so a panic elsewhere never leaves it half-changed, and refusing it would
//! turn one failed request into a failed bridge.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locking that recovers a poisoned lock.
pub trait Unpoisoned {
    type Guard<'a>
    where
        Self: 'a;

    /// The lock, whether or not a holder panicked.
    fn locked(&self) -> Self::Guard<'_>;
}

impl<T> Unpoisoned for Mutex<T> {
    type Guard<'a>
        = MutexGuard<'a, T>
    where
        T: 'a;

    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`Unpoisoned`] for both sides of a [`RwLock`].
pub trait UnpoisonedRw<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> UnpoisonedRw<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|e| e.into_inner())
    }
}
