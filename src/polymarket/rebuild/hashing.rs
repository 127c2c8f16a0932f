//! pm-rebuild's hashing stage: the SHA-1 of every rebuilt state, handed back in request order.
//! With `--threads` leaving room for it, a hashing thread of its own computes them; else the
//! rebuilding thread does, when it asks for them.
//!
//! The stage keeps its own copy of every book ([`HashBooks`]: each level's hash text and each
//! side's), kept up to date from the level changes the rebuilding thread sends with each state
//! ([`super::put_set`], the encoding the row thread reads too). So the hash text — some kilobytes per
//! state, six times the input on 60–100-level books — is written and read by one thread, in its own
//! caches: nothing of it crosses between cores (copying it across cost more than the SHA-1 saved).
//!
//! A [`HashJob`] carries a state: its level changes since the asset's previous job and the fields
//! around the levels. The stage writes the hash text up to `"last_trade_price":`, keeps the SHA-1
//! state after it (so that other trade prices cost a block or two, not the whole book), and the digest
//! with the `last_trade_price` the rebuilding thread expects. The hashing thread takes the jobs two
//! at a time ([`super::sha1x2::update2`]), from the SHA-1 state after each asset's first two blocks
//! (the same in all its states). When more than a few batches wait at the hashing thread, the
//! rebuilding thread hashes the next states itself, from its own copy (which then keeps the hash
//! texts too), also two at a time ([`HashStage::push_here`]); the hashing thread only applies their
//! level changes. Only the SHA-1 moves: every verdict is still reached on the rebuilding thread, in
//! input order, from these digests ([`super::Rebuilder`]), so the output is the same for any thread
//! count and whichever thread hashed a state.

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::sha1x2::{update2, Mid};
use super::{apply_ops, Assets, Role, Side};
use crate::polymarket::bookhash;

/// Jobs travel in batches of this many (fewer thread wake-ups).
const BATCH: usize = 64;

/// One state to hash, and what the stage computed of it.
pub(super) struct HashJob {
    pub asset: String,
    /// The asset's level changes since its previous job ([`super::put_set`]/[`super::put_replace`]).
    pub ops: Vec<u8>,
    pub market: String,
    pub timestamp: String,
    /// `min_order_size`, `tick_size`, `neg_risk` as the hash text spells them.
    pub tail: [String; 3],
    /// The `last_trade_price` tried first, as the hash text spells it.
    pub ltp: Vec<u8>,
    /// The SHA-1 state after the hash text up to and including `"last_trade_price":`.
    head: Mid,
    /// The SHA-1 of that text, `ltp` and the closing `}`.
    digest: [u8; 20],
    /// Hashed by the rebuilding thread from its own copy ([`HashJob::hash_here`]): the stage only
    /// applies the job's level changes to its copy.
    here: bool,
}

impl HashJob {
    fn new() -> Box<HashJob> {
        Box::new(HashJob {
            asset: String::new(),
            ops: Vec::new(),
            market: String::new(),
            timestamp: String::new(),
            tail: Default::default(),
            ltp: Vec::with_capacity(16),
            head: Mid::default(),
            digest: [0; 20],
            here: false,
        })
    }

    /// Takes `head`, the SHA-1 state after the hash text up to and including `"last_trade_price":`:
    /// the digest with the job's `last_trade_price` follows.
    fn set_head(&mut self, head: Mid) {
        self.digest = head.clone().digest_with(&[&self.ltp, b"}"]);
        self.head = head;
    }

    /// The SHA-1 of the state with `ltp` (its JSON text as the hash spells it) as
    /// `last_trade_price` (from the digest computed when it is the price of the job).
    pub fn with_ltp(&self, ltp: &[u8]) -> [u8; 20] {
        if ltp == self.ltp.as_slice() {
            return self.digest;
        }
        self.head.clone().digest_with(&[ltp, b"}"])
    }

    /// Hashes the job on the calling thread with `text` (its hash text up to `"last_trade_price":`,
    /// written by the caller from its own copy of the book) before it is pushed.
    fn hash_here(&mut self, text: &[u8]) {
        self.hash_text(text);
        self.here = true;
    }

