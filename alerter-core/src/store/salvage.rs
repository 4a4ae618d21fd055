//! Salvage of a damaged state database, at start.
//!
//! The daemon checks its database before it trusts it (`PRAGMA
//! quick_check`). A damaged one (a torn page after a power loss, a disk
//! error, a file that is not SQLite at all) must not keep the alerter from
//! alerting, and must not cost more than the damage forces. So the rows that
//! can still be read go into a fresh database, the damaged file is moved
//! aside for a post-mortem (`alerter.db.corrupt-<time>`, with its `-wal` and
//! `-shm`), and the caller raises an event that says what was kept and lost.
//!
//! Rows are read in rowid order. Where a read fails, the walk finds the first
//! rowid past the damage it can seek to (galloping, then bisecting: a seek
//! only reads the pages on its way down the tree, so it succeeds once past the
//! damaged page) and goes on from there. What was on damaged pages is lost;
//! how much is counted through an index when the table's indexes survived.
//! Rows that read but do not decode (garbage that happens to parse as a row)
//! are dropped too, so one bad row cannot block the outbox later.

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, params_from_iter};

use super::{DB_FILE, Store, StoreError, create_private, migrations};
use crate::notify::Notification;
use crate::rules::router::Kept;

/// Tables copied, in this order; what each holds, for the report.
const TABLES: &[(&str, &str)] = &[
    ("alerts", "alert states"),
    ("notices", "notice positions"),
    ("source_state", "source positions"),
    ("silences", "silences"),
    ("runtime_notices", "notices set at run time"),
    ("budget_windows", "budget windows"),
    ("outbox", "notifications"),
    ("audit", "audit records"),
];

/// Rows read per query while the pages are sound.
const BATCH: i64 = 512;

/// What a salvage did: where the damaged file went and what was kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Salvage {
    /// The damaged database, as it was found.
    pub path: PathBuf,
    /// Where it was moved.
    pub moved_to: PathBuf,
    /// What the check found (its first lines).
    pub problem: String,
    pub tables: Vec<TableSalvage>,
    /// Notifications still to be delivered, kept.
    pub pending_kept: u64,
    /// Notifications still to be delivered, lost (`None`: unknown, the
    /// index that would count them is damaged too).
    pub pending_lost: Option<u64>,
}

/// One table's share of a salvage.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSalvage {
    pub table: &'static str,
    pub kept: u64,
    /// `None`: some rows were lost and how many is unknown.
    pub lost: Option<u64>,
}

impl fmt::Display for Salvage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} was damaged ({}) and was moved aside to {}; kept {} undelivered notifications",
            self.path.display(),
            self.problem,
            self.moved_to.display(),
            self.pending_kept
        )?;
        match self.pending_lost {
            Some(0) => write!(f, " (none lost)")?,
            Some(n) => write!(f, " ({n} lost)")?,
            None => write!(f, " (an unknown number lost)")?,
        }
        let mut parts = Vec::new();
        for t in &self.tables {
            let what = TABLES.iter().find(|(n, _)| *n == t.table).map_or(t.table, |(_, w)| *w);
            match t.lost {
                Some(0) => parts.push(format!("{} {what}", t.kept)),
                Some(n) => parts.push(format!("{} {what} ({n} lost)", t.kept)),
                None => parts.push(format!("{} {what} (some lost)", t.kept)),
            }
        }
        write!(f, "; in all {}", parts.join(", "))
    }
}

impl Store {
    /// [`Store::open`], after checking the database: a damaged one is
    /// salvaged into a fresh one and moved aside, and what was done is
    /// returned for the caller to announce. A database that cannot be read
    /// for another reason (permissions, say) is an error, never moved.
    pub fn open_checked(dir: &Path, now: DateTime<Utc>) -> Result<(Store, Option<Salvage>), StoreError> {
        let path = dir.join(DB_FILE);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok((Store::open(dir)?, None));
        }
        let Some(problem) = check(&path)? else {
            return Ok((Store::open(dir)?, None));
        };
        let salvage = salvage(dir, &path, problem, now)?;
        Ok((Store::open(dir)?, Some(salvage)))
    }
}

