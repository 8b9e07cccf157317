//! The broker's record of its connections: kept as they go, written to a sink as they end,
//! and waited on by tests.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::limits::ConnectionLimits;
use crate::record::{ConnectionRecord, Event, Timed};

/// A wait on what a test server saw that ran out: how long it waited, and what it saw last
/// (the broker's [`ConnectionRecord`]s, or a hostile server's connections), for the test's
/// failure message.
#[derive(Debug, Clone)]
pub struct WaitTimedOut<T = ConnectionRecord> {
    /// How long the wait lasted.
    pub after: Duration,
    /// What the server had seen at the end of the wait.
    pub seen: Vec<T>,
}

impl<T: Clone> WaitTimedOut<T> {
    pub(crate) fn new(after: Duration, seen: &[T]) -> Self {
        Self {
            after,
            seen: seen.to_vec(),
        }
    }

    /// What was seen, when the condition held at the last look after all; else the timeout.
    pub(crate) fn unless(held: bool, after: Duration, seen: &[T]) -> Result<Vec<T>, Self> {
        if held {
            Ok(seen.to_vec())
        } else {
            Err(Self::new(after, seen))
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Display for WaitTimedOut<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "what was awaited did not come within {:?}; the server saw {} connection(s): {:#?}",
            self.after,
            self.seen.len(),
            self.seen
        )
    }
}

impl<T: std::fmt::Debug> std::error::Error for WaitTimedOut<T> {}

/// The broker's record of its connections, shared by its connections and its handle.
///
/// By default every record is kept for the broker's life, for tests to read. A recorder made
/// with `keep_ended: false` keeps only live connections: each record leaves when its connection
/// ends, written to the sink (if any), so a broker serving millions of connections holds only
/// the open ones.
pub(crate) struct Recorder {
    book: Mutex<Book>,
    /// Wakes async waiters ([`Recorder::wait_for`]) on every change.
    changed_async: tokio::sync::Notify,
    /// Events one record keeps; a connection that does more only counts them.
    max_events: usize,
    changed: Condvar,
    /// Threads in [`Recorder::wait_until`]. A notify is a system call even with nobody waiting,
    /// and the broker records several events per registration.
    waiting: AtomicUsize,
    keep_ended: bool,
    sink: Mutex<Option<Box<dyn Write + Send>>>,
}

/// Counts a waiter in for as long as it lives, so that changes wake it.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn count(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::SeqCst);
        Self(waiting)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The records held, in the order of their ids.
#[derive(Default)]
struct Book {
    records: Vec<ConnectionRecord>,
    next_id: u64,
}

impl Book {
    /// Where record `id` is. Ids are handed out in increasing order and records leave without
    /// reordering the rest, so the list stays sorted by id.
    fn position(&self, id: u64) -> Option<usize> {
        self.records.binary_search_by_key(&id, |r| r.id).ok()
    }
}

