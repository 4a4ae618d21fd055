//! Checkpoints off the writers' path.
//!
//! In WAL mode SQLite copies the log back into the database (a
//! checkpoint, with an fsync) whenever a commit takes the log past 1,000
//! pages, in that commit, while the writer holds the write lock. Under a
//! storm that is every few turns, tens of milliseconds each: every writer
//! waits, and a critical event waits with them. With a [`Checkpointer`]
//! running, the writers of its file leave checkpoints alone
//! (`wal_autocheckpoint=0`) and a thread of its own takes them, passive
//! (they never block a writer), a short while after something was written.
//! Nothing is written while idle, so the thread sleeps then.
//!
//! A passive checkpoint copies what it can but never starts the log over
//! while writers keep appending, so under a storm the log would grow
//! without end (850 MB for 100,000 notifications). Past
//! [`RESTART_FRAMES`] the checkpointer holds the writes (`hold_writes`), so
//! no ordinary writer of this process appends meanwhile (an urgent turn
//! may, and the log then starts over a round later), and copies the rest,
//! passive again: what the round before has not copied yet is little, so
//! writers wait briefly (the engine and the workers do other work meanwhile:
//! see `Priority::Yield`), and the next writer starts the log over (SQLite does so when
//! every frame has been copied back and no reader is using the log). A
//! `RESTART` checkpoint would do the same but wait for readers in SQLite's
//! busy handler, which sleeps up to 100 ms at a time: with the gate held,
//! the critical popup's p99 during a storm was 160 ms.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::{debug, warn};

use super::{FileShared, Store, StoreError, hold};

/// Checkpoints the database of the store it was started from until dropped.
#[derive(Debug)]
pub struct Checkpointer {
    shared: Arc<FileShared>,
    stop: Option<SyncSender<Signal>>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread is told.
#[derive(Debug)]
pub(super) enum Signal {
    /// Something was committed.
    Wrote,
    Stop,
}

/// The log is truncated to this size when it starts over. Above the
/// restart point ([`RESTART_FRAMES`]), so a log that grew to it keeps its
/// blocks: writing it again then allocates nothing, and the fsync that a
/// checkpoint holding the write gate waits for has less to do (the
/// critical popup's p99 during a storm went from 90 to 45 ms against a log
/// cut to 4 MB). A stopped daemon leaves no log at all.
pub(super) const WAL_KEEP_BYTES: i64 = 128 << 20;

/// Frames (pages) in the log beyond which it is started over: 64 MB.
const RESTART_FRAMES: i64 = 16_384;

impl Store {
    /// Takes this file's checkpoints onto a thread of their own, at most
    /// one per `every`, until the returned handle is dropped. Every `Store`
    /// of the file in this process leaves checkpoints to it meanwhile.
    pub fn start_checkpointer(&self, every: Duration) -> Result<Checkpointer, StoreError> {
        let conn =
            Connection::open(&self.path).map_err(|source| StoreError::Open { path: self.path.clone(), source })?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let (tx, rx) = sync_channel(1);
        *hold(&self.shared.checkpoints) = Some(tx.clone());
        self.shared.manual_checkpoints.store(true, Ordering::SeqCst);
        self.conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let path = self.path.clone();
        let thread = std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn({
                let shared = self.shared.clone();
                move || run(conn, &shared, path, rx, every)
            })
            .map_err(|source| StoreError::File {
                action: "start the checkpoint thread for",
                path: self.path.clone(),
                source,
            })?;
        Ok(Checkpointer { shared: self.shared.clone(), stop: Some(tx), thread: Some(thread) })
    }