    /// Hashes `text`, the state's hash text up to `"last_trade_price":`, from the start.
    fn hash_text(&mut self, text: &[u8]) {
        let mut head = Mid::default();
        head.update(text);
        self.set_head(head);
    }

    /// Writes the state's hash text up to and including `"last_trade_price":` into `out`
    /// (cleared first) from the job's fields and the two sides' arrays, as `bids` and `asks` write
    /// them: the one writer for the hashing stage's copy, the rebuilding thread's and a REST
    /// cross-check.
    pub fn write_text(&self, out: &mut Vec<u8>, bids: impl FnOnce(&mut Vec<u8>), asks: impl FnOnce(&mut Vec<u8>)) {
        let [mos, tick, neg] = &self.tail;
        // `last_trade_price` written as nothing: the text then ends in `"last_trade_price":}`.
        bookhash::write_hash_text_with(
            out,
            &self.market,
            &self.asset,
            &self.timestamp,
            bids,
            asks,
            [mos, tick, neg, ""],
        );
        debug_assert!(out.ends_with(b":}"));
        out.pop();
    }

    /// The job hashed here and now with `text` (written by the caller) as its hash text up to
    /// `"last_trade_price":` (a REST cross-check, which waits for nothing and is not a state of
    /// the stage's books).
    pub fn hashed_now(mut self: Box<Self>, text: &[u8]) -> Box<HashJob> {
        self.hash_text(text);
        self
    }
}

/// The stage's copy of every book: per asset, bids and asks with their hash texts ([`Role::Hash`])
/// and the SHA-1 state after the first blocks of its last hash text ([`Start`]); and the two
/// buffers the hash texts are written into (so they stay in this core's caches).
#[derive(Default)]
struct HashBooks {
    books: Assets<([Side; 2], Start)>,
    texts: [Vec<u8>; 2],
}

/// The first [`START`] bytes of an asset's last hash text — `{"market":"0x…","asset_id":"…` with
/// the venue's ids, the same in every state of the asset — and the SHA-1 state after them: a state
/// whose text starts with the same bytes (compared, not assumed) is hashed from there.
#[derive(Default)]
struct Start {
    bytes: Vec<u8>,
    sha: Mid,
}

/// Two SHA-1 blocks.
const START: usize = 128;

/// The asset's copy (a new one for an asset not seen yet).
fn copy_of<'b>(books: &'b mut Assets<([Side; 2], Start)>, asset: &str) -> &'b mut ([Side; 2], Start) {
    if !books.contains_key(asset) {
        books.insert(asset.to_string(), ([Side::new(Role::Hash), Side::new(Role::Hash)], Start::default()));
    }
    books.get_mut(asset).expect("inserted")
}

/// Applies the job's level changes to the asset's copy (a job hashed elsewhere).
fn sync(books: &mut Assets<([Side; 2], Start)>, j: &HashJob) {
    let ([bids, asks], _) = copy_of(books, &j.asset);
    apply_ops(&j.ops, bids, asks, None);
}

/// Applies the job's level changes to the asset's copy and writes its hash text up to
/// `"last_trade_price":` into `text`: the SHA-1 state to hash the text from, and where in it.
fn prepare(books: &mut Assets<([Side; 2], Start)>, j: &HashJob, text: &mut Vec<u8>) -> (Mid, usize) {
    let ([bids, asks], start) = copy_of(books, &j.asset);
    apply_ops(&j.ops, bids, asks, None);
    j.write_text(text, |o| o.extend_from_slice(bids.text()), |o| o.extend_from_slice(asks.text()));
    let Some(head) = text.get(..START) else { return (Mid::default(), 0) };
    if start.bytes != head {
        start.bytes.clear();
        start.bytes.extend_from_slice(head);
        start.sha = Mid::default();
        start.sha.update(head);
    }
    (start.sha.clone(), START)
}

impl HashBooks {
    /// Hashes one job (inline: the rebuilding thread's own jobs).
    fn run(&mut self, j: &mut HashJob) {
        let text = &mut self.texts[0];
        let (mut head, at) = prepare(&mut self.books, j, text);
        head.update(&text[at..]);
        j.set_head(head);
    }

