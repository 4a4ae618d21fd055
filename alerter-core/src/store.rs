//! The state store: one SQLite database under the state directory.
//!
//! It keeps what must survive a restart: alert state (so a restart neither
//! re-sends everything nor forgets a firing alert), how far each notice
//! and reminder has been dealt with (from the moment it is first known),
//! and the audit trail of notifications (sent, failed, suppressed and
//! why). The schema is versioned with SQLite's `user_version` and migrated
//! forward on open; a database from a newer alerter is refused rather than
//! damaged.
//!
//! Calls are synchronous and short (one transaction per batch). WAL mode
//! with `synchronous=NORMAL` makes a committed batch durable across a crash
//! of the process; only a power loss can take the last few back.
//!
//! The engine's committer and every outbox worker hold connections of their
//! own to the one file, and SQLite lets one of them write at a time. Left to
//! SQLite, a writer that finds the lock taken sleeps in its busy handler
//! (for up to tens of milliseconds, whenever the lock comes free), and a
//! transaction that began by reading can fail outright when it tries to
//! write after another commit. So the writers of one database in this
//! process queue at one *write gate* (a mutex and a condition variable),
//! and then begin their transactions `IMMEDIATE`: the next writer runs the
//! moment the previous one commits, and none fails for having read first.
//! Other processes (the CLI reading history) are unaffected: WAL readers
//! never wait. A checkpoint round holds the gate for ordinary writers; how
//! each writer treats that is its [`Priority`].
//!
//! Leases live in memory, beside the gate: a row handed to a worker is
//! noted (with when the lease runs out) in the set shared by every `Store`
//! of the file, and other claims skip it until its outcome is written.
//! Taking work is then a read, which neither waits for the gate nor
//! rewrites each row (with its payload) once more; a process that dies
//! takes its leases with it, which is what a start did with leases written
//! to the file anyway.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use rusqlite_migration::{M, Migrations};

use crate::event::Fingerprint;
use crate::notices::Notice;
use crate::notify::Notification;
use crate::rules::Silence;
use crate::rules::router::{AlertChange, Kept};
use alerter_engine::budget::Window as BudgetWindow;
use alerter_engine::{NoticeChange, Turn};

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "alerter.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}; set `alerter.state_dir` to a writable directory")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot open state database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "state database {path} was written by a newer alerter (schema {found}, this one knows up to {known}); upgrade alerter or point `alerter.state_dir` elsewhere"
    )]
    TooNew { path: PathBuf, found: i64, known: usize },
    #[error("cannot migrate state database {path}: {source}")]
    Migrate { path: PathBuf, source: rusqlite_migration::Error },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("corrupt record in state database: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("cannot check state database {path}: {source}; check its permissions and the disk")]
    Check { path: PathBuf, source: rusqlite::Error },
    #[error("cannot {action} {path}: {source}; check the state directory's permissions and free space")]
    File { action: &'static str, path: PathBuf, source: std::io::Error },
}

mod checkpoint;
mod salvage;
pub use checkpoint::Checkpointer;
pub use salvage::{Salvage, TableSalvage};

/// Schema migrations, oldest first. Only ever append: a released entry is
/// what existing databases were built with.
const MIGRATIONS: &[&str] = &[
    // 1: alert state, notice history, audit trail.
    "CREATE TABLE alerts (
             rule TEXT NOT NULL,
             fingerprint TEXT NOT NULL,
             state TEXT NOT NULL,
             updated_at TEXT NOT NULL,
             PRIMARY KEY (rule, fingerprint)
         );
         CREATE TABLE notices (
             name TEXT NOT NULL,
             offset_secs INTEGER NOT NULL,
             last_fired TEXT NOT NULL,
             PRIMARY KEY (name, offset_secs)
         );
         CREATE TABLE audit (
             id INTEGER PRIMARY KEY,
             time TEXT NOT NULL,
             rule TEXT NOT NULL,
             fingerprint TEXT,
             transport TEXT,
             notification TEXT,
             status TEXT NOT NULL,
             reason TEXT,
             summary TEXT
         );
         CREATE INDEX audit_time ON audit (time);",
    // 2: the outbox: every notification, written before its first delivery
    // attempt, with its attempts and final status (the audit trail of what
    // was sent).
    "CREATE TABLE outbox (
         id TEXT PRIMARY KEY,
         transport TEXT NOT NULL,
         rule TEXT NOT NULL,
         created_ms INTEGER NOT NULL,
         payload TEXT NOT NULL,
         status TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         next_attempt_ms INTEGER NOT NULL,
         last_error TEXT,
         reply TEXT,
         updated_ms INTEGER NOT NULL
     );
     CREATE INDEX outbox_due ON outbox (transport, status, next_attempt_ms);
     CREATE INDEX outbox_created ON outbox (created_ms);",
    // 3: sources' saved state (log read positions), committed with the
    // effects of the events before it.
    "CREATE TABLE source_state (
         source TEXT PRIMARY KEY,
         state TEXT NOT NULL,
         updated_ms INTEGER NOT NULL
     );",
    // 4: leases in the file (no longer written: leases live in memory, see
    // the module header; `sending` rows of older alerters are made pending
    // at start). A row handed to a transport's worker is `sending` until
    // its outcome is recorded, so no other worker (after a reload, say) is
    // handed it again; a lease that runs out (its worker was abandoned)
    // makes it pending again, and a start clears them all. Due rows are
    // taken in the order of the `outbox_due` index (next attempt, then
    // rowid), so taking a batch never sorts the backlog.
    "ALTER TABLE outbox ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0;",
    // 5: alert rows in the order they were made, with no index on (rule,
    // fingerprint). Fingerprints are hashes: under a storm each new alert
    // went to a random page of that index, a page written to the log per
    // alert (3.8 KB a notification, the largest share). The `Store` that
    // writes alerts finds their rows through a map of its own (see
    // `AlertRows`); ids are never reused (AUTOINCREMENT), so an id in the
    // map never names another alert's row.
    "CREATE TABLE alerts_by_id (
         id INTEGER PRIMARY KEY AUTOINCREMENT,
         rule TEXT NOT NULL,
         fingerprint TEXT NOT NULL,
         state TEXT NOT NULL,
         updated_at TEXT NOT NULL
     );
     INSERT INTO alerts_by_id (rule, fingerprint, state, updated_at)
         SELECT rule, fingerprint, state, updated_at FROM alerts ORDER BY updated_at;
     DROP TABLE alerts;
     ALTER TABLE alerts_by_id RENAME TO alerts;",
    // 6: no index on the outbox's creation time. Rows are made in the order
    // of their creation, so their rowids order them as well: history reads
    // by rowid, and pruning finds where old rows end by walking them from
    // the start. One b-tree fewer to write per notification under a storm.
    "DROP INDEX outbox_created;",
    // 7: silences set at run time through the control API (the config's
    // are in the config), kept across restarts; pruned with history once
    // they ended.
    "CREATE TABLE silences (
         id TEXT PRIMARY KEY,
         body TEXT NOT NULL,
         ends_ms INTEGER NOT NULL
     );",
    // 8: one-off notices set at run time (`alerter notice add`), kept until
    // they are sent in full or cancelled; their positions are in `notices`
    // under their id, like the config's notices under their names.
    "CREATE TABLE runtime_notices (
         id TEXT PRIMARY KEY,
         body TEXT NOT NULL
     );",
    // 9: per-person budget windows (see alerter_engine::budget), so a
    // restart keeps what each window showed and folded and still sends its
    // digest; keyed by holder and transport, and the row with the empty
    // key holds the next digest number.
    "CREATE TABLE budget_windows (
         id TEXT PRIMARY KEY,
         body TEXT NOT NULL
     );",
];

/// The key of a budget window's row.
fn window_key(holder: &str, transport: &str) -> String {
    format!("{holder}\u{1f}{transport}")
}

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

pub use alerter_engine::engine::AuditRecord;

/// Where a notification is in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Waiting for its (next) delivery attempt.
    Pending,
    /// Leased in the file by an older alerter (leases now live in memory);
    /// made pending at start.
    Sending,
    Sent,
    /// Failed permanently.
    Failed,
    /// Not delivered within the transport's maximum age.
    Expired,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sending => "sending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
            OutboxStatus::Expired => "expired",
        }
    }

    fn parse(s: &str) -> OutboxStatus {
        match s {
            "sent" => OutboxStatus::Sent,
            "sending" => OutboxStatus::Sending,
            "failed" => OutboxStatus::Failed,
            "expired" => OutboxStatus::Expired,
            _ => OutboxStatus::Pending,
        }
    }
}

/// One notification in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// The row, for recording the outcome.
    pub rowid: i64,
    pub notification: Notification,
    pub status: OutboxStatus,
    pub attempts: u32,
    pub next_attempt: DateTime<Utc>,
    pub last_error: Option<String>,
    pub reply: Option<String>,
    pub updated: DateTime<Utc>,
}

/// The audit statuses of changes made through the control API (each
/// record names who made it).
pub const CHANGE_KINDS: &[&str] = &["silence", "ack", "notice", "reload"];

