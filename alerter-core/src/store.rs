//! The state store: one SQLite database under the state directory.
//!
//! It keeps what must survive a restart: alert state (so a restart neither
//! re-sends everything nor forgets a firing alert), when each notice last
//! fired, and the audit trail of notifications (sent, failed, suppressed and
//! why). The schema is versioned with SQLite's `user_version` and migrated
//! forward on open; a database from a newer alerter is refused rather than
//! damaged.
//!
//! Calls are synchronous and short (one transaction per batch). WAL mode
//! with `synchronous=NORMAL` makes a committed batch durable across a crash
//! of the process; only a power loss can take the last few back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

use crate::event::Fingerprint;
use crate::rules::router::{Alert, AlertChange};

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
}

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
];

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

/// One audit trail entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub time: DateTime<Utc>,
    pub rule: String,
    pub fingerprint: Option<Fingerprint>,
    pub transport: Option<String>,
    pub notification: Option<String>,
    /// `sent`, `failed`, `suppressed`.
    pub status: String,
    pub reason: Option<String>,
    pub summary: Option<String>,
}

/// The open database.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `dir`, migrating it forward.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let mut conn = Connection::open(&path).map_err(|source| StoreError::Open { path: path.clone(), source })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let known = MIGRATIONS.len();
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > known as i64 {
            return Err(StoreError::TooNew { path, found, known });
        }
        migrations().to_latest(&mut conn).map_err(|source| StoreError::Migrate { path: path.clone(), source })?;
        Ok(Store { conn, path })
    }

    /// An in-memory store, for tests and `alerter test`.
    pub fn in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migrate { path: PathBuf::from(":memory:"), source })?;
        Ok(Store { conn, path: PathBuf::from(":memory:") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// Applies the router's changes in one transaction.
    pub fn apply_alert_changes(&mut self, changes: &[AlertChange], now: DateTime<Utc>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO alerts (rule, fingerprint, state, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (rule, fingerprint) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM alerts WHERE rule = ?1 AND fingerprint = ?2")?;
            let now = now.to_rfc3339();
            for c in changes {
                let fp = c.fingerprint.to_string();
                match &c.alert {
                    Some(a) => {
                        upsert.execute(params![c.rule, fp, serde_json::to_string(a)?, now])?;
                    }
                    None => {
                        delete.execute(params![c.rule, fp])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every stored alert, with its rule name.
    pub fn load_alerts(&self) -> Result<Vec<(String, Alert)>, StoreError> {
        let mut stmt = self.conn.prepare("SELECT rule, state FROM alerts ORDER BY rule, fingerprint")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (rule, state) = row?;
            out.push((rule, serde_json::from_str(&state)?));
        }
        Ok(out)
    }

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
        let tx = self.conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO notices (name, offset_secs, last_fired) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name, offset_secs) DO UPDATE SET last_fired = excluded.last_fired",
            )?;
            for ((name, off), t) in history {
                stmt.execute(params![name, *off as i64, t.to_rfc3339()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub fn audit(&mut self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
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
        }
        tx.commit()?;
        Ok(())
    }

    /// The newest audit records first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT time, rule, fingerprint, transport, notification, status, reason, summary
             FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (time, rule, fp, transport, notification, status, reason, summary) = row?;
            out.push(AuditRecord {
                time: DateTime::parse_from_rfc3339(&time).map(|t| t.with_timezone(&Utc)).unwrap_or_default(),
                rule,
                fingerprint: fp.and_then(|f| Fingerprint::try_from(f).ok()),
                transport,
                notification,
                status,
                reason,
                summary,
            });
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Severity};
    use crate::rules::router::AlertStatus;

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
            let change = AlertChange { rule: "r".into(), fingerprint: a.fingerprint, alert: Some(a.clone()) };
            s.apply_alert_changes(&[change], t).unwrap();
        }
        let mut s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), 1);
        assert_eq!(s.load_alerts().unwrap(), vec![("r".to_string(), a.clone())]);
        let gone = AlertChange { rule: "r".into(), fingerprint: a.fingerprint, alert: None };
        s.apply_alert_changes(&[gone], t).unwrap();
        assert!(!s.has_alert("r", a.fingerprint).unwrap());
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
}
