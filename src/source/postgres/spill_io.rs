//! The spill file's I/O, on one thread of its own: the two async worker
//! threads, which also keep the replication session alive, never wait on
//! the disk for a write or a read.
//!
//! ```text
//!  append ──> 256 KiB block ──(queue)──> spill I/O thread: pwrite at its offset
//!  replay <──(oneshot)── block ──────────── spill I/O thread: pread, queued after the writes
//! ```
//!
//! Invariants:
//! - Jobs run one at a time, in the order they were queued. So a read of a
//!   file runs after every write to it has landed, with no waiting on the
//!   appending side, and a failed write fails the reads after it.
//! - Each block is written at the offset it was given when queued, so a
//!   file's bytes are in the order they were appended.
//! - At most [`BLOCKS_QUEUED`] blocks of a file wait to be written: past
//!   that the appender waits for the disk, so memory stays bounded when the
//!   disk is slower than the stream. That is the one wait left on an async
//!   thread, and it happens only then.
//! - Reading back holds one block at a time.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use tokio::sync::oneshot;

/// The size of a block written or read.
pub const BLOCK: usize = 256 * 1024;
/// Blocks of one file queued for writing before the appender waits.
const BLOCKS_QUEUED: usize = 4;

/// A file's queued writes, and the first error one of them met.
#[derive(Default)]
struct Writes {
    state: Mutex<(usize, Option<io::ErrorKind>)>,
    landed: Condvar,
}

impl Writes {
    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<io::ErrorKind>)> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn failed(&self) -> io::Result<()> {
        match self.lock().1 {
            Some(kind) => Err(io::Error::new(kind, "writing the spill file failed")),
            None => Ok(()),
        }
    }
}

enum Job {
    Write {
        file: Arc<File>,
        at: u64,
        bytes: Vec<u8>,
        writes: Arc<Writes>,
    },
    /// Fills `block` (the reader's own buffer, so that this thread allocates nothing).
    Read {
        file: Arc<File>,
        at: u64,
        block: Vec<u8>,
        writes: Arc<Writes>,
        reply: oneshot::Sender<io::Result<Vec<u8>>>,
    },
}

impl Job {
    fn run(self) {
        match self {
            Job::Write { file, at, bytes, writes } => {
                let written = file.write_all_at(&bytes, at);
                let mut state = writes.lock();
                state.0 -= 1;
                if let Err(error) = written {
                    state.1.get_or_insert(error.kind());
                }
                drop(state);
                writes.landed.notify_all();
            }
            Job::Read { file, at, mut block, writes, reply } => {
                let read = writes.failed().and_then(|()| file.read_exact_at(&mut block, at).map(|()| block));
                // The replay was dropped (the stream stopped): nobody to tell.
                let _ = reply.send(read);
            }
        }
    }
}

/// Queues `job` on the spill I/O thread, started on first use; runs it
/// here if that thread cannot be started.
fn submit(job: Job) {
    static QUEUE: OnceLock<Option<Sender<Job>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (sender, jobs) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new().name("walpipe-spill-io".into()).spawn(move || {
            for job in jobs {
                job.run();
            }
        });
        started.ok().map(|_| sender)
    });
    match queue {
        Some(sender) => {
            if let Err(mpsc::SendError(job)) = sender.send(job) {
                job.run();
            }
        }
        None => job.run(),
    }
}

/// A spill file being appended to.
#[derive(Debug)]
pub struct SpillWriter {
    file: Arc<File>,
    block: Vec<u8>,
    /// Where `block` goes in the file.
    at: u64,
    writes: Arc<Writes>,
}

impl SpillWriter {
    /// An unnamed temporary file: gone when closed, even after a crash.
    pub fn create() -> io::Result<SpillWriter> {
        Ok(SpillWriter {
            file: Arc::new(tempfile::tempfile()?),
            block: Vec::with_capacity(BLOCK),
            at: 0,
            writes: Arc::default(),
        })
    }

    /// Appends `bytes`, in blocks of at most [`BLOCK`]: the first spill of
    /// a transaction hands over everything it held in memory at once, and
    /// copying that into one block would double it.
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let (now, rest) = bytes.split_at(bytes.len().min(BLOCK - self.block.len()));
            self.block.extend_from_slice(now);
            bytes = rest;
            if self.block.len() >= BLOCK {
                self.queue_block()?;
            }
        }
        Ok(())
    }

    /// Everything appended, for reading back (after the writes, by the invariants).
    pub fn finish(mut self) -> io::Result<SpillReader> {
        self.queue_block()?;
        Ok(SpillReader { file: self.file, at: 0, len: self.at, writes: self.writes, spare: Vec::new() })
    }

    fn queue_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let mut state = self.writes.lock();
        while state.0 >= BLOCKS_QUEUED && state.1.is_none() {
            state = self.writes.landed.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        state.0 += 1;
        drop(state);
        self.writes.failed().inspect_err(|_| self.writes.lock().0 -= 1)?;
        let bytes = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let at = self.at;
        self.at += bytes.len() as u64;
        submit(Job::Write { file: self.file.clone(), at, bytes, writes: self.writes.clone() });
        Ok(())
    }
}

/// A finished spill file, read back a block at a time.
#[derive(Debug)]
pub struct SpillReader {
    file: Arc<File>,
    at: u64,
    len: u64,
    writes: Arc<Writes>,
    /// The buffer the next block is read into.
    spare: Vec<u8>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writes")
    }
}

impl SpillReader {
    /// The next block, until [`SpillReader::recycle`] gives it back;
    /// `None` at the end of the file.
    pub async fn next_block(&mut self) -> io::Result<Option<Vec<u8>>> {
        let left = self.len - self.at;
        if left == 0 {
            return Ok(None);
        }
        let len = BLOCK.min(usize::try_from(left).unwrap_or(BLOCK));
        let mut block = std::mem::take(&mut self.spare);
        block.resize(len, 0);
        let (reply, read) = oneshot::channel();
        submit(Job::Read { file: self.file.clone(), at: self.at, block, writes: self.writes.clone(), reply });
        let block = read.await.map_err(|_| io::Error::other("the spill I/O thread stopped"))??;
        self.at += len as u64;
        Ok(Some(block))
    }

    /// Gives a block back, to read the next one into.
    pub fn recycle(&mut self, block: Vec<u8>) {
        self.spare = block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_appended_reads_back_in_order_across_blocks() {
        let mut writer = SpillWriter::create().expect("a temporary file");
        let mut expected = Vec::new();
        for i in 0..200_000u32 {
            let bytes = i.to_be_bytes();
            expected.extend_from_slice(&bytes);
            writer.write(&bytes).expect("write");
        }
        // More than a block at once, as the first spill of a transaction does.
        let large: Vec<u8> = (0..3 * BLOCK + 5).map(|i| (i % 251) as u8).collect();
        expected.extend_from_slice(&large);
        writer.write(&large).expect("write");
        let mut reader = writer.finish().expect("finish");
        let mut read = Vec::new();
        while let Some(block) = reader.next_block().await.expect("read") {
            assert!(block.len() <= BLOCK);
            read.extend_from_slice(&block);
        }
        assert_eq!(read, expected);
    }

    #[tokio::test]
    async fn an_empty_file_reads_back_as_nothing() {
        let mut reader = SpillWriter::create().expect("file").finish().expect("finish");
        assert!(reader.next_block().await.expect("read").is_none());
    }
}