/// Whether a SQLite error means the file is damaged (rather than, say,
/// unreadable to us).
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase))
}

/// `Some(problem)` if the database at `path` is damaged.
fn check(path: &Path) -> Result<Option<String>, StoreError> {
    let failed = |source| StoreError::Check { path: path.to_path_buf(), source };
    let conn = Connection::open(path).map_err(failed)?;
    let rows: rusqlite::Result<Vec<String>> =
        conn.prepare("PRAGMA quick_check(3)").and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect());
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(None),
        Ok(rows) => Ok(Some(rows.join("; "))),
        Err(e) if is_damage(&e) => Ok(Some(e.to_string())),
        Err(e) => Err(failed(e)),
    }
}

fn salvage(dir: &Path, path: &Path, problem: String, now: DateTime<Utc>) -> Result<Salvage, StoreError> {
    let fresh = dir.join(format!("{DB_FILE}.salvage"));
    for f in with_companions(&fresh) {
        remove_if_present(&f)?;
    }
    let failed = |source| StoreError::Check { path: path.to_path_buf(), source };
    let old = Connection::open(path).map_err(failed)?;
    create_private(&fresh)?;
    let mut new = Connection::open(&fresh).map_err(|source| StoreError::Open { path: fresh.clone(), source })?;
    migrations().to_latest(&mut new).map_err(|source| StoreError::Migrate { path: fresh.clone(), source })?;

    let mut report = Salvage {
        path: path.to_path_buf(),
        moved_to: PathBuf::new(),
        problem,
        tables: Vec::new(),
        pending_kept: 0,
        pending_lost: Some(0),
    };
    let tx = new.transaction()?;
    for &(table, _) in TABLES {
        let copied = copy_table(&old, &tx, table)?;
        report.tables.push(TableSalvage { table, kept: copied.kept, lost: copied.lost() });
    }
    // Rows that were being delivered are due again (delivery is at least once).
    tx.execute("UPDATE outbox SET status = 'pending', lease_until_ms = 0 WHERE status = 'sending'", [])?;
    report.pending_kept =
        tx.query_row("SELECT COUNT(*) FROM outbox WHERE status = 'pending'", [], |r| r.get::<_, i64>(0))? as u64;
    tx.commit()?;
    drop(new);
    report.pending_lost = count_via_index(&old, "outbox", "status IN ('pending', 'sending')")
        .map(|before| before.saturating_sub(report.pending_kept));
    drop(old);

    report.moved_to = move_aside(path, now)?;
    std::fs::rename(&fresh, path).map_err(|source| StoreError::File {
        action: "replace",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(report)
}

/// A database file and the companions SQLite keeps beside it.
fn with_companions(path: &Path) -> [PathBuf; 3] {
    let name = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [path.to_path_buf(), name("-wal"), name("-shm")]
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StoreError::File { action: "remove", path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// Renames the database and its companions to `<name>.corrupt-<time>`
/// (with `-2`, `-3`… if that is taken), returning the new name.
fn move_aside(path: &Path, now: DateTime<Utc>) -> Result<PathBuf, StoreError> {
    let stamp = now.format("%Y%m%dT%H%M%SZ");
    let mut n = 1;
    let target = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".corrupt-{stamp}"));
        if n > 1 {
            name.push(format!("-{n}"));
        }
        let target = PathBuf::from(name);
        if std::fs::symlink_metadata(&target).is_err() {
            break target;
        }
        n += 1;
    };
    for (from, to) in with_companions(path).iter().zip(with_companions(&target)) {
        match std::fs::rename(from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(StoreError::File { action: "move aside", path: from.clone(), source: e });
            }
            _ => {}
        }
    }
    Ok(target)
}

