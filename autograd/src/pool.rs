//! The CPU buffer pool: freed tensor buffers kept by length and handed to the next op that
//! needs that many values.
//!
//! A DEQ solve calls the same cell dozens of times, so the same buffer sizes are freed and
//! allocated again every iteration. Without a pool each fresh output is a new `mmap` whose pages
//! the kernel zero-fills on first touch (10% of W2's time went to `clear_page`, 3% more to
//! `memset`). With it, steady-state iterations reuse buffers and cause no page faults, and an
//! output that every element overwrites is not zero-filled first ([`take`]).
//!
//! Every buffer of at least [`MIN_POOLED`] values (one) is pooled when a tensor's storage (or
//! a tape's gradient buffer) is dropped, so a replayed VJP makes no heap allocation at all.
//! The pool is global (tensors move between threads) behind one mutex that is taken once per
//! buffer, not per element. It holds at most [`limit`] bytes per element type; a buffer that
//! would exceed it empties the pool first (like a caching allocator's flush), so a workload
//! whose sizes change does not keep stale buffers forever. Pooled bytes stay allocated: a
//! counting allocator sees them as live, which is how `deq bench` reports peak memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers shorter than this (empty ones) are not pooled.
pub const MIN_POOLED: usize = 1;

static LIMIT: AtomicUsize = AtomicUsize::new(1 << 30);

/// The most bytes the pool keeps per element type (default 1 GiB).
pub fn limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Sets [`limit`]; 0 disables pooling (every freed buffer goes back to the allocator).
pub fn set_limit(bytes: usize) {
    LIMIT.store(bytes, Ordering::Relaxed);
    if bytes == 0 {
        clear();
    }
}

/// Frees every pooled buffer (both element types).
pub fn clear() {
    f32::pool().clear();
    f64::pool().clear();
}

/// Bytes held by the pool now (both element types).
pub fn pooled_bytes() -> usize {
    f32::pool().bytes() + f64::pool().bytes()
}

/// Element types with a pool of their own (f32 and f64).
pub trait Pooled: Sized + Copy + Send + 'static {
    /// The pool of this element type.
    fn pool() -> &'static Pool<Self>;
}

/// Freed buffers of one element type, by length.
pub struct Pool<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    by_len: Option<HashMap<usize, Bucket<T>>>,
    bytes: usize,
}

/// The free buffers of one length, and how many of that length the pool has handed out.
struct Bucket<T> {
    free: Vec<Vec<T>>,
    /// Taken from the pool and not yet given back (floored at 0: buffers allocated elsewhere
    /// are given back too).
    outstanding: usize,
    /// The most ever outstanding at once: the bucket never keeps more free buffers than that,
    /// so buffers that no op of this length asks for are not hoarded.
    demand: usize,
}

impl<T> Default for Bucket<T> {
    fn default() -> Self {
        Bucket {
            free: Vec::new(),
            outstanding: 0,
            demand: 0,
        }
    }
}

