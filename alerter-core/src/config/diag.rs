//! Config diagnostics: what went wrong, where, and how to render it.
//!
//! A [`Diagnostic`] points into a config file either by a YAML path
//! (`rules[2].notify[0].via[1]`), which [`super::source::SourceFile::locate`]
//! turns into line and column when rendering, or by a position known up front
//! (syntax errors). Rendering uses codespan-reporting, without colour when the
//! output is not a terminal, so snapshots are plain text.

use std::ops::Range;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term::{self, Config as TermConfig};

use super::source::SourceMap;

pub use super::path::{Seg, Target, YamlPath};

/// Where a diagnostic points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// Nowhere in particular (e.g. a missing state directory).
    None,
    /// A whole file (it could not be read).
    File(usize),
    /// A 1-based line and column in a file.
    Position { file: usize, line: usize, column: usize },
    /// A node of a file's YAML tree.
    Path { file: usize, path: YamlPath, target: Target },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warning,
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub place: Place,
    /// The headline: what is wrong.
    pub message: String,
    /// Shown under the caret: usually "did you mean" or what was found.
    pub label: Option<String>,
    /// Further lines: what was expected, how to fix it.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(place: Place, message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Error, place, message: message.into(), label: None, notes: Vec::new() }
    }

    pub fn warning(place: Place, message: impl Into<String>) -> Diagnostic {
        Diagnostic { level: Level::Warning, ..Diagnostic::error(place, message) }
    }

    pub fn at(file: usize, path: &YamlPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(Place::Path { file, path: path.clone(), target: Target::Value }, message)
    }

    pub fn at_key(file: usize, path: &YamlPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(Place::Path { file, path: path.clone(), target: Target::Key }, message)
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Adds "did you mean" when one of `candidates` is close to `word`.
    pub fn suggest<'a>(self, word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Diagnostic {
        match did_you_mean(word, candidates) {
            Some(c) => self.with_label(format!("did you mean `{c}`?")),
            None => self,
        }
    }
}

/// The closest candidate to `word`, if any is close enough to be a typo.
///
/// Jaro similarity above 0.7 is clap's rule for "did you mean"; it favours
/// transpositions and dropped letters, the usual typing slips.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::jaro(word, c), c))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Renders diagnostics like rustc does, followed by a count.
pub fn render(diags: &[Diagnostic], sources: &SourceMap, color: bool) -> String {
    render_with(diags, sources, color, "configuration not applied")
}

/// [`render`] with the verdict that follows the error count.
pub fn render_with(diags: &[Diagnostic], sources: &SourceMap, color: bool, verdict: &str) -> String {
    let mut files = SimpleFiles::new();
    let ids: Vec<usize> =
        sources.files().iter().map(|f| files.add(f.display_name().to_string(), f.text().to_string())).collect();
    let mut out = term::termcolor::Buffer::no_color();
    let mut colored = term::termcolor::Buffer::ansi();
    let buffer = if color { &mut colored } else { &mut out };
    let config = TermConfig::default();
    for d in sorted(diags, sources) {
        let mut cs = match d.level {
            Level::Error => CsDiagnostic::error(),
            Level::Warning => CsDiagnostic::warning(),
        };
        let located = locate(d, sources);
        let mut message = d.message.clone();
        match (&located, &d.place) {
            (Some((file, range)), _) => {
                let label = Label::primary(ids[*file], range.clone());
                let label = match &d.label {
                    Some(l) => label.with_message(l.clone()),
                    None => label,
                };
                cs = cs.with_labels(vec![label]);
            }
            (None, Place::File(file)) | (None, Place::Path { file, .. }) => {
                message = format!("{message}\n  --> {}", sources.files()[*file].display_name());
            }
            _ => {}
        }
        let mut notes = d.notes.clone();
        if located.is_none()
            && let Some(l) = &d.label
        {
            notes.insert(0, l.clone());
        }
        cs = cs.with_message(message).with_notes(notes);
        // Writing into an in-memory buffer cannot fail but for a bug in
        // codespan's file lookups; fall back to the bare message then.
        if term::emit_to_write_style(buffer, &config, &files, &cs).is_err() {
            use std::io::Write;
            let _ = writeln!(buffer, "{}: {}", if d.level == Level::Error { "error" } else { "warning" }, d.message);
        }
    }
    let mut text = String::from_utf8_lossy(buffer.as_slice()).into_owned();
    let errors = diags.iter().filter(|d| d.level == Level::Error).count();
    let warnings = diags.len() - errors;
    text.push_str(&summary_line(errors, warnings, verdict));
    text
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

fn summary_line(errors: usize, warnings: usize, verdict: &str) -> String {
    match (errors, warnings) {
        (0, 0) => "configuration is valid\n".to_string(),
        (0, w) => format!("configuration is valid ({})\n", plural(w, "warning")),
        (e, 0) => format!("{}; {verdict}\n", plural(e, "error")),
        (e, w) => format!("{}, {}; {verdict}\n", plural(e, "error"), plural(w, "warning")),
    }
}

/// Errors before warnings, each in file and position order, so a report
/// reads top to bottom like the files.
fn sorted<'a>(diags: &'a [Diagnostic], sources: &SourceMap) -> Vec<&'a Diagnostic> {
    let mut keyed: Vec<(Level, usize, usize, usize, &Diagnostic)> = diags
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (file, pos) = match locate(d, sources) {
                Some((f, r)) => (f, r.start),
                None => match &d.place {
                    Place::File(f) | Place::Path { file: f, .. } | Place::Position { file: f, .. } => (*f, 0),
                    Place::None => (0, 0),
                },
            };
            (d.level, file, pos, i, d)
        })
        .collect();
    keyed.sort_by_key(|(level, file, pos, i, _)| (*level, *file, *pos, *i));
    keyed.into_iter().map(|(.., d)| d).collect()
}