/// What a table's walk found.
#[derive(Default)]
struct Copied {
    kept: u64,
    /// Rows read but not kept (they did not decode).
    undecodable: u64,
    /// Damaged stretches skipped.
    skipped: u64,
    /// Rows before, counted through an index, when one survived.
    counted: Option<u64>,
}

impl Copied {
    fn lost(&self) -> Option<u64> {
        if self.skipped == 0 {
            return Some(self.undecodable);
        }
        self.counted.map(|c| c.saturating_sub(self.kept))
    }
}

/// Copies what can be read of `table` from `old` into the same table of
/// `new`, column by column where both have the column.
fn copy_table(old: &Connection, new: &Connection, table: &str) -> Result<Copied, StoreError> {
    let mut copied = Copied { counted: count_via_index(old, table, "1"), ..Copied::default() };
    let new_cols = columns(new, table)?;
    let cols: Vec<String> = match columns(old, table) {
        Ok(old_cols) => new_cols.into_iter().filter(|c| old_cols.contains(c)).collect(),
        // Its schema is unreadable (or the file is no database at all).
        Err(_) => {
            copied.skipped = 1;
            return Ok(copied);
        }
    };
    if cols.is_empty() {
        return Ok(copied);
    }
    let list = cols.join(", ");
    let marks = vec!["?"; cols.len()].join(", ");
    let mut insert = new.prepare(&format!("INSERT OR IGNORE INTO {table} ({list}) VALUES ({marks})"))?;
    let check = |row: &[Value]| decodes(table, &cols, row);
    let read_from = format!("SELECT rowid, {list} FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2");
    let read_one = format!("SELECT rowid, {list} FROM {table} WHERE rowid = ?1");

    let mut last = i64::MIN;
    loop {
        let (rows, failed) = read_rows(old, &read_from, last, BATCH, cols.len());
        let done = rows.len() < BATCH as usize && !failed;
        for (rowid, row) in rows {
            last = rowid;
            if check(&row) {
                insert.execute(params_from_iter(row.iter()))?;
                copied.kept += 1;
            } else {
                copied.undecodable += 1;
            }
        }
        if done {
            break;
        }
        if !failed {
            continue;
        }
        // The next row cannot be read: where is the next readable one?
        copied.skipped += 1;
        match probe(old, table, last.saturating_add(1)) {
            Ok(None) => break,
            Ok(Some(r)) => {
                // Its rowid reads, its columns do not (a damaged overflow
                // page, say): this one row is lost, unless alone it reads.
                let (one, _) = read_rows(old, &read_one, r, 1, cols.len());
                if let Some((_, row)) = one.into_iter().next().filter(|(_, row)| check(row)) {
                    insert.execute(params_from_iter(row.iter()))?;
                    copied.kept += 1;
                }
                last = r;
            }
            Err(()) => match past_damage(old, table, last.saturating_add(1)) {
                Some(next) => last = next - 1,
                None => break,
            },
        }
        if last == i64::MAX {
            break;
        }
    }
    Ok(copied)
}

/// Reads up to `limit` rows after `after` (rowid, then the columns). The
/// flag says a read failed before the end.
fn read_rows(old: &Connection, sql: &str, after: i64, limit: i64, ncols: usize) -> (Vec<(i64, Vec<Value>)>, bool) {
    let mut out = Vec::new();
    let Ok(mut stmt) = old.prepare(sql) else { return (out, true) };
    let params: Vec<i64> = if sql.contains("?2") { vec![after, limit] } else { vec![after] };
    let Ok(mut rows) = stmt.query(params_from_iter(params)) else { return (out, true) };
    loop {
        match rows.next() {
            Ok(Some(r)) => {
                let row = (|| {
                    let rowid: i64 = r.get(0)?;
                    let vals = (1..=ncols).map(|i| r.get::<_, Value>(i)).collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok::<_, rusqlite::Error>((rowid, vals))
                })();
                match row {
                    Ok(row) => out.push(row),
                    Err(_) => return (out, true),
                }
            }
            Ok(None) => return (out, false),
            Err(_) => return (out, true),
        }
    }
}