impl<T: Pooled> Pool<T> {
    const fn new() -> Self {
        Pool {
            inner: Mutex::new(Inner {
                by_len: None,
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled buffer of exactly `len` values, if one is free.
    fn take(&self, len: usize) -> Option<Vec<T>> {
        if len < MIN_POOLED {
            return None;
        }
        let mut inner = self.lock();
        let bucket = inner
            .by_len
            .get_or_insert_with(HashMap::new)
            .entry(len)
            .or_default();
        bucket.outstanding += 1;
        bucket.demand = bucket.demand.max(bucket.outstanding);
        let v = bucket.free.pop()?;
        inner.bytes -= len * std::mem::size_of::<T>();
        Some(v)
    }

    /// Keeps `v` for reuse (or drops it when too small, or when pooling is off).
    fn give(&self, mut v: Vec<T>) {
        let len = v.len();
        // Only exact-capacity buffers: a handed-out buffer must own exactly what it holds.
        if len < MIN_POOLED || v.capacity() != len {
            return;
        }
        let bytes = len * std::mem::size_of::<T>();
        let cap = limit();
        if bytes > cap {
            return;
        }
        let mut inner = self.lock();
        if inner.bytes + bytes > cap {
            inner.by_len = None;
            inner.bytes = 0;
        }
        let Some(bucket) = inner.by_len.as_mut().and_then(|m| m.get_mut(&len)) else {
            // No op has asked for this length: nothing would reuse it.
            return;
        };
        bucket.outstanding = bucket.outstanding.saturating_sub(1);
        if bucket.free.len() >= bucket.demand {
            return;
        }
        bucket.free.push(std::mem::take(&mut v));
        inner.bytes += bytes;
    }

    fn clear(&self) {
        let mut inner = self.lock();
        inner.by_len = None;
        inner.bytes = 0;
    }

    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

impl Pooled for f32 {
    fn pool() -> &'static Pool<f32> {
        static POOL: Pool<f32> = Pool::new();
        &POOL
    }
}

impl Pooled for f64 {
    fn pool() -> &'static Pool<f64> {
        static POOL: Pool<f64> = Pool::new();
        &POOL
    }
}

/// A buffer of `len` values whose contents are unspecified (a pooled buffer's old values, or
/// zeros when freshly allocated): for outputs that every element overwrites.
pub fn take<T: Pooled + Default>(len: usize) -> Vec<T> {
    T::pool()
        .take(len)
        .unwrap_or_else(|| vec![T::default(); len])
}

/// A buffer of `len` zeros (a pooled buffer cleared, or a fresh zeroed allocation).
pub fn take_zeroed<T: Pooled + Default>(len: usize) -> Vec<T> {
    match T::pool().take(len) {
        Some(mut v) => {
            v.fill(T::default());
            v
        }
        None => vec![T::default(); len],
    }
}

/// Returns a buffer to the pool (called when a tensor's storage is dropped).
pub fn give<T: Pooled>(v: Vec<T>) {
    T::pool().give(v);
}

/// A host vector that goes back to the pool when dropped: the storage of CPU tensors.
pub struct PooledVec<T: Pooled>(Vec<T>);

impl<T: Pooled> PooledVec<T> {
    /// Wraps `v`.
    pub fn new(v: Vec<T>) -> Self {
        PooledVec(v)
    }

    /// `len` zeros from the pool.
    pub fn zeroed(len: usize) -> Self
    where
        T: Default,
    {
        PooledVec(take_zeroed(len))
    }

    /// `len` values from the pool whose contents are unspecified (see [`take`]): for work
    /// buffers whose every element is written before it is read.
    pub fn unspecified(len: usize) -> Self
    where
        T: Default,
    {
        PooledVec(take(len))
    }

    /// The vector, no longer pooled on drop.
    pub fn into_vec(mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }
}

impl<T: Pooled + Default> Clone for PooledVec<T> {
    /// A copy into a pooled buffer (copy-on-write of a shared tensor).
    fn clone(&self) -> Self {
        let mut w = take(self.0.len());
        w.copy_from_slice(&self.0);
        PooledVec(w)
    }
}

impl<T: Pooled> Drop for PooledVec<T> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

impl<T: Pooled> std::ops::Deref for PooledVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<'a, T: Pooled> IntoIterator for &'a PooledVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Pooled> std::ops::DerefMut for PooledVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_buffer_is_handed_out_again_by_length() {
        // f64 only: other tests in this binary use f32 tensors concurrently.
        let v: Vec<f64> = take(4096);
        let ptr = v.as_ptr();
        give(v);
        let w: Vec<f64> = take(4096);
        assert_eq!(w.as_ptr(), ptr, "the pooled buffer is reused");
        assert_eq!(w.len(), 4096);
        give(w);
        let z: Vec<f64> = take_zeroed(4096);
        assert_eq!(z.as_ptr(), ptr);
        assert!(z.iter().all(|&x| x == 0.0));
        give(z);
        let other: Vec<f64> = take(4095);
        assert_ne!(other.as_ptr(), ptr, "lengths must match exactly");
    }

    #[test]
    fn the_pool_keeps_no_more_buffers_of_a_length_than_were_in_use_at_once() {
        let len = 8192;
        let a: Vec<f64> = take(len);
        give(a);
        // Buffers allocated elsewhere: at most one of this length was ever taken at once.
        for _ in 0..10 {
            give(vec![0.0f64; len]);
        }
        let held = f64::pool().lock().by_len.as_ref().unwrap()[&len].free.len();
        assert_eq!(held, 1);
        // A length nobody asked for is not kept at all.
        give(vec![0.0f64; 3 * len]);
        assert!(!f64::pool()
            .lock()
            .by_len
            .as_ref()
            .unwrap()
            .contains_key(&(3 * len)));
    }
}
