//! The in-flight budget: how many webhook requests, and how much memory, the bridge and
//! each client address may hold at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::refusal::{Refusal, Refused};
use crate::config::HttpConfig;
use crate::delivery::spool::replay::Memory;
use crate::event::Exceeded;
use crate::sync::Unpoisoned;

/// A buffer's memory, as it grows: its new capacity is taken before it is allocated, and the
/// old one given back once the contents moved, so both are counted while they coexist.
#[derive(Debug, Clone, Copy)]
pub enum Room {
    Take(usize),
    GiveBack(usize),
}

/// Which limit a request met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowded {
    /// `http.max_inflight_requests` / `http.max_inflight_bytes`.
    Everyone,
    /// Its client's share: `http.max_inflight_requests_per_client` /
    /// `http.max_inflight_bytes_per_client`.
    Client,
}

impl Crowded {
    pub(super) fn refused(self) -> Refused {
        match self {
            Self::Everyone => Refusal::Busy.plain(),
            Self::Client => Refusal::Busy.because(
                "this client address holds its share of the in-flight budget \
                 (http.max_inflight_requests_per_client / http.max_inflight_bytes_per_client); \
                 retry shortly",
            ),
        }
    }
}

/// The global in-flight budget: webhook requests, and the memory they may hold (their
/// bodies, parse trees and records), each client address within its share of both; and,
/// apart, the memory of rejected bodies on their way to the dead-letter topic.
pub struct Budget {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    total_bytes: usize,
    /// The most one request may hold.
    per_request: usize,
    dead_letters: Arc<Semaphore>,
    clients: Arc<Shares>,
}

/// What each client address holds, and the most it may.
pub(super) struct Shares {
    held: Mutex<HashMap<IpAddr, Share>>,
    max_requests: usize,
    max_bytes: usize,
}

#[derive(Debug, Default)]
pub(super) struct Share {
    requests: usize,
    bytes: usize,
}

impl Shares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Share>> {
        self.held.locked()
    }

    fn give_back(&self, client: IpAddr, requests: usize, bytes: usize) {
        let mut held = self.lock();
        if let Some(share) = held.get_mut(&client) {
            share.requests -= requests;
            share.bytes -= bytes;
            if share.requests == 0 {
                held.remove(&client);
            }
        }
    }
}

/// What a request is granted past its body before it asks for more: the record of a typical
/// payload twice over and its parse tree.
pub(super) const START_BYTES: usize = 48 << 10;

/// One request may hold at most this many times `http.max_body_bytes`.
pub const REQUEST_BODIES: usize = 24;