/// Resolves a diagnostic's place to a file and a byte range in it.
fn locate(d: &Diagnostic, sources: &SourceMap) -> Option<(usize, Range<usize>)> {
    match &d.place {
        Place::None | Place::File(_) => None,
        Place::Position { file, line, column } => {
            let f = sources.files().get(*file)?;
            let start = f.offset_of(*line, *column)?;
            Some((*file, start..f.token_end(start)))
        }
        Place::Path { file, path, target } => {
            let f = sources.files().get(*file)?;
            let (line, column) = f.locate(path, *target)?;
            let start = f.offset_of(line, column)?;
            Some((*file, start..f.token_end(start)))
        }
    }
}

/// `file:line:column` of a diagnostic, for one-line log messages.
pub fn short_location(d: &Diagnostic, sources: &SourceMap) -> String {
    match locate(d, sources) {
        Some((file, range)) => {
            let f = &sources.files()[file];
            let (line, col) = f.line_col(range.start);
            format!("{}:{line}:{col}", f.display_name())
        }
        None => match &d.place {
            Place::File(file) | Place::Path { file, .. } => sources.files()[*file].display_name().to_string(),
            _ => "configuration".to_string(),
        },
    }
}

/// One line per diagnostic, `file:line:col: error: message (label)`, for logs.
pub fn render_short(diags: &[Diagnostic], sources: &SourceMap) -> Vec<String> {
    sorted(diags, sources)
        .into_iter()
        .map(|d| {
            let level = if d.level == Level::Error { "error" } else { "warning" };
            let label = d.label.as_ref().map(|l| format!(" ({l})")).unwrap_or_default();
            format!("{}: {level}: {}{label}", short_location(d, sources), d.message)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_typos_only() {
        let keys = ["recipients", "repeat_interval", "rules"];
        assert_eq!(did_you_mean("recipeints", keys), Some("recipients"));
        assert_eq!(did_you_mean("repeat_intervall", keys), Some("repeat_interval"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn paths_display_like_admins_read_them() {
        let p = YamlPath::root().key("rules").index(2).key("notify").index(0).key("via");
        assert_eq!(p.to_string(), "rules[2].notify[0].via");
        assert_eq!(YamlPath::root().to_string(), "(top level)");
    }

    #[test]
    fn summary_counts() {
        assert_eq!(summary_line(2, 1, "configuration not applied"), "2 errors, 1 warning; configuration not applied\n");
        assert_eq!(summary_line(0, 0, "x"), "configuration is valid\n");
    }
}