/// One line of `alerter history`: a notification and what became of it,
/// or a suppression and why.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryItem {
    pub time: DateTime<Utc>,
    pub rule: String,
    pub transport: Option<String>,
    /// sent, failed, expired, pending, suppressed
    pub status: String,
    pub summary: String,
    pub recipients: Vec<String>,
    pub attempts: u32,
    /// The server's reply, the error, or why it was suppressed.
    pub detail: Option<String>,
    /// The notification's id (what it was, for a suppression).
    pub notification: Option<String>,
    /// The alerts it was about (fingerprints).
    pub alerts: Vec<String>,
}

/// Where the next page of history starts: below these row ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub outbox: i64,
    pub audit: i64,
}

impl std::fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.outbox, self.audit)
    }
}

impl std::str::FromStr for HistoryCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a history cursor (give the `next` of the previous page)");
        let (o, a) = s.split_once('.').ok_or_else(bad)?;
        Ok(HistoryCursor { outbox: o.parse().map_err(|_| bad())?, audit: a.parse().map_err(|_| bad())? })
    }
}

/// What a page of history is about; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    pub rule: Option<String>,
    pub transport: Option<String>,
    /// `sent`, `failed`, `expired`, `pending`, `suppressed`, or a change
    /// (`silence`, `ack`, `notice`, `reload`).
    pub status: Option<String>,
    /// A subscriber id (`*` the workgroup) among the recipients.
    pub recipient: Option<String>,
    /// An alert: its fingerprint or the first 4 or more hex digits of it.
    pub alert: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// The statuses of the outbox (of notifications).
const OUTBOX_STATUSES: &[&str] = &["pending", "sending", "sent", "failed", "expired"];

impl HistoryFilter {
    fn wants_outbox(&self) -> bool {
        self.status.as_deref().is_none_or(|s| OUTBOX_STATUSES.contains(&s))
    }

    /// Audit rows have no recipients: a filter by recipient is about
    /// notifications.
    fn wants_audit(&self) -> bool {
        self.recipient.is_none() && self.status.as_deref().is_none_or(|s| !OUTBOX_STATUSES.contains(&s))
    }

    fn outbox_sql(&self, below: i64, limit: usize) -> (String, Vec<Value>) {
        let mut w = Where::new("rowid", below);
        w.eq("rule", &self.rule);
        w.eq("transport", &self.transport);
        w.eq("status", &self.status);
        if let Some(r) = &self.recipient {
            w.cond(
                "EXISTS (SELECT 1 FROM json_each(payload, '$.recipients') WHERE json_extract(value, '$.id') = ?)",
                [Value::Text(r.clone())],
            );
        }
        if let Some(a) = &self.alert {
            w.cond(
                "EXISTS (SELECT 1 FROM json_each(payload, '$.alerts') WHERE substr(json_extract(value, '$.fingerprint'), 1, ?) = ?)",
                [Value::Integer(a.len() as i64), Value::Text(a.to_ascii_lowercase())],
            );
        }
        if let Some(t) = self.since {
            w.cond("created_ms >= ?", [Value::Integer(ms(t))]);
        }
        if let Some(t) = self.until {
            w.cond("created_ms < ?", [Value::Integer(ms(t))]);
        }
        w.select(
            "SELECT rowid, payload, status, attempts, next_attempt_ms, last_error, reply, updated_ms FROM outbox",
            "rowid",
            limit,
        )
    }

    fn audit_sql(&self, below: i64, limit: usize) -> (String, Vec<Value>) {
        let mut w = Where::new("id", below);
        // Suppressions, notifications folded into digests and changes made
        // through the API; what was sent or failed is the outbox's part.
        if self.status.is_some() {
            w.eq("status", &self.status);
        } else {
            let kinds: Vec<String> = ["suppressed", "folded"]
                .into_iter()
                .chain(CHANGE_KINDS.iter().copied())
                .map(|k| format!("'{k}'"))
                .collect();
            w.cond(&format!("status IN ({})", kinds.join(", ")), []);
        }
        w.eq("rule", &self.rule);
        w.eq("transport", &self.transport);
        if let Some(a) = &self.alert {
            w.cond(
                "substr(fingerprint, 1, ?) = ?",
                [Value::Integer(a.len() as i64), Value::Text(a.to_ascii_lowercase())],
            );
        }
        // The audit's times are RFC 3339 text, compared as such: every one
        // is written by `to_rfc3339` in UTC, so text order is time order.
        if let Some(t) = self.since {
            w.cond("time >= ?", [Value::Text(t.to_rfc3339())]);
        }
        if let Some(t) = self.until {
            w.cond("time < ?", [Value::Text(t.to_rfc3339())]);
        }
        w.select(
            "SELECT id, time, rule, fingerprint, transport, notification, status, reason, summary FROM audit",
            "id",
            limit,
        )
    }
}

/// A WHERE clause built from conditions and their parameters, in order.
struct Where {
    conds: Vec<String>,
    args: Vec<Value>,
}

impl Where {
    /// Starts below a row id (the cursor).
    fn new(id: &str, below: i64) -> Where {
        Where { conds: vec![format!("{id} < ?")], args: vec![Value::Integer(below)] }
    }

    fn cond<const N: usize>(&mut self, sql: &str, args: [Value; N]) {
        self.conds.push(sql.to_string());
        self.args.extend(args);
    }

    /// `column = value`, when a value is given.
    fn eq(&mut self, column: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.cond(&format!("{column} = ?"), [Value::Text(v.clone())]);
        }
    }

    /// The query, newest (highest id) first.
    fn select(self, select: &str, id: &str, limit: usize) -> (String, Vec<Value>) {
        let sql = format!("{select} WHERE {} ORDER BY {id} DESC LIMIT {limit}", self.conds.join(" AND "));
        (sql, self.args)
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Shared by every `Store` of this process on the same file.
    shared: Arc<FileShared>,
    /// Where each alert's row is, read at the first write of alerts.
    alert_rows: Option<AlertRows>,
}

/// The row of each alert, by rule and fingerprint. The alerts table has
/// no index on them (see migration 5): the one `Store` that writes alerts
/// (the engine's) keeps this map instead, and changes it only once a
/// transaction that changed the rows has committed. By rule first, so a
/// storm's 100,000 one-shots cost no copy of their rule's name each.
type AlertRows = HashMap<String, HashMap<Fingerprint, i64>>;

fn load_alert_rows(conn: &Connection) -> Result<AlertRows, StoreError> {
    let mut stmt = conn.prepare("SELECT id, rule, fingerprint FROM alerts")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    let mut map = AlertRows::new();
    for row in rows {
        let (id, rule, fp) = row?;
        // A fingerprint that does not parse cannot match any alert; its
        // row is left alone (and dropped with the rest by a salvage).
        if let Ok(fp) = Fingerprint::try_from(fp) {
            map.entry(rule).or_default().insert(fp, id);
        }
    }
    Ok(map)
}

/// What the `Store`s of one file in this process share.
#[derive(Debug, Default)]
struct FileShared {
    /// The write gate: who writes now, and holds (see [`Priority`]).
    gate: Mutex<Gate>,
    /// Woken when a writer leaves or a hold ends.
    gate_changed: std::sync::Condvar,
    /// Woken when a hold ends (for tasks; see [`HoldWatch`]).
    released: tokio::sync::Notify,
    /// Outbox rows handed to a worker, by rowid, with when the lease runs out.
    leases: Mutex<HashMap<i64, DateTime<Utc>>>,
    /// A [`Checkpointer`] runs: writers leave checkpoints to it.
    manual_checkpoints: std::sync::atomic::AtomicBool,
    /// Tells the checkpointer that something was committed.
    checkpoints: Mutex<Option<std::sync::mpsc::SyncSender<checkpoint::Signal>>>,
}

/// Creates `path` readable by its owner alone (0600) if it does not exist,
/// before SQLite opens it: SQLite creates its `-wal` and `-shm` with the
/// database's own mode, and the state holds who was told what. An existing
/// file is left as the admin set it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::File { action: "create", path: path.to_path_buf(), source }),
    }
}

/// The gate and leases of each database file open in this process, by
/// canonical path. Weak, so a database no longer open leaves nothing behind.
static FILES: LazyLock<Mutex<HashMap<PathBuf, Weak<FileShared>>>> = LazyLock::new(Default::default);

fn shared_for(path: &Path) -> Arc<FileShared> {
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut files = hold(&FILES);
    files.retain(|_, g| g.strong_count() > 0);
    if let Some(g) = files.get(&key).and_then(Weak::upgrade) {
        return g;
    }
    let g = Arc::new(FileShared::default());
    files.insert(key, Arc::downgrade(&g));
    g
}

/// Takes a lock of the store's. A panic while it was held left no state
/// behind it that matters (a transaction rolls back when dropped; a lease
/// left behind runs out), so a poisoned lock is simply taken.
fn hold<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of a file's write gate.
#[derive(Debug, Default)]
struct Gate {
    /// A writer is in.
    writing: bool,
    /// Holds under way (see [`Store::hold_writes`]).
    holds: usize,
}

/// How a write treats a hold of the write gate (a checkpoint round).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Waits for the hold to end.
    Normal,
    /// Writes nothing while a hold is on (the call says so) and returns at
    /// once: for a writer with something better to do than wait (the
    /// engine takes critical events meanwhile; a worker goes on sending).
    /// Decided under the gate's lock, so a hold that begins while it waits
    /// for another writer turns it back too.
    Yield,
    /// Passes a hold: a turn with a critical notification is not kept
    /// waiting for a checkpoint round (tens of milliseconds under a storm,
    /// waiting for fsyncs). The round then does not start the log over;
    /// the next one does, and urgent turns are few.
    Urgent,
}

