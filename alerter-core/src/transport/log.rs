//! The `log` transport: each notification as one JSON line, appended to a
//! file or written to standard output.
//!
//! Lines are written whole with a single `write` on a file opened with
//! `O_APPEND`, so readers (`tail -f`, `jq`) never see half a line and several
//! writers never interleave within one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{BoxFuture, Delivered, Transport, TransportError};
use crate::notify::Notification;

#[derive(Debug)]
enum Sink {
    Stdout,
    File { path: PathBuf, file: Mutex<std::fs::File> },
}

/// See the module docs.
#[derive(Debug)]
pub struct LogTransport {
    sink: Sink,
}

impl LogTransport {
    /// `-` means standard output. The file is created if missing.
    pub fn open(path: &Path) -> Result<LogTransport, TransportError> {
        if path == Path::new("-") {
            return Ok(LogTransport { sink: Sink::Stdout });
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
        Ok(LogTransport { sink: Sink::File { path: path.to_path_buf(), file: Mutex::new(file) } })
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