impl Recorder {
    /// An empty record; each ended connection is written to `sink` as a JSON line, and kept in
    /// memory too when `keep_ended` is true.
    pub(crate) fn new(sink: Option<Box<dyn Write + Send>>, keep_ended: bool) -> Self {
        Self {
            book: Mutex::new(Book::default()),
            changed_async: tokio::sync::Notify::new(),
            max_events: ConnectionLimits::default().max_recorded_events,
            changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            keep_ended,
            sink: Mutex::new(sink),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic elsewhere must not stop the record from being read.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a new connection and returns its id.
    pub(crate) fn open(&self, mut record: ConnectionRecord) -> u64 {
        let mut book = self.lock();
        record.id = book.next_id;
        book.next_id += 1;
        let id = record.id;
        // A connection refused before CONNACK is born ended.
        let ended = if !record.is_closed() {
            book.records.push(record);
            None
        } else if self.keep_ended {
            book.records.push(record.clone());
            Some(record)
        } else {
            Some(record)
        };
        drop(book);
        if let Some(record) = ended {
            self.write(&record);
        }
        self.notify();
        id
    }

    /// Keeps at most `max` events per record.
    pub(crate) fn with_max_events(mut self, max: usize) -> Self {
        self.max_events = max;
        self
    }

    /// Adds an event to connection `id`, or counts it when the record is full.
    pub(crate) fn event(&self, id: u64, event: Event) {
        let mut book = self.lock();
        if let Some(at) = book.position(id) {
            let record = &mut book.records[at];
            if record.events.len() < self.max_events {
                let at = record.started.elapsed();
                record.events.push(Timed { at, event });
            } else {
                record.events_dropped += 1;
            }
        }
        drop(book);
        self.notify();
    }

    /// Marks connection `id` ended (the first reason wins) and writes it to the sink.
    pub(crate) fn close(&self, id: u64, reason: impl Into<String>) {
        let mut book = self.lock();
        let Some(at) = book.position(id) else {
            return;
        };
        let r = &mut book.records[at];
        if r.ended.is_some() {
            return;
        }
        r.ended = Some(reason.into());
        let record = if self.keep_ended {
            r.clone()
        } else {
            // Shifts the live records after it: few (a benchmark's concurrency) next to the
            // ended ones this stops keeping.
            book.records.remove(at)
        };
        drop(book);
        self.write(&record);
        self.notify();
    }

    /// Wakes the waiters, if any. Called after a change made under the lock: a waiter counts
    /// itself under the lock before it looks at the records, so it either sees the change or
    /// is counted here.
    fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
            self.changed_async.notify_waiters();
        }
    }

    fn write(&self, record: &ConnectionRecord) {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(out) = sink.as_mut() {
            let line = serde_json::to_string(record).unwrap_or_default();
            if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                tracing::warn!("cannot write the record: {e}");
            }
        }
    }

    /// A copy of every record held: every connection's so far, or only the live ones'.
    pub(crate) fn snapshot(&self) -> Vec<ConnectionRecord> {
        self.lock().records.clone()
    }

    /// Waits, without blocking the thread, until `done` holds for the records, and returns
    /// them; when `timeout` passes first, [`WaitTimedOut`] carries the records it saw last.
    /// Wakes on every change, so a test waits exactly as long as needed.
    ///
    /// For async tests (`#[actix_rt::test]`, `#[tokio::test]`): it runs on any tokio runtime,
    /// actix's included, and leaves the thread to the actors and connections the test drives.
    pub(crate) async fn wait_for(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> Result<Vec<ConnectionRecord>, WaitTimedOut> {
        let deadline = tokio::time::Instant::now() + timeout;
        let _counted = Waiting::count(&self.waiting);
        loop {
            // Listen before looking, so that a change between the two is not missed.
            let changed = self.changed_async.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let book = self.lock();
                if done(&book.records) {
                    return Ok(book.records.clone());
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let book = self.lock();
                return WaitTimedOut::unless(done(&book.records), timeout, &book.records);
            }
        }
    }

    /// Waits, blocking the thread, until `done` holds for the records, and returns them; when
    /// `timeout` passes first, [`WaitTimedOut`] carries the records it saw last. Wakes on
    /// every change.
    ///
    /// For plain `#[test]` functions and other threads. Inside an async test it would stall the
    /// runtime the test drives its actors on (they share the thread): use
    /// [`wait_for`](Self::wait_for) there.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[ConnectionRecord]) -> bool,
    ) -> Result<Vec<ConnectionRecord>, WaitTimedOut> {
        let deadline = Instant::now() + timeout;
        let mut book = self.lock();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let outcome = loop {
            if done(&book.records) {
                break Ok(book.records.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(WaitTimedOut::new(timeout, &book.records));
            }
            book = self
                .changed
                .wait_timeout(book, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        outcome
    }
}

#[cfg(test)]
mod tests;