impl FileShared {
    /// Lets a writer in (one at a time; see [`Priority`] for holds); `None`
    /// for [`Priority::Yield`] while a hold is on. Dropping the pass lets
    /// the next one in.
    fn enter(&self, priority: Priority) -> Option<WritePass<'_>> {
        let mut g = hold(&self.gate);
        loop {
            match priority {
                Priority::Yield if g.holds > 0 => return None,
                Priority::Urgent if !g.writing => break,
                Priority::Normal | Priority::Yield if !g.writing && g.holds == 0 => break,
                _ => g = self.gate_changed.wait(g).unwrap_or_else(|e| e.into_inner()),
            }
        }
        g.writing = true;
        Some(WritePass { shared: self })
    }

    /// Closes the gate to all but urgent writers until the hold is dropped,
    /// once the writer in (if any) is done. Counted at once, so writers
    /// that yield stop coming while it waits.
    fn hold_writes(&self) -> WriteHold<'_> {
        let mut g = hold(&self.gate);
        g.holds += 1;
        while g.writing {
            g = self.gate_changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        WriteHold { shared: self }
    }

    fn writes_held(&self) -> bool {
        hold(&self.gate).holds > 0
    }
}

/// A writer's turn at the gate.
struct WritePass<'a> {
    shared: &'a FileShared,
}

impl Drop for WritePass<'_> {
    fn drop(&mut self) {
        hold(&self.shared.gate).writing = false;
        self.shared.gate_changed.notify_all();
    }
}

/// Ordinary writers of a file wait while this lives (see
/// [`Store::hold_writes`]).
#[must_use = "the hold ends when dropped"]
pub struct WriteHold<'a> {
    shared: &'a FileShared,
}

impl Drop for WriteHold<'_> {
    fn drop(&mut self) {
        hold(&self.shared.gate).holds -= 1;
        self.shared.gate_changed.notify_all();
        self.shared.released.notify_waiters();
    }
}

/// Tells whether the writes of a file are held, and when they no longer
/// are: for a task that would rather do something else than wait.
#[derive(Debug, Clone)]
pub struct HoldWatch {
    shared: Arc<FileShared>,
}

impl HoldWatch {
    /// Whether a hold is under way (or waiting for the gate).
    pub fn held(&self) -> bool {
        self.shared.writes_held()
    }

    /// Returns once no hold is under way.
    pub async fn released(&self) {
        loop {
            let released = self.shared.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !self.held() {
                return;
            }
            released.await;
        }
    }
}

/// One delivery attempt's outcome, for [`Store::record_attempts`].
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    pub status: OutboxStatus,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When to try again (pending) or now (final).
    pub next_attempt: DateTime<Utc>,
    pub error: Option<&'a str>,
    /// The server's reply, when it accepted.
    pub reply: Option<&'a str>,
    /// A notification to queue in the same transaction: what goes out
    /// instead of a popup whose recipients never appeared (so a crash can
    /// neither lose it nor leave the popup waiting after it was queued).
    pub then: Option<&'a Notification>,
}