/// The first rowid at or after `from`: `Ok(None)` at the end of the table,
/// `Err` if the seek runs into damage.
fn probe(old: &Connection, table: &str, from: i64) -> Result<Option<i64>, ()> {
    let sql = format!("SELECT rowid FROM {table} WHERE rowid >= ?1 ORDER BY rowid LIMIT 1");
    let mut stmt = old.prepare_cached(&sql).map_err(|_| ())?;
    let mut rows = stmt.query([from]).map_err(|_| ())?;
    match rows.next() {
        Ok(Some(r)) => r.get(0).map(Some).map_err(|_| ()),
        Ok(None) => Ok(None),
        Err(_) => Err(()),
    }
}

/// The smallest rowid above `bad` (where a seek fails) from which a seek
/// succeeds, or `None` if none does before the end of the rowid space.
/// Gallops up until a seek succeeds, then bisects back to the boundary.
fn past_damage(old: &Connection, table: &str, bad: i64) -> Option<i64> {
    let (mut lo, mut step) = (bad, 1i64);
    let mut hi = loop {
        let x = lo.saturating_add(step);
        match probe(old, table, x) {
            Ok(_) => break x,
            Err(()) if x == i64::MAX => return None,
            Err(()) => {
                lo = x;
                step = step.saturating_mul(2);
            }
        }
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match probe(old, table, mid) {
            Ok(_) => hi = mid,
            Err(()) => lo = mid,
        }
    }
    Some(hi)
}