impl Budget {
    /// The budget of `http.max_inflight_*`, each client within `http.max_inflight_*_per_client`.
    pub fn new(http: &HttpConfig) -> Self {
        let max_bytes = http.max_inflight_bytes;
        Self {
            requests: Arc::new(Semaphore::new(http.max_inflight_requests)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            total_bytes: max_bytes,
            per_request: http
                .max_body_bytes
                .saturating_mul(REQUEST_BODIES)
                .min(max_bytes),
            dead_letters: Arc::new(Semaphore::new(max_bytes / 4)),
            clients: Arc::new(Shares {
                held: Mutex::new(HashMap::new()),
                max_requests: http.max_inflight_requests_per_client,
                max_bytes: http.max_inflight_bytes_per_client,
            }),
        }
    }

    /// Spool replay's share of the byte budget: its rounds take their memory from the
    /// same bytes as requests.
    pub fn replay_memory(&self) -> Memory {
        Memory::shared(self.bytes.clone(), self.total_bytes)
    }

    /// One request and `bytes` bytes for `client`, or at once which limit refused them.
    pub(super) fn try_acquire(&self, client: IpAddr, bytes: usize) -> Result<Held, Crowded> {
        let mut clients = self.clients.lock();
        let share = clients.entry(client).or_default();
        if share.requests >= self.clients.max_requests
            || share.bytes.saturating_add(bytes) > self.clients.max_bytes
        {
            if share.requests == 0 {
                clients.remove(&client);
            }
            return Err(Crowded::Client);
        }
        let granted = self
            .requests
            .clone()
            .try_acquire_owned()
            .ok()
            .zip(self.try_bytes(&self.bytes, bytes));
        let Some((request, bytes_permit)) = granted else {
            if share.requests == 0 {
                clients.remove(&client);
            }
            return Err(Crowded::Everyone);
        };
        share.requests += 1;
        share.bytes += bytes;
        Ok(Held {
            bytes: Mutex::new(bytes_permit),
            _request: request,
            client,
            clients: self.clients.clone(),
        })
    }

    fn try_bytes(&self, from: &Arc<Semaphore>, n: usize) -> Option<OwnedSemaphorePermit> {
        from.clone()
            .try_acquire_many_owned(u32::try_from(n).ok()?)
            .ok()
    }

    /// `n` more bytes for the request holding `held`, from the budget and its client's share.
    pub(super) fn more(&self, held: &Held, n: usize) -> Result<(), Crowded> {
        let mut clients = self.clients.lock();
        let share = clients.entry(held.client).or_default();
        if share.bytes.saturating_add(n) > self.clients.max_bytes {
            return Err(Crowded::Client);
        }
        let more = self.try_bytes(&self.bytes, n).ok_or(Crowded::Everyone)?;
        share.bytes += n;
        held.permit().merge(more);
        Ok(())
    }

    /// `n` more bytes for the request holding `held`, within what one request may hold.
    pub(super) fn grow(&self, held: &Held, n: usize) -> Result<(), Exceeded> {
        if held.permit().num_permits().saturating_add(n) > self.per_request {
            return Err(Exceeded::Limit);
        }
        self.more(held, n).map_err(|_| Exceeded::Busy)
    }

    /// Pays for, or gives back, a buffer's memory for the request holding `held`.
    pub(super) fn room(&self, held: &Held, room: Room) -> Result<(), Crowded> {
        match room {
            Room::Take(n) => self.more(held, n),
            Room::GiveBack(n) => {
                held.give_back(n);
                Ok(())
            }
        }
    }

    /// Room for a rejected body of `len` bytes in the producer's queue, if its share has it.
    pub(super) fn try_dead_letter(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        self.try_bytes(&self.dead_letters, len.max(1))
    }
}

/// What one request holds: its slot, and the bytes of the budget and of its client's share
/// (more are added as its buffers and parse tree grow). Given back when dropped.
pub(super) struct Held {
    bytes: Mutex<OwnedSemaphorePermit>,
    _request: OwnedSemaphorePermit,
    client: IpAddr,
    clients: Arc<Shares>,
}

impl Held {
    fn permit(&self) -> std::sync::MutexGuard<'_, OwnedSemaphorePermit> {
        self.bytes.locked()
    }

    /// Gives back `n` of the bytes held.
    fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let part = self.permit().split(n);
        if let Some(part) = part {
            drop(part);
            self.clients.give_back(self.client, 0, n);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let bytes = self.bytes.locked().num_permits();
        self.clients.give_back(self.client, 1, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(
        requests: usize,
        per_client_requests: usize,
        bytes: usize,
        per_client_bytes: usize,
    ) -> Budget {
        let mut http = crate::config::Config::load_with_env(None, Some(Default::default()))
            .unwrap()
            .http;
        http.max_body_bytes = 1000;
        http.max_inflight_requests = requests;
        http.max_inflight_requests_per_client = per_client_requests;
        http.max_inflight_bytes = bytes;
        http.max_inflight_bytes_per_client = per_client_bytes;
        Budget::new(&http)
    }

    #[test]
    fn a_client_holds_at_most_its_share_and_gives_all_of_it_back() {
        let b = budget(4, 2, 10_000, 6_000);
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = b.try_acquire(x, 1_000).unwrap();
        let second = b.try_acquire(x, 1_000).unwrap();
        assert_eq!(
            b.try_acquire(x, 1).err(),
            Some(Crowded::Client),
            "a third request"
        );
        assert_eq!(
            b.more(&first, 4_001).err(),
            Some(Crowded::Client),
            "past 6,000 bytes"
        );
        b.more(&first, 4_000).unwrap();
        // The other client still has the rest of the budget, and no more.
        let other = b.try_acquire(y, 1_000).unwrap();
        assert_eq!(b.more(&other, 3_001).err(), Some(Crowded::Everyone));
        b.more(&other, 3_000).unwrap();
        assert_eq!(b.bytes.available_permits(), 0);
        // A buffer's growth: the new capacity is taken, then the old one given back.
        b.room(&other, Room::GiveBack(2_000)).unwrap();
        assert_eq!(b.bytes.available_permits(), 2_000);
        drop((first, second, other));
        assert_eq!(b.bytes.available_permits(), 10_000);
        assert_eq!(b.requests.available_permits(), 4);
        assert!(b.clients.lock().is_empty(), "a share outlived its requests");
        // Refused at once, a client leaves nothing behind either.
        let held: Vec<Held> = (0..4)
            .map(|i| b.try_acquire(IpAddr::from([10, 0, 0, i]), 1).unwrap())
            .collect();
        assert_eq!(b.try_acquire(x, 1).err(), Some(Crowded::Everyone));
        drop(held);
        assert!(b.clients.lock().is_empty());
    }
}