/// Puts a notification in the outbox, due now. Ids are stable, so
/// writing the same one again changes nothing.
fn queue(tx: &rusqlite::Transaction<'_>, n: &Notification, now: DateTime<Utc>) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO outbox (id, transport, rule, created_ms, payload, status, attempts, next_attempt_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6)",
    )?
    .execute(params![n.id, n.transport, n.rule, ms(n.created_at), serde_json::to_string(n)?, ms(now)])?;
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, migrating it forward.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        create_private(&path)?;
        let mut conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        // Waiting for another process's lock comes first: switching to WAL
        // and migrating write.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // The migration's transaction takes the write lock from the start too.
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        let shared = shared_for(&path);
        let held = shared.enter(Priority::Normal);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_KEEP_BYTES)?;
        // A checkpointer already runs for this file: leave checkpoints to it.
        if shared.manual_checkpoints.load(std::sync::atomic::Ordering::SeqCst) {
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        }
        let known = MIGRATIONS.len();
        let version = |conn: &Connection| conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0));
        let found = version(&conn)?;
        if found > known as i64 {
            return Err(StoreError::TooNew { path, found, known });
        }
        if let Err(source) = migrations().to_latest(&mut conn) {
            // rusqlite_migration reads the version before its transaction,
            // so a second process opening a new database at the same moment
            // (`alerter history` while the daemon starts) finds the tables
            // made: that is success, not a failed migration.
            if version(&conn)? != known as i64 {
                return Err(StoreError::Migrate { path: path.clone(), source });
            }
        }
        drop(held);
        Ok(Store { conn, path, shared, alert_rows: None })
    }

    /// An in-memory store, for tests and `alerter test`.
    pub fn in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate { path: PathBuf::from(":memory:"), source })?;
        Ok(Store { conn, path: PathBuf::from(":memory:"), shared: Arc::default(), alert_rows: None })
    }

    /// How long a write waits for another connection's lock.
    pub fn set_busy_timeout(&self, wait: std::time::Duration) -> Result<(), StoreError> {
        Ok(self.conn.busy_timeout(wait)?)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Applies the router's changes in one transaction.
    pub fn apply_alert_changes(&mut self, changes: &[AlertChange], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.commit(&Turn { changes: changes.to_vec(), ..Turn::default() }, now)
    }

    /// Every source's saved state.
    pub fn source_states(&self) -> Result<HashMap<String, String>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT source, state FROM source_state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every stored alert, with its rule name.
    /// What is kept of each alert, with its rule and fingerprint.
    pub fn load_alerts(&self) -> Result<Vec<(String, Fingerprint, Kept)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT rule, fingerprint, state FROM alerts ORDER BY rule, fingerprint")?;
        let rows =
            stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (rule, fp, state) = row?;
            let kept: Kept = serde_json::from_str(&state)?;
            let fp = match (Fingerprint::try_from(fp), &kept) {
                (Ok(fp), _) => fp,
                (Err(_), Kept::Alert(a)) => a.fingerprint,
                // A throttle whose key is unreadable throttles nothing.
                (Err(_), Kept::Sent(_)) => continue,
            };
            out.push((rule, fp, kept));
        }
        Ok(out)
    }

    /// How many notifications of a transport wait for delivery, and when
    /// the oldest of them was made. Reads the `outbox_due` index only (its
    /// entries carry the rowid, and rowids follow creation), then one row.
    pub fn outbox_pending(&self, transport: &str) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let (n, first): (i64, Option<i64>) = self.conn.query_row(
            "SELECT COUNT(*), MIN(rowid) FROM outbox WHERE transport = ?1 AND status = 'pending'",
            [transport],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let oldest = match first {
            Some(rowid) => self
                .conn
                .query_row("SELECT created_ms FROM outbox WHERE rowid = ?1", [rowid], |r| r.get::<_, i64>(0))
                .optional()?
                .map(from_ms),
            None => None,
        };
        Ok((n.max(0) as u64, oldest))
    }

    /// The silences set at run time that ended after `since` (or have not
    /// ended). A record that no longer compiles (written by a newer
    /// alerter, say) is left out and reported in the second list.
    pub fn load_silences(&self, since: DateTime<Utc>) -> Result<(Vec<Silence>, Vec<String>), StoreError> {
        self.load_records(
            "SELECT id, body FROM silences WHERE ends_ms >= ?1 ORDER BY rowid",
            [ms(since)],
            "silence",
            Silence::from_record,
        )
    }

    /// The notices set at run time that are still to go out. A record that
    /// no longer reads (written by a newer alerter, say) is left out and
    /// reported in the second list.
    pub fn load_notices(&self) -> Result<(Vec<Notice>, Vec<String>), StoreError> {
        self.load_records("SELECT id, body FROM runtime_notices ORDER BY rowid", [], "notice", Notice::from_record)
    }

    /// The budget windows kept (a record that does not read is left out
    /// and reported in the last list), and the next digest number.
    #[allow(clippy::type_complexity)]
    pub fn load_budgets(&self) -> Result<(Vec<BudgetWindow>, u64, Vec<String>), StoreError> {
        let (windows, bad) = self.load_records(
            "SELECT id, body FROM budget_windows WHERE id <> '' ORDER BY rowid",
            [],
            "budget window",
            Ok,
        )?;
        let next: Option<String> =
            self.conn.query_row("SELECT body FROM budget_windows WHERE id = ''", [], |r| r.get(0)).optional()?;
        Ok((windows, next.and_then(|n| n.parse().ok()).unwrap_or(1), bad))
    }

    /// Records kept as JSON (`id`, `body` rows), each made into what it
    /// records by `make`; one that does not read is left out and reported
    /// as "`what` `id`: why" in the second list.
    fn load_records<R: serde::de::DeserializeOwned, T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        what: &str,
        make: fn(R) -> Result<T, String>,
    ) -> Result<(Vec<T>, Vec<String>), StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for row in rows {
            let (id, body) = row?;
            match serde_json::from_str::<R>(&body).map_err(|e| e.to_string()).and_then(make) {
                Ok(t) => out.push(t),
                Err(e) => bad.push(format!("{what} `{id}`: {e}")),
            }
        }
        Ok((out, bad))
    }

    /// Each (notice, offset in seconds)'s cursor: firings at or before it
    /// were sent or skipped (see `notices::NoticeScheduler::history`). The
    /// column is still called `last_fired`, what it first held.
    pub fn notice_history(&self) -> Result<HashMap<(String, u64), DateTime<Utc>>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT name, offset_secs, last_fired FROM notices")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (name, off, t) = row?;
            if let Ok(t) = DateTime::parse_from_rfc3339(&t) {
                out.insert((name, off.max(0) as u64), t.with_timezone(&Utc));
            }
        }
        Ok(out)
    }

    pub fn save_notice_history(&mut self, history: &HashMap<(String, u64), DateTime<Utc>>) -> Result<(), StoreError> {
        self.commit(&Turn { notice_positions: history.clone(), ..Turn::default() }, Utc::now())
    }

    pub fn audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.commit(&Turn { audit: records.to_vec(), ..Turn::default() }, Utc::now())
    }

    /// The newest audit records first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT time, rule, fingerprint, transport, notification, status, reason, summary
             FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| audit_from_row(r, 0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commits what one turn of the engine decided, in one transaction:
    /// alert state, new notifications into the outbox, audit records, notice
    /// positions, and the sources' saved states that cover the events behind
    /// all that. A crash leaves either all of it or none.
    pub fn commit(&mut self, turn: &Turn, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.commit_with_sent(turn, &HashMap::new(), Priority::Normal, now).map(|_| ())
    }

    /// [`Store::commit`], with the notifications of the turn that were
    /// already delivered outside the outbox (while the store could not
    /// write), by id with their reply: they are recorded as sent. How it
    /// treats a hold of the gate is `priority`'s; `Ok(false)`: it yielded
    /// to one and wrote nothing.
    pub fn commit_with_sent(
        &mut self,
        turn: &Turn,
        sent: &HashMap<String, Option<String>>,
        priority: Priority,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        if turn.is_empty() {
            return Ok(true);
        }
        if self.alert_rows.is_none() && !turn.changes.is_empty() {
            self.alert_rows = Some(load_alert_rows(&self.conn)?);
        }
        let Some(_pass) = self.shared.enter(priority) else { return Ok(false) };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let moved = match &self.alert_rows {
            Some(rows) => write_alert_changes(&tx, rows, &turn.changes, now)?,
            None => HashMap::new(),
        };
        {
            for n in &turn.notifications {
                queue(&tx, n, now)?;
            }
            if !sent.is_empty() {
                let mut mark = tx.prepare_cached(
                    "UPDATE outbox SET status = 'sent', attempts = 1, reply = ?2, updated_ms = ?3 WHERE id = ?1",
                )?;
                for (id, reply) in sent {
                    let reply = reply.as_deref().unwrap_or("delivered directly while the store could not write");
                    mark.execute(params![id, reply, ms(now)])?;
                }
            }
        }
        write_audit(&tx, &turn.audit)?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO source_state (source, state, updated_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (source) DO UPDATE SET state = excluded.state, updated_ms = excluded.updated_ms",
            )?;
            for (source, state) in &turn.states {
                up.execute(params![source, state, ms(now)])?;
            }
        }
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO notices (name, offset_secs, last_fired) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, offset_secs) DO UPDATE SET last_fired = excluded.last_fired",
            )?;
            for ((name, off), t) in &turn.notice_positions {
                stmt.execute(params![name, *off as i64, t.to_rfc3339()])?;
            }
        }
        if !turn.silences.is_empty() {
            let mut up = tx.prepare_cached(
                "INSERT INTO silences (id, body, ends_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, ends_ms = excluded.ends_ms",
            )?;
            for silence in &turn.silences {
                let record = silence.record();
                up.execute(params![record.id, serde_json::to_string(&record)?, ms(record.ends)])?;
            }
        }
        // After the positions: a notice gone in this turn takes its
        // positions with it.
        for change in &turn.notices {
            match change {
                NoticeChange::Set(n) => {
                    let Some(record) = n.record() else { continue };
                    tx.prepare_cached(
                        "INSERT INTO runtime_notices (id, body) VALUES (?1, ?2)
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    )?
                    .execute(params![record.id, serde_json::to_string(&record)?])?;
                }
                NoticeChange::Gone(id) => {
                    tx.prepare_cached("DELETE FROM runtime_notices WHERE id = ?1")?.execute([id])?;
                    tx.prepare_cached("DELETE FROM notices WHERE name = ?1")?.execute([id])?;
                }
            }
        }
        for ((holder, transport), window) in &turn.budget.windows {
            let id = window_key(holder, transport);
            match window {
                Some(w) => {
                    tx.prepare_cached(
                        "INSERT INTO budget_windows (id, body) VALUES (?1, ?2)
                         ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                    )?
                    .execute(params![id, serde_json::to_string(w)?])?;
                }
                None => {
                    tx.prepare_cached("DELETE FROM budget_windows WHERE id = ?1")?.execute([id])?;
                }
            }
        }
        if let Some(next) = turn.budget.next_digest {
            tx.prepare_cached(
                "INSERT INTO budget_windows (id, body) VALUES ('', ?1)
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body",
            )?
            .execute([next.to_string()])?;
        }
        if let Some(before) = turn.prune_before {
            prune_in(&tx, before, PRUNE_BATCH)?;
        }
        tx.commit()?;
        self.wrote();
        if let Some(rows) = self.alert_rows.as_mut() {
            for ((rule, fp), id) in moved {
                match id {
                    Some(id) => {
                        rows.entry(rule).or_default().insert(fp, id);
                    }
                    None => {
                        if let Some(of_rule) = rows.get_mut(&rule) {
                            of_rule.remove(&fp);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Stops the ordinary writers of this file in this process (every
    /// `Store` of it) until the hold is dropped, as a checkpoint round
    /// does: they wait at the gate, or leave their writes for later (see
    /// [`HoldWatch`]); [`Priority::Urgent`] commits pass. Waits for the
    /// writer under way.
    pub fn hold_writes(&self) -> WriteHold<'_> {
        self.shared.hold_writes()
    }

    /// A handle that tells when holds of this file's writes end.
    pub fn hold_watch(&self) -> HoldWatch {
        HoldWatch { shared: self.shared.clone() }
    }

    /// Hands out up to `limit` due notifications of a transport, leasing
    /// them until `lease_until`: until their outcome is recorded (or
    /// [`Store::release`]d, or the lease runs out) no other call, from any
    /// `Store` of this file in this process, hands them out again. In the
    /// order of the `outbox_due` index: next attempt, then insertion.
    ///
    /// A read: it waits for no writer. The lease set stays locked while
    /// reading, and [`Store::record_attempts`] ends a lease only after its
    /// outcome is committed, so a claim never sees a row as pending from a
    /// snapshot taken before its outcome was written and its lease ended.
    pub fn claim(
        &mut self,
        transport: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut leases = hold(&self.shared.leases);
        // A lease that ran out was an abandoned worker's: due again.
        leases.retain(|_, until| *until > now);
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, payload, status, attempts, next_attempt_ms, last_error, reply, updated_ms FROM outbox
             WHERE transport = ?1 AND status = 'pending' AND next_attempt_ms <= ?2
             ORDER BY next_attempt_ms, rowid",
        )?;
        let mut rows = stmt.query(params![transport, ms(now)])?;
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some(r) = rows.next()? else { break };
            // Rows in flight are skipped before their payload is read.
            if leases.contains_key(&r.get::<_, i64>(0)?) {
                continue;
            }
            taken.push(row_to_entry(r));
        }
        let out = collect_entries(taken.into_iter())?;
        for e in &out {
            leases.insert(e.rowid, lease_until);
        }
        Ok(out)
    }

    /// Ends the leases of rows handed back untried: due again at once.
    pub(crate) fn release(&self, rowids: &[i64]) {
        let mut leases = hold(&self.shared.leases);
        for r in rowids {
            leases.remove(r);
        }
    }

    /// How many outbox rows are leased to workers now.
    #[cfg(test)]
    pub(crate) fn leased(&self) -> usize {
        hold(&self.shared.leases).len()
    }

    /// Makes every row left `sending` pending again: rows an older alerter
    /// leased in the file itself, at start, when no worker runs.
    pub fn release_all(&mut self) -> Result<usize, StoreError> {
        let _pass = self.shared.enter(Priority::Normal);
        Ok(self.conn.execute("UPDATE outbox SET status = 'pending' WHERE status = 'sending'", [])?)
    }

    /// When the next pending notification of a transport is due: a leased
    /// one when its lease runs out.
    pub fn next_due(&self, transport: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let leases = hold(&self.shared.leases);
        let mut stmt = self.conn.prepare_cached(
            "SELECT rowid, next_attempt_ms FROM outbox WHERE transport = ?1 AND status = 'pending'
             ORDER BY next_attempt_ms, rowid",
        )?;
        let mut rows = stmt.query([transport])?;
        let mut first_lease_end: Option<DateTime<Utc>> = None;
        while let Some(r) = rows.next()? {
            let next = from_ms(r.get(1)?);
            match leases.get(&r.get::<_, i64>(0)?) {
                Some(until) => first_lease_end = Some(first_lease_end.map_or(*until, |t| t.min(*until))),
                None => return Ok(Some(first_lease_end.map_or(next, |t| t.min(next)))),
            }
        }
        Ok(first_lease_end)
    }

    /// Records attempts' outcomes, by rowid, all in one transaction, and
    /// then ends their leases.
    pub fn record_attempts(&mut self, attempts: &[(i64, Attempt<'_>)], now: DateTime<Utc>) -> Result<(), StoreError> {
        self.record_attempts_with(attempts, Priority::Normal, now).map(|_| ())
    }

    /// [`Store::record_attempts`], treating a hold of the gate as
    /// `priority` says; `Ok(false)`: it yielded to one, wrote nothing, and
    /// the leases stay.
    pub fn record_attempts_with(
        &mut self,
        attempts: &[(i64, Attempt<'_>)],
        priority: Priority,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        {
            let Some(_pass) = self.shared.enter(priority) else { return Ok(false) };
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "UPDATE outbox SET status = ?2, attempts = ?3, next_attempt_ms = ?4, last_error = ?5,
                     reply = COALESCE(?6, reply), updated_ms = ?7 WHERE rowid = ?1",
                )?;
                for (rowid, a) in attempts {
                    stmt.execute(params![
                        rowid,
                        a.status.as_str(),
                        a.attempts,
                        ms(a.next_attempt),
                        a.error,
                        a.reply,
                        ms(now)
                    ])?;
                }
            }
            for n in attempts.iter().filter_map(|(_, a)| a.then) {
                queue(&tx, n, now)?;
            }
            tx.commit()?;
        }
        self.wrote();
        self.release(&attempts.iter().map(|(r, _)| *r).collect::<Vec<_>>());
        Ok(true)
    }

    /// Fails everything pending for transports that no longer exist, in
    /// one statement (a backlog of a removed transport can be large).
    pub fn fail_orphans(&mut self, transports: &[&str], now: DateTime<Utc>) -> Result<usize, StoreError> {
        let configured = serde_json::to_string(transports)?;
        let _pass = self.shared.enter(Priority::Normal);
        Ok(self.conn.execute(
            "UPDATE outbox SET status = 'failed', lease_until_ms = 0, updated_ms = ?2,
                 last_error = 'transport `' || transport || '` is no longer configured'
             WHERE status IN ('pending', 'sending')
               AND transport NOT IN (SELECT value FROM json_each(?1))",
            params![configured, ms(now)],
        )?)
    }

    /// One outbox entry by notification id.
    pub fn outbox_entry(&self, id: &str) -> Result<Option<OutboxEntry>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT rowid, payload, status, attempts, next_attempt_ms, last_error, reply, updated_ms FROM outbox WHERE id = ?1",
        )?;
        let rows = stmt.query_map([id], row_to_entry)?;
        Ok(collect_entries(rows)?.into_iter().next())
    }

    /// Recent notifications and suppressions, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryItem>, StoreError> {
        Ok(self.history_page(&HistoryFilter::default(), limit, None)?.0)
    }

    /// A page of history, newest first, with what `filter` asks: the
    /// outbox's notifications (sent, failed, expired, pending) and the
    /// audit trail's suppressions and changes, merged by time. `after` is
    /// the cursor a previous page returned; the cursor returned leads to
    /// the next page (`None`: this was the last). Each table is read by its
    /// row ids from the cursor down, so a page costs the same however deep
    /// it is.
    pub fn history_page(
        &self,
        filter: &HistoryFilter,
        limit: usize,
        after: Option<HistoryCursor>,
    ) -> Result<(Vec<HistoryItem>, Option<HistoryCursor>), StoreError> {
        let limit = limit.max(1);
        let cursor = after.unwrap_or(HistoryCursor { outbox: i64::MAX, audit: i64::MAX });
        let mut items: Vec<(HistoryItem, bool, i64)> = Vec::new();
        if filter.wants_outbox() {
            let (sql, args) = filter.outbox_sql(cursor.outbox, limit + 1);
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), row_to_entry)?;
            for e in collect_entries(rows)? {
                let n = &e.notification;
                let item = HistoryItem {
                    time: n.created_at,
                    rule: n.rule.clone(),
                    transport: Some(n.transport.clone()),
                    status: e.status.as_str().to_string(),
                    summary: n.title.clone(),
                    recipients: n.recipients.iter().map(|r| r.id.clone()).collect(),
                    attempts: e.attempts,
                    detail: match e.status {
                        OutboxStatus::Sent => e.reply.clone(),
                        _ => e.last_error.clone(),
                    },
                    notification: Some(n.id.clone()),
                    alerts: n.alerts.iter().map(|a| a.fingerprint.to_string()).collect(),
                };
                items.push((item, true, e.rowid));
            }
        }
        if filter.wants_audit() {
            let (sql, args) = filter.audit_sql(cursor.audit, limit + 1);
            let mut stmt = self.conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, i64>(0)?, audit_from_row(r, 1)?))
            })?;
            for row in rows {
                let (id, a) = row?;
                let item = HistoryItem {
                    time: a.time,
                    rule: a.rule,
                    transport: a.transport,
                    status: a.status,
                    summary: a.summary.unwrap_or_default(),
                    recipients: Vec::new(),
                    attempts: 0,
                    detail: a.reason,
                    notification: a.notification,
                    alerts: a.fingerprint.map(|f| f.to_string()).into_iter().collect(),
                };
                items.push((item, false, id));
            }
        }
        items.sort_by_key(|(item, _, id)| std::cmp::Reverse((item.time, *id)));
        let more = items.len() > limit;
        items.truncate(limit);
        let next = more.then(|| {
            let mut c = cursor;
            for (_, outbox, id) in &items {
                if *outbox {
                    c.outbox = c.outbox.min(*id);
                } else {
                    c.audit = c.audit.min(*id);
                }
            }
            c
        });
        Ok((items.into_iter().map(|(i, _, _)| i).collect(), next))
    }

    /// Forgets finished notifications and audit records older than
    /// `before`, at most `limit` of each per call so a long-due prune never
    /// holds the database for long. Returns how many rows went.
    pub fn prune(&mut self, before: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
        let _pass = self.shared.enter(Priority::Normal);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = prune_in(&tx, before, limit)?;
        tx.commit()?;
        self.wrote();
        Ok(n)
    }

    /// Whether an alert row exists.
    pub fn has_alert(&self, rule: &str, fp: Fingerprint) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM alerts WHERE rule = ?1 AND fingerprint = ?2",
                params![rule, fp.to_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

/// Rows of each kind pruned per turn at most: a turn stays short, and
/// pruning every ten minutes still keeps up with millions a day.
const PRUNE_BATCH: usize = 20_000;

fn prune_in(tx: &rusqlite::Transaction<'_>, before: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
    // Rows are in the order they were made (see migration 6): the old ones
    // come first, and the first one that is not old ends them. Reading up to
    // it reads only what is pruned, what is still pending, and one row.
    let n = tx.execute(
        "DELETE FROM outbox WHERE rowid IN (
             SELECT rowid FROM outbox
             WHERE rowid < (SELECT COALESCE(MIN(rowid), 9223372036854775807) FROM
                               (SELECT rowid FROM outbox WHERE created_ms >= ?1 ORDER BY rowid LIMIT 1))
               AND created_ms < ?1 AND status IN ('sent', 'failed', 'expired')
             ORDER BY rowid LIMIT ?2)",
        params![ms(before), limit as i64],
    )?;
    let m = tx.execute(
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE time < ?1 ORDER BY time LIMIT ?2)",
        params![before.to_rfc3339(), limit as i64],
    )?;
    let s = tx.execute("DELETE FROM silences WHERE ends_ms < ?1", params![ms(before)])?;
    Ok(n + m + s)
}

