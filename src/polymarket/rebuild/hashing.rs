//! pm-rebuild's hashing stage: the SHA-1 of every rebuilt state's hash text, computed on a thread
//! of its own (`--threads` ≥ 2) or inline (`--threads 1`), handed back in request order.
//!
//! The rebuild thread writes a state's hash text up to `"last_trade_price":` into a [`HashJob`]
//! with the `last_trade_price` it expects to match; the stage keeps the SHA-1 state after the
//! prefix (so that other trade prices cost a block or two, not the whole book) and the digest with
//! that price. Only SHA-1 moves: every verdict is still reached on the rebuild thread, in input
//! order, from these digests ([`super::Rebuilder`]), so the output is the same for any thread count.

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use sha1::{Digest, Sha1};

/// Jobs travel in batches of this many (fewer thread wake-ups).
const BATCH: usize = 16;
/// At most this many batches sent and not taken back: the hashing thread never waits on the
/// rebuild thread (the channels hold them all), and memory stays bounded.
const MAX_IN_FLIGHT: usize = 32;

/// One state's hash text up to and including `"last_trade_price":`, the `last_trade_price` text
/// (as the hash spells it) tried first, and what the stage computed of them.
pub(super) struct HashJob {
    pub text: Vec<u8>,
    pub ltp: Vec<u8>,
    /// The SHA-1 state after `text`.
    head: Sha1,
    /// The SHA-1 of `text`, `ltp` and the closing `}`.
    digest: [u8; 20],
}

impl HashJob {
    fn new() -> HashJob {
        HashJob { text: Vec::with_capacity(8192), ltp: Vec::with_capacity(16), head: Sha1::new(), digest: [0; 20] }
    }

    fn run(&mut self) {
        let mut h = Sha1::new();
        h.update(&self.text);
        self.head = h.clone();
        h.update(&self.ltp);
        h.update(b"}");
        self.digest = h.finalize().into();
    }

    /// The SHA-1 of the state with `ltp` (its JSON text as the hash spells it) as
    /// `last_trade_price` (from the digest computed when it is the price of the job).
    pub fn with_ltp(&self, ltp: &[u8]) -> [u8; 20] {
        if ltp == self.ltp.as_slice() {
            return self.digest;
        }
        let mut h = self.head.clone();
        h.update(ltp);
        h.update(b"}");
        h.finalize().into()
    }

    /// Computes the job here and now (a REST cross-check, which waits for nothing).
    pub fn hashed_now(mut self) -> HashJob {
        self.run();
        self
    }
}

/// The hashing stage: a thread, or the caller itself.
pub(super) struct HashStage {
    thread: Option<Worker>,
    /// Jobs not sent yet (thread only).
    batch: Vec<HashJob>,
    /// Jobs hashed, not taken yet (in request order).
    done: VecDeque<HashJob>,
    /// Jobs taken back, for their buffers.
    spare: Vec<HashJob>,
}

struct Worker {
    tx: Sender<Vec<HashJob>>,
    rx: Receiver<Vec<HashJob>>,
    in_flight: usize,
    handle: JoinHandle<()>,
}

impl Worker {
    /// None when no thread can be started (the stage then hashes inline: same output).
    fn start() -> Option<Worker> {
        let (tx, jobs) = crossbeam_channel::unbounded::<Vec<HashJob>>();
        let (back, rx) = crossbeam_channel::unbounded::<Vec<HashJob>>();
        let handle = std::thread::Builder::new()
            .name("rebuild-hash".into())
            .spawn(move || {
                for mut batch in jobs {
                    batch.iter_mut().for_each(HashJob::run);
                    if back.send(batch).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Worker { tx, rx, in_flight: 0, handle })
    }
}

impl HashStage {
    /// `threaded`: SHA-1 on a thread of its own; else inline, when a job is pushed.
    pub fn new(threaded: bool) -> HashStage {
        let thread = threaded.then(Worker::start).flatten();
        HashStage { thread, batch: Vec::with_capacity(BATCH), done: VecDeque::new(), spare: Vec::new() }
    }

    /// True when SHA-1 runs on a thread of its own.
    pub fn threaded(&self) -> bool {
        self.thread.is_some()
    }

    /// An empty job (buffers reused) for the caller to fill and [`HashStage::push`].
    pub fn job(&mut self) -> HashJob {
        let mut j = self.spare.pop().unwrap_or_else(HashJob::new);
        j.text.clear();
        j.ltp.clear();
        j
    }

    /// Queues a filled job (hashes it now when there is no thread).
    pub fn push(&mut self, mut j: HashJob) {
        if self.thread.is_none() {
            j.run();
            self.done.push_back(j);
            return;
        }
        self.batch.push(j);
        if self.batch.len() >= BATCH {
            self.send();
        }
    }

    /// Sends the jobs not sent yet (taking finished batches back first while too many are out).
    fn send(&mut self) {
        let Some(w) = self.thread.as_mut() else { return };
        while w.in_flight >= MAX_IN_FLIGHT {
            let v = w.rx.recv().expect("the hashing thread answers every batch");
            w.in_flight -= 1;
            self.done.extend(v);
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        w.tx.send(batch).expect("the hashing thread runs until the rebuild ends");
        w.in_flight += 1;
    }

    /// The oldest job pushed and not taken yet, hashed (waits for the thread). Call only with a
    /// job outstanding.
    pub fn next(&mut self) -> HashJob {
        loop {
            if let Some(j) = self.done.pop_front() {
                return j;
            }
            if self.thread.as_ref().is_some_and(|w| w.in_flight == 0) {
                self.send();
            }
            let w = self.thread.as_mut().expect("a job is outstanding");
            let v = w.rx.recv().expect("the hashing thread answers every batch");
            w.in_flight -= 1;
            self.done.extend(v);
        }
    }

    /// True when the oldest job not taken yet is hashed ([`HashStage::next`] will not wait).
    pub fn ready(&mut self) -> bool {
        if !self.done.is_empty() {
            return true;
        }
        let Some(w) = self.thread.as_mut() else { return false };
        match w.rx.try_recv() {
            Ok(v) => {
                w.in_flight -= 1;
                self.done.extend(v);
                !self.done.is_empty()
            }
            Err(_) => false,
        }
    }

    /// A job taken and used: its buffers serve the next one.
    pub fn recycle(&mut self, j: HashJob) {
        self.spare.push(j);
    }
}

impl Drop for HashStage {
    fn drop(&mut self) {
        if let Some(w) = self.thread.take() {
            drop(w.tx);
            drop(w.rx);
            let _ = w.handle.join();
        }
    }
}