    /// Hashes a batch in order, two jobs at a time ([`update2`]); a job hashed by the rebuilding
    /// thread only has its level changes applied.
    fn run_all(&mut self, batch: &mut [Box<HashJob>]) {
        let mut first: Option<(usize, Mid, usize)> = None;
        for i in 0..batch.len() {
            if batch[i].here {
                sync(&mut self.books, &batch[i]);
                continue;
            }
            let [ta, tb] = &mut self.texts;
            match first.take() {
                None => {
                    let (h, at) = prepare(&mut self.books, &batch[i], ta);
                    first = Some((i, h, at));
                }
                Some((k, mut ha, at_a)) => {
                    let (mut hb, at_b) = prepare(&mut self.books, &batch[i], tb);
                    update2(&mut ha, &ta[at_a..], &mut hb, &tb[at_b..]);
                    batch[k].set_head(ha);
                    batch[i].set_head(hb);
                }
            }
        }
        if let Some((k, mut h, at)) = first {
            h.update(&self.texts[0][at..]);
            batch[k].set_head(h);
        }
    }
}

/// Where the jobs are hashed.
#[allow(clippy::vec_box)]
enum Mode {
    /// On the rebuilding thread, as they are pushed.
    Inline(HashBooks),
    /// On a thread of its own, in order: batches go out on `tx` and come back on `rx`.
    Thread { tx: Option<Sender<Vec<Box<HashJob>>>>, rx: Receiver<Vec<Box<HashJob>>>, thread: Option<JoinHandle<()>> },
}

/// The hashing stage (see the module text). Jobs are boxed: some hundred bytes each (the SHA-1
/// state), they move through the queues as pointers.
#[allow(clippy::vec_box)]
pub(super) struct HashStage {
    mode: Mode,
    /// Jobs not sent yet.
    batch: Vec<Box<HashJob>>,
    /// Batches sent and not back yet.
    in_flight: usize,
    /// Jobs hashed and not taken yet, in request order.
    done: VecDeque<Box<HashJob>>,
    /// Jobs taken back, for their buffers.
    spare: Vec<Box<HashJob>>,
    /// A job to hash on the calling thread, held until a second one comes to hash it with
    /// ([`update2`]), or anything needs it; and the hash texts of the two (the caller writes the
    /// next one into [`HashStage::here_text`]).
    held: Option<Box<HashJob>>,
    here_texts: [Vec<u8>; 2],
}

impl HashStage {
    /// `threaded`: a hashing thread (when one can be started; else inline, same output).
    pub fn new(threaded: bool) -> HashStage {
        let mut mode = Mode::Inline(HashBooks::default());
        if threaded {
            let (tx, jobs) = crossbeam_channel::unbounded::<Vec<Box<HashJob>>>();
            let (back, rx) = crossbeam_channel::unbounded::<Vec<Box<HashJob>>>();
            let thread = std::thread::Builder::new().name("rebuild-hash".into()).spawn(move || {
                let mut books = HashBooks::default();
                for mut b in jobs.iter() {
                    books.run_all(&mut b);
                    if back.send(b).is_err() {
                        return;
                    }
                }
            });
            if let Ok(t) = thread {
                mode = Mode::Thread { tx: Some(tx), rx, thread: Some(t) };
            }
        }
        HashStage {
            mode,
            batch: Vec::with_capacity(BATCH),
            in_flight: 0,
            done: VecDeque::new(),
            spare: Vec::new(),
            held: None,
            here_texts: Default::default(),
        }
    }

    /// True when the hashing thread has more than `after` batches to catch up with: the rebuilding
    /// thread then hashes the state itself from its own copy ([`HashJob::hash_here`]), so the
    /// SHA-1 work shares itself out between the two as their loads go. ([`super::Options`] sets 3:
    /// on the bench input on two cores, 2, 3 and 4 batches gave 1.15-1.18 s, 1.12-1.14 s and
    /// 1.22-1.24 s; never, 1.24-1.27 s.)
    pub fn behind(&self, after: usize) -> bool {
        self.in_flight > after
    }