/// Writes alert changes by row id; returns the rows made or deleted (by
/// alert, `None`: deleted), for the map once the transaction committed.
fn write_alert_changes(
    tx: &rusqlite::Transaction<'_>,
    rows: &AlertRows,
    changes: &[AlertChange],
    now: DateTime<Utc>,
) -> Result<HashMap<(String, Fingerprint), Option<i64>>, StoreError> {
    let mut insert =
        tx.prepare_cached("INSERT INTO alerts (rule, fingerprint, state, updated_at) VALUES (?1, ?2, ?3, ?4)")?;
    let mut update = tx.prepare_cached("UPDATE alerts SET state = ?2, updated_at = ?3 WHERE id = ?1")?;
    let mut delete = tx.prepare_cached("DELETE FROM alerts WHERE id = ?1")?;
    let now = now.to_rfc3339();
    let mut moved: HashMap<(String, Fingerprint), Option<i64>> = HashMap::new();
    for c in changes {
        let key = (c.rule.clone(), c.fingerprint);
        let at = match moved.get(&key) {
            Some(made) => *made,
            None => rows.get(&c.rule).and_then(|r| r.get(&c.fingerprint)).copied(),
        };
        match (&c.alert, at) {
            (Some(a), Some(id)) => {
                update.execute(params![id, serde_json::to_string(a)?, now])?;
            }
            (Some(a), None) => {
                insert.execute(params![c.rule, c.fingerprint.to_string(), serde_json::to_string(a)?, now])?;
                moved.insert(key, Some(tx.last_insert_rowid()));
            }
            (None, Some(id)) => {
                delete.execute([id])?;
                moved.insert(key, None);
            }
            (None, None) => {}
        }
    }
    Ok(moved)
}

