//! pm-rebuild's hashing stage: the SHA-1 of every rebuilt state's hash text, handed back in request
//! order. With `--threads 1` it is computed inline; else the jobs go to a queue that any thread with
//! nothing else to do takes from — a hashing thread of its own when there is a core for it, the row
//! thread between rows ([`Helper`]) — and the rebuilding thread computes those nobody took yet
//! when it needs their result: the work spreads over the threads as their load allows.
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

/// A batch of jobs and the request number of its first.
type Batch = (u64, Vec<HashJob>);

/// What another thread needs to take jobs from the queue and hand them back.
#[derive(Clone)]
pub(super) struct Helper {
    pub jobs: Receiver<Batch>,
    done: Sender<Batch>,
}

impl Helper {
    /// Hashes a batch taken from [`Helper::jobs`] and hands it back.
    pub fn run(&self, (first, mut batch): Batch) {
        batch.iter_mut().for_each(HashJob::run);
        let _ = self.done.send((first, batch));
    }
}

/// The hashing stage (see the module text).
pub(super) struct HashStage {
    /// The queue and the way back; None with `--threads 1` (inline).
    queue: Option<(Sender<Batch>, Helper, Receiver<Batch>)>,
    thread: Option<JoinHandle<()>>,
    /// Jobs not queued yet.
    batch: Vec<HashJob>,
    /// Request number of the next job queued, and of the oldest not taken.
    sent: u64,
    taken: u64,
    /// The jobs from `taken` to `sent`: hashed (Some) or not yet.
    done: VecDeque<Option<HashJob>>,
    /// Jobs taken back, for their buffers.
    spare: Vec<HashJob>,
}

impl HashStage {
    /// `threaded`: jobs go to the queue, which a hashing thread takes from (and the row thread,
    /// [`HashStage::helper`]); else every job is hashed inline when pushed.
    pub fn new(threaded: bool) -> HashStage {
        let queue = threaded.then(|| {
            let (tx, jobs) = crossbeam_channel::unbounded::<Batch>();
            let (done, rx) = crossbeam_channel::unbounded::<Batch>();
            (tx, Helper { jobs, done }, rx)
        });
        let thread = match &queue {
            Some((_, h, _)) => {
                let h = h.clone();
                // No thread: the rebuilding (and row) thread hash it all, same output.
                std::thread::Builder::new()
                    .name("rebuild-hash".into())
                    .spawn(move || {
                        for b in h.jobs.iter() {
                            h.run(b);
                        }
                    })
                    .ok()
            }
            None => None,
        };
        HashStage {
            queue,
            thread,
            batch: Vec::with_capacity(BATCH),
            sent: 0,
            taken: 0,
            done: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// True when jobs may be hashed by another thread (verdicts then wait for them).
    pub fn threaded(&self) -> bool {
        self.queue.is_some()
    }

    /// The queue, for another thread to take jobs from (None with `--threads 1`).
    pub fn helper(&self) -> Option<Helper> {
        self.queue.as_ref().map(|(_, h, _)| h.clone())
    }

    /// An empty job (buffers reused) for the caller to fill and [`HashStage::push`].
    pub fn job(&mut self) -> HashJob {
        let mut j = self.spare.pop().unwrap_or_else(HashJob::new);
        j.text.clear();
        j.ltp.clear();
        j
    }

    /// Queues a filled job (hashes it now when inline).
    pub fn push(&mut self, mut j: HashJob) {
        if self.queue.is_none() {
            j.run();
            self.done.push_back(Some(j));
            self.sent += 1;
            return;
        }
        self.batch.push(j);
        if self.batch.len() >= BATCH {
            self.send();
        }
    }

    /// Queues the jobs not queued yet.
    fn send(&mut self) {
        let Some((tx, _, _)) = &self.queue else { return };
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.done.extend(batch.iter().map(|_| None));
        let first = self.sent;
        self.sent += batch.len() as u64;
        tx.send((first, batch)).expect("the stage holds the queue's receiver");
    }

    /// Files a hashed batch in its place.
    fn file(&mut self, b: Batch) {
        file(&mut self.done, self.taken, b);
    }

    /// True when the oldest job not taken yet is hashed ([`HashStage::next`] will not wait).
    pub fn ready(&mut self) -> bool {
        if let Some((_, _, rx)) = &self.queue {
            while let Ok(b) = rx.try_recv() {
                file(&mut self.done, self.taken, b);
            }
        }
        matches!(self.done.front(), Some(Some(_)))
    }

    /// The oldest job pushed and not taken yet, hashed: by another thread, or here when nobody
    /// took it yet. Call only with a job outstanding.
    pub fn next(&mut self) -> HashJob {
        loop {
            if let Some(Some(_)) = self.done.front() {
                self.taken += 1;
                return self.done.pop_front().flatten().expect("hashed");
            }
            if self.done.is_empty() {
                self.send();
            }
            let (_, h, rx) = self.queue.as_ref().expect("a job is outstanding");
            let b = match h.jobs.try_recv() {
                Ok((first, mut batch)) => {
                    batch.iter_mut().for_each(HashJob::run);
                    (first, batch)
                }
                // Taken by another thread: wait for it.
                Err(_) => rx.recv().expect("the stage holds a sender of the way back"),
            };
            self.file(b);
        }
    }

    /// A job taken and used: its buffers serve the next one.
    pub fn recycle(&mut self, j: HashJob) {
        self.spare.push(j);
    }
}

/// Files a hashed batch in its place among the jobs from request `taken` on.
fn file(done: &mut VecDeque<Option<HashJob>>, taken: u64, (first, batch): Batch) {
    let at = (first - taken) as usize;
    for (slot, j) in done.range_mut(at..).zip(batch) {
        *slot = Some(j);
    }
}

impl Drop for HashStage {
    fn drop(&mut self) {
        // The queue's last sender gone, the hashing thread ends.
        self.queue = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