    /// Tells the checkpointer, if one runs, that something was committed.
    pub(super) fn wrote(&self) {
        if let Some(tx) = hold(&self.shared.checkpoints).as_ref() {
            // Full means it has been told already.
            let _ = tx.try_send(Signal::Wrote);
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.manual_checkpoints.store(false, Ordering::SeqCst);
        *hold(&self.shared.checkpoints) = None;
        if let Some(tx) = self.stop.take() {
            // Blocks only while the thread has not taken the last signal:
            // it takes them at once when waiting.
            let _ = tx.send(Signal::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: Connection, shared: &FileShared, path: PathBuf, rx: Receiver<Signal>, every: Duration) {
    let mut last_error: Option<String> = None;
    // Asleep until something is written; gone at `Stop`.
    while let Ok(Signal::Wrote) = rx.recv() {
        // Let writes gather for a while: one checkpoint for all of them.
        let until = Instant::now() + every;
        let mut stopping = false;
        loop {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(Signal::Wrote) => continue,
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    stopping = true;
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        let result = checkpoint(&conn, "PASSIVE").and_then(|(log, done)| {
            if log < RESTART_FRAMES {
                return Ok((log, done));
            }
            let began = Instant::now();
            let held = shared.hold_writes();
            let gated = Instant::now();
            let result = checkpoint(&conn, "PASSIVE");
            drop(held);
            debug!(
                db = %path.display(),
                log,
                waited_ms = (gated - began).as_secs_f64() * 1e3,
                held_ms = gated.elapsed().as_secs_f64() * 1e3,
                "checkpoint round with the writes held"
            );
            result
        });
        match result {
            Ok((log, done)) => {
                debug!(db = %path.display(), log, done, "checkpoint");
                last_error = None;
            }
            Err(e) => {
                // Once per kind of failure: a full disk fails every time.
                let e = e.to_string();
                if last_error.as_ref() != Some(&e) {
                    warn!(db = %path.display(), "checkpoint failed: {e}; the write-ahead log grows until one succeeds");
                }
                last_error = Some(e);
            }
        }
        if stopping {
            break;
        }
    }
}

/// A checkpoint (`PASSIVE`, say): (frames in the log, frames
/// copied back).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(1)?, r.get(2)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::note;
    use alerter_engine::Turn;
    use chrono::DateTime;

    fn size(dir: &std::path::Path, suffix: &str) -> u64 {
        std::fs::metadata(dir.join(format!("{}{suffix}", crate::store::DB_FILE))).map_or(0, |m| m.len())
    }

    /// Writers of a file with a checkpointer never checkpoint themselves
    /// (the log grows past SQLite's 1,000 pages untouched); the
    /// checkpointer copies it all back (here: at its last round, when
    /// dropped), and the next write starts the log over.
    #[test]
    fn writers_leave_checkpoints_to_the_checkpointer() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        // Long enough that only the last round, at drop, checkpoints.
        let cp = s.start_checkpointer(Duration::from_secs(3600)).unwrap();
        let mut other = Store::open(dir.path()).unwrap();
        let big = "x".repeat(4000);
        for k in 0..3 {
            let notes = (0..1000)
                .map(|i| {
                    let mut n = note(&format!("n{k}-{i:05}"), "log", t);
                    n.text = big.clone();
                    n
                })
                .collect();
            let w = if k % 2 == 0 { &mut s } else { &mut other };
            w.commit(&Turn { notifications: notes, ..Turn::default() }, t).unwrap();
        }
        // Three transactions of 4 MB each, none copied back: a writer that
        // checkpointed would have started the log over after the first.
        assert!(size(dir.path(), "-wal") > 12 << 20, "log of {} bytes", size(dir.path(), "-wal"));
        assert!(size(dir.path(), "") < 1 << 20, "database of {} bytes", size(dir.path(), ""));
        drop(cp);
        assert!(size(dir.path(), "") > 12 << 20, "copied back: database of {} bytes", size(dir.path(), ""));
        s.commit(&Turn { notifications: vec![note("after", "log", t)], ..Turn::default() }, t).unwrap();
        let (frames, _) = checkpoint(&other.conn, "PASSIVE").unwrap();
        assert!(frames < 10, "the log started over: {frames} frames");
        // Without a checkpointer, writers checkpoint again.
        let auto: i64 =
            Store::open(dir.path()).unwrap().conn.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0)).unwrap();
        assert_eq!(auto, 1000);
    }
}