fn write_audit(tx: &rusqlite::Transaction<'_>, records: &[AuditRecord]) -> Result<(), StoreError> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit (time, rule, fingerprint, transport, notification, status, reason, summary)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for r in records {
        stmt.execute(params![
            r.time.to_rfc3339(),
            r.rule,
            r.fingerprint.map(|f| f.to_string()),
            r.transport,
            r.notification,
            r.status,
            r.reason,
            r.summary,
        ])?;
    }
    Ok(())
}

type EntryRow = (i64, String, String, u32, i64, Option<String>, Option<String>, i64);

/// A row of `SELECT rowid, payload, status, attempts, next_attempt_ms,
/// last_error, reply, updated_ms`.
/// An audit record from the columns time, rule, fingerprint, transport,
/// notification, status, reason, summary, the first at `at`.
fn audit_from_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<AuditRecord> {
    let time: String = r.get(at)?;
    let fp: Option<String> = r.get(at + 2)?;
    Ok(AuditRecord {
        time: DateTime::parse_from_rfc3339(&time).map(|t| t.with_timezone(&Utc)).unwrap_or_default(),
        rule: r.get(at + 1)?,
        fingerprint: fp.and_then(|f| Fingerprint::try_from(f).ok()),
        transport: r.get(at + 3)?,
        notification: r.get(at + 4)?,
        status: r.get(at + 5)?,
        reason: r.get(at + 6)?,
        summary: r.get(at + 7)?,
    })
}

fn row_to_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
}