    /// True when jobs are hashed on another thread (verdicts then wait for them).
    pub fn threaded(&self) -> bool {
        matches!(self.mode, Mode::Thread { .. })
    }

    /// An empty job (buffers reused) for the caller to fill and [`HashStage::push`].
    pub fn job(&mut self) -> Box<HashJob> {
        let mut j = self.spare.pop().unwrap_or_else(HashJob::new);
        j.here = false;
        j.ops.clear();
        j.ltp.clear();
        j
    }

    /// Queues a filled job (hashes it now when inline).
    pub fn push(&mut self, j: Box<HashJob>) {
        self.flush_held();
        self.queue(j);
    }

    /// The buffer for the hash text (up to `"last_trade_price":`) of the next job the caller
    /// hashes itself ([`HashStage::push_here`]; cleared).
    pub fn here_text(&mut self) -> &mut Vec<u8> {
        let t = &mut self.here_texts[usize::from(self.held.is_some())];
        t.clear();
        t
    }

    /// Queues a job hashed on the calling thread from the text just written into
    /// [`HashStage::here_text`]: two such jobs are hashed together; the hashing stage only applies
    /// their level changes to its copy.
    pub fn push_here(&mut self, mut j: Box<HashJob>) {
        match self.held.take() {
            None => self.held = Some(j),
            Some(mut h) => {
                let ([ta, tb], mut ha, mut hb) = (&self.here_texts, Mid::default(), Mid::default());
                update2(&mut ha, ta, &mut hb, tb);
                h.set_head(ha);
                j.set_head(hb);
                h.here = true;
                j.here = true;
                self.queue(h);
                self.queue(j);
            }
        }
    }

    /// Hashes a held job alone and queues it (before a later job, or when it is needed).
    fn flush_held(&mut self) {
        if let Some(mut h) = self.held.take() {
            h.hash_here(&self.here_texts[0]);
            self.queue(h);
        }
    }

    fn queue(&mut self, mut j: Box<HashJob>) {
        match &mut self.mode {
            Mode::Inline(books) => {
                books.run(&mut j);
                self.done.push_back(j);
            }
            Mode::Thread { .. } => {
                self.batch.push(j);
                if self.batch.len() >= BATCH {
                    self.send();
                }
            }
        }
    }

    /// Sends the jobs not sent yet to the hashing thread.
    fn send(&mut self) {
        let Mode::Thread { tx: Some(tx), .. } = &self.mode else { return };
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        tx.send(batch).expect("the hashing thread runs while the stage holds its queue");
        self.in_flight += 1;
    }

    /// Takes the batches that are back.
    fn collect(&mut self, wait: bool) {
        let Mode::Thread { rx, .. } = &self.mode else { return };
        while self.in_flight > 0 {
            let b = if wait && self.done.is_empty() { rx.recv().ok() } else { rx.try_recv().ok() };
            let Some(b) = b else { break };
            self.in_flight -= 1;
            self.done.extend(b);
        }
    }

    /// True when the oldest job pushed and not taken yet is hashed ([`HashStage::next`] will not wait).
    pub fn ready(&mut self) -> bool {
        self.collect(false);
        !self.done.is_empty()
    }

    /// The oldest job pushed and not taken yet, hashed (waits for the hashing thread). Call only with
    /// a job outstanding.
    pub fn next(&mut self) -> Box<HashJob> {
        if self.done.is_empty() && self.in_flight == 0 && self.batch.is_empty() {
            self.flush_held();
        }
        if self.done.is_empty() && self.in_flight == 0 {
            self.send();
        }
        self.collect(true);
        self.done.pop_front().expect("a job is outstanding")
    }

    /// A job taken and used: its buffers serve the next one.
    pub fn recycle(&mut self, j: Box<HashJob>) {
        self.spare.push(j);
    }
}

impl Drop for HashStage {
    fn drop(&mut self) {
        if let Mode::Thread { tx, thread, .. } = &mut self.mode {
            // The queue's sender gone, the hashing thread ends.
            drop(tx.take());
            if let Some(t) = thread.take() {
                let _ = t.join();
            }
        }
    }
}
