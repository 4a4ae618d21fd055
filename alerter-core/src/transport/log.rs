//! The `log` transport: each notification as one JSON line, appended to a
//! file or written to standard output.
//!
//! Lines are written whole with a single `write` on a file opened with
//! `O_APPEND`, so readers (`tail -f`, `jq`) never see half a line and several
//! writers never interleave within one.
//!
//! Delivery from the outbox is at least once: a crash between writing a
//! line and recording it as sent would write it again after the restart.
//! So on opening, the transport reads the ids in the file's last lines, and
//! a notification already there is not written twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{BoxFuture, Delivered, Transport, TransportError};
use crate::notify::Notification;

/// A local file either works or needs an admin: retry a little.
pub const RETRY: super::RetryPolicy = super::RetryPolicy {
    initial: std::time::Duration::from_secs(1),
    max: std::time::Duration::from_secs(60),
    max_age: std::time::Duration::from_secs(3600),
    concurrency: 1,
    poll: super::POLL,
};

#[derive(Debug)]
enum Sink {
    Stdout,
    File { path: PathBuf, file: Mutex<std::fs::File> },
}

/// See the module docs.
#[derive(Debug)]
pub struct LogTransport {
    sink: Sink,
    /// Ids of the notifications in the file's tail when it was opened.
    already: std::collections::HashSet<String>,
}

/// How much of an existing file's end is read for ids: far more than the
/// few notifications that can be in flight when a crash happens.
const TAIL: u64 = 256 * 1024;

fn ids_in_tail(path: &Path) -> std::collections::HashSet<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut out = std::collections::HashSet::new();
    let Ok(mut f) = std::fs::File::open(path) else { return out };
    // Only a regular file has a tail: /dev/full or a FIFO would read forever.
    let Ok(meta) = f.metadata() else { return out };
    if !meta.is_file() || f.seek(SeekFrom::Start(meta.len().saturating_sub(TAIL))).is_err() {
        return out;
    }
    let mut tail = Vec::new();
    if f.take(TAIL).read_to_end(&mut tail).is_err() {
        return out;
    }
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    // The first line may be cut by the seek; it simply does not parse.
    for line in tail.split(|b| *b == b'\n') {
        if let Ok(Id { id }) = serde_json::from_slice::<Id>(line) {
            out.insert(id);
        }
    }
    out
}

impl LogTransport {
    /// `-` means standard output. The file is created if missing.
    pub fn open(path: &Path) -> Result<LogTransport, TransportError> {
        if path == Path::new("-") {
            return Ok(LogTransport { sink: Sink::Stdout, already: Default::default() });
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                TransportError::permanent(format!(
                    "cannot create directory {} for the log transport: {e}",
                    parent.display()
                ))
            })?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
            TransportError::permanent(format!("cannot open {} for the log transport: {e}", path.display()))
        })?;
        let already = ids_in_tail(path);
        Ok(LogTransport { sink: Sink::File { path: path.to_path_buf(), file: Mutex::new(file) }, already })
    }

    fn write_line(&self, line: &[u8]) -> Result<(), TransportError> {
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line).and_then(|_| out.flush())
            }
            Sink::File { file, .. } => {
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(line)
            }
        }
        .map_err(|e| {
            let target = match &self.sink {
                Sink::Stdout => "standard output".to_string(),
                Sink::File { path, .. } => path.display().to_string(),
            };
            // A full disk may clear up; anything else about a local file will not.
            let message = format!("cannot write to {target}: {e}");
            if e.raw_os_error() == Some(28) {
                TransportError::transient(message)
            } else {
                TransportError::permanent(message)
            }
        })
    }
}

impl Transport for LogTransport {
    fn kind(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<Delivered, TransportError>> {
        Box::pin(async move {
            if self.already.contains(&n.id) {
                return Ok(Delivered { reply: Some("already in the file (written before a restart)".into()) });
            }
            let mut line = serde_json::to_vec(n).map_err(|e| TransportError::permanent(e.to_string()))?;
            line.push(b'\n');
            // A local write of one line is quick; doing it inline keeps lines
            // in the order the router produced them.
            self.write_line(&line)?;
            Ok(Delivered::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use std::collections::BTreeMap;

    fn notification(id: &str) -> Notification {
        Notification {
            id: id.into(),
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            rule: "r".into(),
            transport: "log".into(),
            status: "firing".into(),
            severity: Severity::Warning,
            title: "t".into(),
            text: "x".into(),
            html: None,
            recipients: vec![],
            alerts: vec![],
            group: BTreeMap::new(),
            repeat: false,
            offline: None,
        }
    }

    #[tokio::test]
    async fn appends_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/notifications.jsonl");
        let t = LogTransport::open(&path).unwrap();
        t.send(&notification("a")).await.unwrap();
        t.send(&notification("b")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<String> = text.lines().map(|l| serde_json::from_str::<Notification>(l).unwrap().id).collect();
        assert_eq!(ids, vec!["a", "b"]);
    }

    #[tokio::test]
    async fn a_redelivery_after_a_restart_is_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.jsonl");
        let t = LogTransport::open(&path).unwrap();
        t.send(&notification("a")).await.unwrap();
        drop(t);
        // Reopened (a restart) and handed "a" again, as the outbox does when
        // a crash came before the outcome was recorded.
        let t = LogTransport::open(&path).unwrap();
        let d = t.send(&notification("a")).await.unwrap();
        assert!(d.reply.unwrap().contains("already"));
        t.send(&notification("b")).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn unopenable_path_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let err = LogTransport::open(&blocker.join("x.jsonl")).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("cannot create directory"), "{err}");
    }
}