fn collect_entries(rows: impl Iterator<Item = rusqlite::Result<EntryRow>>) -> Result<Vec<OutboxEntry>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let (rowid, payload, status, attempts, next, error, reply, updated) = row?;
        out.push(OutboxEntry {
            rowid,
            notification: serde_json::from_str(&payload)?,
            status: OutboxStatus::parse(&status),
            attempts,
            next_attempt: from_ms(next),
            last_error: error,
            reply,
            updated: from_ms(updated),
        });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::{Event, Severity};
    use crate::rules::router::{Alert, AlertStatus, Sent};

    fn alert(t: DateTime<Utc>) -> Alert {
        let event = Event::new("disk", "h", Severity::Warning, "full", t);
        Alert {
            fingerprint: event.fingerprint(),
            event,
            status: AlertStatus::Firing,
            since: t,
            fired_at: Some(t),
            resolved_at: None,
            last_notified: Some(t),
            notified_severity: Some(Severity::Warning),
            count: 0,
            ack: None,
        }
    }

    #[test]
    fn alerts_survive_reopen_and_migrations_are_valid() {
        migrations().validate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = alert(t);
        {
            let mut s = Store::open(dir.path()).unwrap();
            let change = AlertChange {
                rule: "r".into(),
                fingerprint: a.fingerprint,
                alert: Some(Kept::Alert(Box::new(a.clone()))),
            };
            s.apply_alert_changes(&[change], t).unwrap();
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(s.load_alerts().unwrap(), vec![("r".to_string(), a.fingerprint, Kept::Alert(Box::new(a.clone())))]);
        let gone = AlertChange { rule: "r".into(), fingerprint: a.fingerprint, alert: None };
        s.apply_alert_changes(&[gone], t).unwrap();
        assert!(!s.has_alert("r", a.fingerprint).unwrap());
    }

    fn alert_rows_in_file(s: &Store) -> Vec<(i64, String, String)> {
        let mut stmt = s.conn.prepare("SELECT id, rule, state FROM alerts ORDER BY id").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
    }

    /// Alerts are found by the writer's map, not an index: an alert keeps
    /// one row through updates, in one turn and across turns and reopens;
    /// the same fingerprint under two rules is two rows; a row made and
    /// deleted in one turn leaves nothing; ids are never reused.
    #[test]
    fn alert_rows_are_found_without_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = alert(t);
        let mut b = a.clone();
        b.count = 7;
        let change = |rule: &str, alert: Option<&Alert>| AlertChange {
            rule: rule.into(),
            fingerprint: a.fingerprint,
            alert: alert.cloned().map(|a| Kept::Alert(Box::new(a))),
        };
        {
            let mut s = Store::open(dir.path()).unwrap();
            s.apply_alert_changes(&[change("r", Some(&a)), change("r", Some(&b)), change("q", Some(&a))], t).unwrap();
            s.apply_alert_changes(&[change("r", Some(&a))], t).unwrap();
            let rows = alert_rows_in_file(&s);
            assert_eq!(rows.iter().map(|r| (r.0, r.1.as_str())).collect::<Vec<_>>(), [(1, "r"), (2, "q")]);
            assert_eq!(serde_json::from_str::<Alert>(&rows[0].2).unwrap(), a, "the last state of the turn");
            // Made and gone in one turn.
            let mut c = a.clone();
            c.fingerprint = Fingerprint(42);
            let made = AlertChange {
                rule: "r".into(),
                fingerprint: c.fingerprint,
                alert: Some(Kept::Alert(Box::new(c.clone()))),
            };
            let gone = AlertChange { rule: "r".into(), fingerprint: c.fingerprint, alert: None };
            s.apply_alert_changes(&[made, gone], t).unwrap();
            assert_eq!(alert_rows_in_file(&s).len(), 2);
        }
        // A new store finds the rows from the file.
        let mut s = Store::open(dir.path()).unwrap();
        s.apply_alert_changes(&[change("r", Some(&b)), change("q", None)], t).unwrap();
        let rows = alert_rows_in_file(&s);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].0, serde_json::from_str::<Alert>(&rows[0].2).unwrap()), (1, b.clone()));
        s.apply_alert_changes(&[change("q", Some(&a))], t).unwrap();
        assert_eq!(alert_rows_in_file(&s)[1].0, 4, "ids 2 and 3 are not reused");
        let loaded = s.load_alerts().unwrap();
        let (fp, a, b) = (a.fingerprint, Kept::Alert(Box::new(a.clone())), Kept::Alert(Box::new(b)));
        assert_eq!(loaded, vec![("q".to_string(), fp, a), ("r".to_string(), fp, b)]);
    }

    /// A notified one-shot is kept as when it was sent, a few bytes, and
    /// read back as such beside full alerts.
    #[test]
    fn a_sent_one_shot_is_kept_in_a_few_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = alert(t);
        let sent = Sent { at: t, repeats: 3 };
        let mut s = Store::open(dir.path()).unwrap();
        let changes = [
            AlertChange { rule: "r".into(), fingerprint: Fingerprint(7), alert: Some(Kept::Sent(sent)) },
            AlertChange { rule: "r".into(), fingerprint: a.fingerprint, alert: Some(Kept::Alert(Box::new(a.clone()))) },
        ];
        s.apply_alert_changes(&changes, t).unwrap();
        let rows = alert_rows_in_file(&s);
        assert_eq!(rows[0].2, r#"{"sent_ms":1800000000000,"repeats":3}"#);
        let mut loaded = s.load_alerts().unwrap();
        loaded.sort_by_key(|(_, fp, _)| *fp);
        let mut expected = vec![
            ("r".to_string(), Fingerprint(7), Kept::Sent(sent)),
            ("r".to_string(), a.fingerprint, Kept::Alert(Box::new(a))),
        ];
        expected.sort_by_key(|(_, fp, _)| *fp);
        assert_eq!(loaded, expected);
    }

    /// A database of schema 4 (alerts keyed by rule and fingerprint) keeps
    /// its alerts through migration 5.
    #[test]
    fn alerts_of_schema_4_survive_migration_5() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = alert(t);
        {
            let mut conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
            migrations().to_version(&mut conn, 4).unwrap();
            conn.execute(
                "INSERT INTO alerts (rule, fingerprint, state, updated_at) VALUES ('r', ?1, ?2, 'x')",
                params![a.fingerprint.to_string(), serde_json::to_string(&a).unwrap()],
            )
            .unwrap();
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load_alerts().unwrap(), vec![("r".to_string(), a.fingerprint, Kept::Alert(Box::new(a.clone())))]);
        let gone = AlertChange { rule: "r".into(), fingerprint: a.fingerprint, alert: None };
        s.apply_alert_changes(&[gone], t).unwrap();
        assert!(s.load_alerts().unwrap().is_empty());
    }

    pub(crate) fn note(id: &str, transport: &str, t: DateTime<Utc>) -> Notification {
        Notification {
            id: id.into(),
            created_at: t,
            rule: "r".into(),
            transport: transport.into(),
            status: "firing".into(),
            severity: Severity::Warning,
            title: format!("title {id}"),
            text: "x".into(),
            html: None,
            recipients: vec![],
            alerts: vec![],
            group: Default::default(),
            repeat: false,
            offline: None,
        }
    }

    fn fill(s: &mut Store, n: usize, t: DateTime<Utc>) {
        let turn =
            Turn { notifications: (0..n).map(|i| note(&format!("n{i:05}"), "log", t)).collect(), ..Turn::default() };
        s.commit(&turn, t).unwrap();
    }

    #[test]
    fn claimed_rows_are_leased_and_never_handed_out_twice() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut a = Store::open(dir.path()).unwrap();
        let mut b = Store::open(dir.path()).unwrap();
        fill(&mut a, 100, t);
        let lease = t + chrono::Duration::minutes(15);
        let first = a.claim("log", t, lease, 60).unwrap();
        let second = b.claim("log", t, lease, 60).unwrap();
        assert_eq!(first.len(), 60);
        assert_eq!(second.len(), 40, "only what the first did not take");
        let ids = |v: &[OutboxEntry]| v.iter().map(|e| e.notification.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&first)[..3], ["n00000", "n00001", "n00002"], "in order");
        assert!(ids(&first).iter().all(|id| !ids(&second).contains(id)), "disjoint");
        assert!(a.claim("log", t, lease, 60).unwrap().is_empty());
        assert_eq!(a.leased(), 100);
        // While every pending row is leased, the next one is due when its lease runs out.
        assert_eq!(a.next_due("log").unwrap(), Some(lease));
        // Recorded ones are done and their leases end; a row handed back is
        // due again at once; a lease that ran out makes the rest due again.
        let sent =
            Attempt { status: OutboxStatus::Sent, attempts: 1, next_attempt: t, error: None, reply: None, then: None };
        let done: Vec<_> = first.iter().map(|e| (e.rowid, sent.clone())).collect();
        a.record_attempts(&done, t).unwrap();
        assert_eq!(a.leased(), 40);
        b.release(&[second[0].rowid]);
        let again = a.claim("log", t, lease, 100).unwrap();
        assert_eq!(ids(&again), [second[0].notification.id.clone()], "only the one handed back; the rest still leased");
        let later = lease + chrono::Duration::seconds(1);
        assert_eq!(a.claim("log", later, later, 100).unwrap().len(), 40, "leases ran out");
        assert_eq!(a.outbox_entry("n00000").unwrap().unwrap().status, OutboxStatus::Sent);
        // The file holds no lease: a new process finds every unsent row pending.
        drop((a, b));
        let fresh = Store::open(dir.path()).unwrap();
        assert_eq!(fresh.leased(), 0);
        assert_eq!(fresh.outbox_entry("n00099").unwrap().unwrap().status, OutboxStatus::Pending);
    }

    /// Rows left `sending` by an alerter that leased in the file are
    /// pending again after a start.
    #[test]
    fn rows_an_older_alerter_left_sending_are_released_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        fill(&mut s, 3, t);
        s.conn.execute("UPDATE outbox SET status = 'sending', lease_until_ms = 1 WHERE id != 'n00002'", []).unwrap();
        let lease = t + chrono::Duration::minutes(1);
        assert_eq!(s.claim("log", t, lease, 10).unwrap().len(), 1);
        assert_eq!(s.release_all().unwrap(), 2);
        assert_eq!(s.claim("log", t, lease, 10).unwrap().len(), 2);
    }

    /// While a hold (a checkpoint round) closes the gate, an urgent commit
    /// of another `Store` of the file goes through at once; an ordinary one
    /// waits for the hold to end, and then goes through too.
    #[test]
    fn urgent_commits_pass_a_hold_and_ordinary_ones_wait_for_it() {
        use std::sync::mpsc::{RecvTimeoutError, channel};
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let holder = Store::open(dir.path()).unwrap();
        // Opened before the hold: opening migrates, at the gate.
        let mut s = Store::open(dir.path()).unwrap();
        let mut yielding = Store::open(dir.path()).unwrap();
        let watch = holder.hold_watch();
        assert!(!watch.held());
        let hold = holder.hold_writes();
        assert!(watch.held());
        let (done_tx, done) = channel();
        let writer = {
            std::thread::spawn(move || {
                let turn = |id: &str| Turn { notifications: vec![note(id, "log", t)], ..Turn::default() };
                s.commit_with_sent(&turn("urgent"), &HashMap::new(), Priority::Urgent, t).unwrap();
                done_tx.send("urgent").unwrap();
                s.commit_with_sent(&turn("ordinary"), &HashMap::new(), Priority::Normal, t).unwrap();
                done_tx.send("ordinary").unwrap();
            })
        };
        // A failure here would otherwise hang the test: bounded waits.
        use std::time::Duration;
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok("urgent"), "the urgent commit passed the hold");
        assert!(holder.outbox_entry("urgent").unwrap().is_some());
        assert_eq!(done.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty), "the ordinary commit waits");
        assert!(holder.outbox_entry("ordinary").unwrap().is_none());
        // One that yields writes nothing and says so, at once.
        let turn = Turn { notifications: vec![note("yielded", "log", t)], ..Turn::default() };
        assert!(!yielding.commit_with_sent(&turn, &HashMap::new(), Priority::Yield, t).unwrap());
        assert!(holder.outbox_entry("yielded").unwrap().is_none());
        drop(hold);
        assert_eq!(done.recv_timeout(Duration::from_secs(30)), Ok("ordinary"));
        assert_eq!(done.recv_timeout(Duration::from_secs(1)), Err(RecvTimeoutError::Disconnected));
        writer.join().unwrap();
        assert!(!watch.held());
        assert!(holder.outbox_entry("ordinary").unwrap().is_some());
    }

    #[test]
    fn writers_of_one_file_queue_on_the_gate_instead_of_failing_busy() {
        // With no busy wait at all, SQLite alone would fail one of two
        // connections writing at once ("database is locked"); the gate
        // makes them take turns.
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let threads: Vec<_> = (0..2)
            .map(|k| {
                let path = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut s = Store::open(&path).unwrap();
                    s.set_busy_timeout(std::time::Duration::ZERO).unwrap();
                    for i in 0..200 {
                        let turn =
                            Turn { notifications: vec![note(&format!("t{k}-{i}"), "log", t)], ..Turn::default() };
                        s.commit(&turn, t).unwrap();
                        let lease = t + chrono::Duration::minutes(1);
                        let claimed = s.claim("log", t, lease, 1).unwrap();
                        let sent = Attempt {
                            status: OutboxStatus::Sent,
                            attempts: 1,
                            next_attempt: t,
                            error: None,
                            reply: None,
                            then: None,
                        };
                        let done: Vec<_> = claimed.iter().map(|e| (e.rowid, sent.clone())).collect();
                        s.record_attempts(&done, t).unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().expect("no writer failed");
        }
        let s = Store::open(dir.path()).unwrap();
        let n: i64 = s.conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 400);
    }

    #[test]
    fn orphans_of_removed_transports_fail_and_the_rest_stay_pending() {
        let mut s = Store::in_memory().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let turn = Turn {
            notifications: vec![note("a", "log", t), note("b", "gone", t), note("c", "gone", t)],
            ..Turn::default()
        };
        s.commit(&turn, t).unwrap();
        s.claim("gone", t, t + chrono::Duration::minutes(1), 1).unwrap();
        assert_eq!(s.fail_orphans(&["log"], t).unwrap(), 2, "pending and leased rows of `gone`");
        let b = s.outbox_entry("b").unwrap().unwrap();
        assert_eq!(b.status, OutboxStatus::Failed);
        assert_eq!(b.last_error.as_deref(), Some("transport `gone` is no longer configured"));
        assert_eq!(s.outbox_entry("a").unwrap().unwrap().status, OutboxStatus::Pending);
        assert_eq!(s.fail_orphans(&["log"], t).unwrap(), 0);
    }

    #[test]
    fn taking_due_rows_uses_the_index_without_sorting_the_backlog() {
        let s = Store::in_memory().unwrap();
        let plan: Vec<String> = s
            .conn
            .prepare(
                "EXPLAIN QUERY PLAN SELECT rowid, payload FROM outbox
                 WHERE transport = 'log' AND status = 'pending' AND next_attempt_ms <= 5
                 ORDER BY next_attempt_ms, rowid",
            )
            .unwrap()
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(plan.iter().any(|l| l.contains("INDEX outbox_due")), "{plan:?}");
        assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "no sort: {plan:?}");
    }

    #[test]
    fn prune_forgets_finished_rows_and_old_audit_in_batches() {
        let mut s = Store::in_memory().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        fill(&mut s, 30, t);
        let sent =
            Attempt { status: OutboxStatus::Sent, attempts: 1, next_attempt: t, error: None, reply: None, then: None };
        let claimed = s.claim("log", t, t, 20).unwrap();
        let done: Vec<_> = claimed.iter().map(|e| (e.rowid, sent.clone())).collect();
        s.record_attempts(&done, t).unwrap();
        let later = t + chrono::Duration::days(31);
        assert_eq!(s.prune(later, 15).unwrap(), 15);
        assert_eq!(s.prune(later, 15).unwrap(), 5);
        assert_eq!(s.prune(later, 15).unwrap(), 0, "pending rows are never pruned");
        assert!(s.outbox_entry("n00025").unwrap().is_some());
    }

    /// Without an index on creation time, pruning reads rows in the order
    /// they were made and stops at the first young one: it never removes a
    /// row made after `before`, and an old row made after it (a turn held
    /// while the store failed) waits until the rows before it are old too.
    #[test]
    fn prune_stops_at_the_first_young_row() {
        let mut s = Store::in_memory().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let young = t + chrono::Duration::days(40);
        let before = t + chrono::Duration::days(30);
        let notes = vec![
            note("old-1", "log", t),
            note("old-2", "log", t),
            note("young", "log", young),
            note("late-old", "log", t),
        ];
        s.commit(&Turn { notifications: notes, ..Turn::default() }, t).unwrap();
        let sent =
            Attempt { status: OutboxStatus::Sent, attempts: 1, next_attempt: t, error: None, reply: None, then: None };
        let claimed = s.claim("log", young, young, 10).unwrap();
        let done: Vec<_> = claimed.iter().map(|e| (e.rowid, sent.clone())).collect();
        s.record_attempts(&done, t).unwrap();
        assert_eq!(s.prune(before, 100).unwrap(), 2);
        let left: Vec<String> = s.history(10).unwrap().into_iter().map(|h| h.summary).collect();
        assert_eq!(left, ["title young", "title late-old"], "the young one and the old one made after it");
        assert_eq!(s.prune(young + chrono::Duration::days(1), 100).unwrap(), 2, "both once the young one is old");
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer alerter"));
    }

    #[test]
    fn unwritable_state_dir_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = Store::open(&file.join("state")).unwrap_err();
        assert!(err.to_string().contains("alerter.state_dir"), "{err}");
    }

    #[test]
    fn notices_and_audit_round_trip() {
        let mut s = Store::in_memory().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut h = HashMap::new();
        h.insert(("backup".to_string(), 3600u64), t);
        // A cursor of a notice first known at `t` sits a nanosecond before it.
        h.insert(("backup".to_string(), 0u64), t - chrono::Duration::nanoseconds(1));
        s.save_notice_history(&h).unwrap();
        assert_eq!(s.notice_history().unwrap(), h);
        let rec = AuditRecord {
            time: t,
            rule: "r".into(),
            fingerprint: None,
            transport: Some("log".into()),
            notification: Some("abc".into()),
            status: "sent".into(),
            reason: None,
            summary: Some("x".into()),
        };
        s.audit(std::slice::from_ref(&rec)).unwrap();
        assert_eq!(s.recent_audit(10).unwrap(), vec![rec]);
    }

    #[test]
    fn history_pages_by_filter_and_cursor_without_repeats_or_gaps() {
        use crate::rules::Recipient;
        let mut s = Store::in_memory().unwrap();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let at = |i: i64| t0 + chrono::Duration::seconds(i);
        let fp = Fingerprint(0x3f2a_9c01_0000_0001);
        // Notifications at even seconds (to alice by popup, to bob by mail,
        // in turn), audit records at odd ones.
        for i in 0..20 {
            let mut n = note(&format!("n{i:02}"), if i % 4 == 0 { "popup" } else { "mail" }, at(2 * i));
            n.rule = if i < 10 { "disk".into() } else { "app".into() };
            let who = if i % 4 == 0 { "alice" } else { "bob" };
            n.recipients =
                vec![Recipient { id: who.into(), name: None, machine: None, user: None, email: None, group: None }];
            if i == 7 {
                n.alerts = vec![crate::notify::AlertSummary {
                    fingerprint: fp,
                    status: "firing".into(),
                    source: "disk".into(),
                    host: "h".into(),
                    severity: Severity::Warning,
                    summary: "full".into(),
                    details: String::new(),
                    labels: Default::default(),
                    since: at(0),
                    count: 1,
                }];
            }
            let status = if i % 2 == 0 { "suppressed" } else { "silence" };
            let rec = AuditRecord {
                time: at(2 * i + 1),
                rule: n.rule.clone(),
                fingerprint: (i == 3).then_some(fp),
                transport: None,
                notification: None,
                status: status.into(),
                reason: Some(format!("r{i}")),
                summary: Some(format!("a{i:02}")),
            };
            // Records that history leaves out (the outbox tells of those).
            let sent = AuditRecord { status: "sent".into(), ..rec.clone() };
            s.commit(&Turn { notifications: vec![n], audit: vec![rec, sent], ..Turn::default() }, at(2 * i)).unwrap();
        }
        let page = |f: &HistoryFilter, n: usize, c: Option<HistoryCursor>| s.history_page(f, n, c).unwrap();
        let names = |items: &[HistoryItem]| items.iter().map(|i| i.summary.replace("title ", "")).collect::<Vec<_>>();

        // Everything, newest first, 7 at a time: 40 entries, each once.
        let all = HistoryFilter::default();
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let (items, next) = page(&all, 7, cursor);
            assert!(items.len() <= 7);
            seen.extend(names(&items));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut want: Vec<String> = (0..20).flat_map(|i| [format!("n{i:02}"), format!("a{i:02}")]).collect();
        want.reverse();
        assert_eq!(seen, want);
        // The cursor reads back as it was written.
        let (_, c) = page(&all, 3, None);
        let c = c.unwrap();
        assert_eq!(c.to_string().parse::<HistoryCursor>(), Ok(c));
        assert!("12".parse::<HistoryCursor>().is_err() && "a.b".parse::<HistoryCursor>().is_err());

        let only = |f: HistoryFilter| names(&page(&f, 100, None).0);
        assert_eq!(
            only(HistoryFilter { transport: Some("popup".into()), ..Default::default() }),
            ["n16", "n12", "n08", "n04", "n00"]
        );
        assert_eq!(
            only(HistoryFilter { recipient: Some("alice".into()), rule: Some("app".into()), ..Default::default() }),
            ["n16", "n12"],
            "a recipient filter is about notifications"
        );
        assert_eq!(
            only(HistoryFilter { status: Some("silence".into()), rule: Some("disk".into()), ..Default::default() }),
            ["a09", "a07", "a05", "a03", "a01"]
        );
        assert_eq!(
            only(HistoryFilter { alert: Some("3F2A9C01".into()), ..Default::default() }),
            ["n07", "a03"],
            "by alert, in the outbox's payload and the audit's column"
        );
        assert_eq!(
            only(HistoryFilter { since: Some(at(36)), until: Some(at(39)), ..Default::default() }),
            ["n19", "a18", "n18"],
            "since is inclusive, until exclusive"
        );
        assert_eq!(only(HistoryFilter { status: Some("sent".into()), ..Default::default() }), Vec::<String>::new());
    }

    #[test]
    fn budget_windows_are_kept_across_a_reopen_until_their_turn_says_gone() {
        use alerter_engine::budget::{Class, LedgerChanges, Limit};
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let window = BudgetWindow {
            holder: "@ops".into(),
            transport: "popup".into(),
            class: Class::Popups,
            limit: Limit { count: 5, per: std::time::Duration::from_secs(10) },
            opened: t,
            ends: t + chrono::Duration::seconds(10),
            shown: 5,
            folded: None,
        };
        let key = ("@ops".to_string(), "popup".to_string());
        let turn = |w: Option<BudgetWindow>, next: Option<u64>| {
            let mut budget = LedgerChanges::default();
            budget.windows.insert(key.clone(), w);
            budget.next_digest = next;
            Turn { budget, ..Turn::default() }
        };
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load_budgets().unwrap(), (Vec::new(), 1, Vec::new()), "nothing yet: digests start at #1");
        s.commit(&turn(Some(window.clone()), Some(4)), t).unwrap();
        drop(s);
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load_budgets().unwrap(), (vec![window], 4, Vec::new()));
        s.commit(&turn(None, None), t).unwrap();
        assert_eq!(s.load_budgets().unwrap(), (Vec::new(), 4, Vec::new()), "gone, and the counter stays");
        // A row that does not read is left out and said, not fatal.
        s.conn.execute("INSERT INTO budget_windows (id, body) VALUES ('bob\u{1f}popup', '{')", []).unwrap();
        let (windows, _, bad) = s.load_budgets().unwrap();
        assert!(windows.is_empty());
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("budget window `bob\u{1f}popup`: "), "{bad:?}");
    }

    #[test]
    fn a_notice_set_at_run_time_is_kept_until_it_is_gone_with_its_positions() {
        use crate::notices::{SetNotice, When};
        use crate::rules::{Recipient, Target};
        let dir = tempfile::tempdir().unwrap();
        let t = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let notice = Notice {
            name: "n-0000abcd".into(),
            when: When::Once(t + chrono::Duration::hours(2)),
            tz: "Asia/Kolkata".parse().unwrap(),
            offsets: vec![std::time::Duration::from_secs(3600), std::time::Duration::ZERO],
            targets: vec![Target { transport: "popup".into(), recipients: vec![Recipient::workgroup()] }],
            set: Some(SetNotice { title: "t".into(), text: "down at six".into(), by: "user:root".into(), at: t }),
        };
        let mut positions = HashMap::new();
        positions.insert(("n-0000abcd".to_string(), 3600u64), t);
        positions.insert(("backup".to_string(), 0u64), t);
        let n = Arc::new(notice);
        let mut s = Store::open(dir.path()).unwrap();
        s.commit(
            &Turn { notices: vec![NoticeChange::Set(n.clone())], notice_positions: positions, ..Turn::default() },
            t,
        )
        .unwrap();
        drop(s);
        // Read back after a reopen, as after a restart.
        let mut s = Store::open(dir.path()).unwrap();
        let (back, bad) = s.load_notices().unwrap();
        assert!(bad.is_empty(), "{bad:?}");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].record(), n.record());
        assert_eq!(s.notice_history().unwrap().len(), 2);
        s.commit(&Turn { notices: vec![NoticeChange::Gone("n-0000abcd".into())], ..Turn::default() }, t).unwrap();
        assert!(s.load_notices().unwrap().0.is_empty());
        let left: Vec<String> = s.notice_history().unwrap().into_keys().map(|(name, _)| name).collect();
        assert_eq!(left, ["backup"], "its positions go with it, the config's stay");
        // A record this alerter cannot read is reported, not fatal.
        s.conn.execute("INSERT INTO runtime_notices (id, body) VALUES ('n-bad', '{\"at\": 5}')", []).unwrap();
        let (ok, bad) = s.load_notices().unwrap();
        assert!(ok.is_empty());
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("notice `n-bad`: "), "{bad:?}");
    }
}