/// How many rows of `table` match `filter`, counted through one of its
/// indexes (which may have survived damage to the table's own pages).
fn count_via_index(old: &Connection, table: &str, filter: &str) -> Option<u64> {
    let indexes: Vec<String> = old
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?1")
        .and_then(|mut s| s.query_map([table], |r| r.get(0))?.collect())
        .ok()?;
    indexes.iter().find_map(|index| {
        old.query_row(&format!("SELECT COUNT(*) FROM {table} INDEXED BY {index} WHERE {filter}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .ok()
        .map(|n| n as u64)
    })
}

/// A table's columns, in order.
fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let cols: Vec<String> =
        conn.prepare(&format!("PRAGMA table_info({table})"))?.query_map([], |r| r.get(1))?.collect::<Result<_, _>>()?;
    Ok(cols)
}

/// Whether a row read from a damaged file is one the daemon can use.
fn decodes(table: &str, cols: &[String], row: &[Value]) -> bool {
    let text = |name: &str| match cols.iter().position(|c| c == name).map(|i| &row[i]) {
        Some(Value::Text(s)) => Some(s.as_str()),
        _ => None,
    };
    match table {
        "outbox" => text("payload").is_some_and(|p| serde_json::from_str::<Notification>(p).is_ok()),
        "alerts" => text("state").is_some_and(|s| serde_json::from_str::<Kept>(s).is_ok()),
        "silences" => {
            text("body").is_some_and(|s| serde_json::from_str::<alerter_engine::rules::SilenceRecord>(s).is_ok())
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::note;
    use alerter_engine::Turn;
    use std::os::unix::fs::PermissionsExt;

    const PAGE: usize = 4096;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    /// A closed database holding `n` pending notifications and a source's
    /// saved position.
    fn database(dir: &Path, n: usize) {
        let mut s = Store::open(dir).unwrap();
        let turn = Turn {
            notifications: (0..n).map(|i| note(&format!("n{i:05}"), "log", t0())).collect(),
            states: [("syslog".to_string(), r#"{"offset":4096}"#.to_string())].into(),
            ..Turn::default()
        };
        s.commit(&turn, t0()).unwrap();
        // Closing the last connection checkpoints the WAL into the file.
    }

    fn pending(s: &mut Store) -> usize {
        s.claim("log", t0(), t0() + chrono::Duration::minutes(1), 1_000_000).unwrap().len()
    }

    #[test]
    fn a_sound_database_is_opened_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        database(dir.path(), 10);
        let (mut s, salvage) = Store::open_checked(dir.path(), t0()).unwrap();
        assert_eq!(salvage, None);
        assert_eq!(pending(&mut s), 10);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().contains("corrupt")), "{names:?}");
    }

    #[test]
    fn a_garbage_page_in_the_outbox_loses_that_page_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        database(dir.path(), 3000);
        // Overwrite a table leaf page in the middle of the outbox's rows.
        let mut bytes = std::fs::read(&path).unwrap();
        let pages = bytes.len() / PAGE;
        let victim = (1..pages)
            .find(|&p| {
                let page = &bytes[p * PAGE..(p + 1) * PAGE];
                page[0] == 0x0d && page.windows(13).any(|w| w == b"\"title n01500")
            })
            .expect("a leaf page of the outbox");
        bytes[victim * PAGE..(victim + 1) * PAGE].fill(0x5a);
        std::fs::write(&path, &bytes).unwrap();

        let (mut s, salvage) = Store::open_checked(dir.path(), t0()).unwrap();
        let salvage = salvage.expect("the damage is found");
        let kept = salvage.pending_kept as usize;
        assert!((2900..3000).contains(&kept), "one page's rows are lost, no more: kept {kept}");
        assert_eq!(salvage.pending_lost, Some(3000 - kept as u64), "the index counts what was lost");
        assert_eq!(pending(&mut s), kept, "what was kept is due");
        assert_eq!(s.source_states().unwrap()["syslog"], r#"{"offset":4096}"#);
        // Rows on both sides of the damage survived.
        assert!(s.outbox_entry("n00000").unwrap().is_some());
        assert!(s.outbox_entry("n02999").unwrap().is_some());
        assert!(s.outbox_entry("n01500").unwrap().is_none(), "the garbage page held n01500");

        let moved = &salvage.moved_to;
        assert_eq!(moved.file_name().unwrap(), "alerter.db.corrupt-20270115T080000Z");
        assert_eq!(std::fs::read(moved).unwrap(), bytes, "the damaged file is kept as it was");
        let text = salvage.to_string();
        assert!(text.contains("moved aside to") && text.contains(&format!("kept {kept} undelivered")), "{text}");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(s);
        assert_eq!(Store::open_checked(dir.path(), t0()).unwrap().1, None, "the new database is sound");
    }

    #[test]
    fn a_file_that_is_no_database_is_moved_aside_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let junk = "this is not a SQLite database\n".repeat(500);
        std::fs::write(&path, &junk).unwrap();
        let (mut s, salvage) = Store::open_checked(dir.path(), t0()).unwrap();
        let salvage = salvage.expect("the damage is found");
        assert!(salvage.problem.contains("not a database"), "{}", salvage.problem);
        assert_eq!(salvage.pending_kept, 0);
        assert_eq!(salvage.pending_lost, None, "nothing says how much there was");
        assert!(salvage.to_string().contains("an unknown number lost"), "{salvage}");
        assert_eq!(std::fs::read_to_string(&salvage.moved_to).unwrap(), junk);
        // The fresh database works.
        s.commit(&Turn { notifications: vec![note("x", "log", t0())], ..Turn::default() }, t0()).unwrap();
        assert_eq!(pending(&mut s), 1);
    }

    #[test]
    fn a_second_salvage_in_the_same_second_gets_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let mut moved = Vec::new();
        for _ in 0..2 {
            std::fs::write(&path, "junk".repeat(2000)).unwrap();
            moved.push(Store::open_checked(dir.path(), t0()).unwrap().1.unwrap().moved_to);
        }
        assert_ne!(moved[0], moved[1]);
        assert!(moved[1].to_string_lossy().ends_with("-2"), "{moved:?}");
    }

    #[test]
    fn state_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut s = Store::open(&state).unwrap();
        s.commit(&Turn { notifications: vec![note("x", "log", t0())], ..Turn::default() }, t0()).unwrap();
        assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        for name in [DB_FILE, "alerter.db-wal", "alerter.db-shm"] {
            let mode = std::fs::metadata(state.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }
}
