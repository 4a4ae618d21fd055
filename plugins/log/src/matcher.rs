//! Matching many patterns against many lines in one pass.
//!
//! The patterns are compiled into one multi-pattern regex (regex-automata's
//! meta engine: literal prefilters, then a lazy DFA), which searches a
//! whole buffer of lines at once, the way grep does, instead of being run
//! line by line. Only lines with a match are looked at again, alone: to find
//! the first pattern (in the configured order) that matches the line, its
//! named captures, and whether an `ignore` pattern drops it.
//!
//! Patterns match within a line. A buffer-wide match that runs past the end
//! of its line (a pattern like `a\s+b` can cross a newline) is checked again
//! on the line alone, and the search goes on from the next line, so no match
//! is ever reported across lines and none within a line is missed.

use regex_automata::meta::Regex as Meta;
use regex_automata::util::syntax;
use regex_automata::{Input, MatchKind, PatternSet};

/// A compiled set of patterns and ignore patterns.
#[derive(Debug)]
pub struct Matcher {
    /// All patterns at once, leftmost-first: finds candidate lines.
    search: Meta,
    /// All patterns at once, every match: which patterns match a line.
    which: Meta,
    /// Each pattern alone, for its captures.
    each: Vec<regex::bytes::Regex>,
    ignore: Option<Meta>,
}

/// A matched line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// Byte range of the line in the buffer, without its line terminator.
    pub start: usize,
    pub end: usize,
    /// Index of the first pattern (in configured order) that matches.
    pub pattern: usize,
}

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Index in the list it came from.
    pub index: usize,
    pub message: String,
}

fn syntax_config() -> syntax::Config {
    // `^` and `$` at line boundaries (CRLF too); classes like `\S`, `\w`
    // and `.` work on bytes, as grep's do with LC_ALL=C: a line with
    // invalid UTF-8 still matches, and scanning is fastest. A pattern that
    // needs Unicode classes says `(?u)`. Literal non-ASCII text matches as
    // its UTF-8 bytes either way.
    syntax::Config::new().multi_line(true).utf8(false).unicode(false).crlf(true)
}

fn build(patterns: &[&str], kind: MatchKind) -> Result<Meta, String> {
    Meta::builder()
        .syntax(syntax_config())
        .configure(Meta::config().match_kind(kind).utf8_empty(false))
        .build_many(patterns)
        .map_err(|e| e.to_string())
}

fn single(p: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(p).multi_line(true).crlf(true).unicode(false).build()
}

/// Checks each pattern alone, so an error names the one at fault (with
/// the regex crate's explanation of what is wrong where).
pub fn check(patterns: &[&str]) -> Vec<PatternError> {
    patterns
        .iter()
        .enumerate()
        .filter_map(|(index, p)| {
            if p.is_empty() {
                return Some(PatternError { index, message: "an empty pattern matches every line".into() });
            }
            single(p).err().map(|e| PatternError { index, message: one_line(&e) })
        })
        .collect()
}

/// The regex crate explains a syntax error over several lines (the
/// pattern, a caret, the reason); config errors are one line each.
fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let reason = lines.last().map(|l| l.trim().trim_start_matches("error: ")).unwrap_or_default();
    match lines.iter().find(|l| l.trim() == "^" || l.trim_start().starts_with('^')) {
        Some(caret) => {
            let col = caret.find('^').unwrap_or(0).saturating_sub(4) + 1;
            format!("{reason} (at character {col} of the pattern)")
        }
        None => reason.to_string(),
    }
}

impl Matcher {
    pub fn new(patterns: &[&str], ignore: &[&str]) -> Result<Matcher, Vec<PatternError>> {
        let mut errors = check(patterns);
        if patterns.is_empty() {
            errors.push(PatternError { index: 0, message: "at least one pattern is needed".into() });
        }
        let ignore_errors = check(ignore);
        if !errors.is_empty() || !ignore_errors.is_empty() {
            // Ignore patterns' indexes are offset past the patterns, so the
            // caller can tell them apart.
            errors.extend(ignore_errors.into_iter().map(|e| PatternError { index: patterns.len() + e.index, ..e }));
            return Err(errors);
        }
        let one = |r: Result<Meta, String>| r.map_err(|message| vec![PatternError { index: 0, message }]);
        let each = patterns
            .iter()
            .enumerate()
            .map(|(index, p)| single(p).map_err(|e| vec![PatternError { index, message: e.to_string() }]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Matcher {
            search: one(build(patterns, MatchKind::LeftmostFirst))?,
            which: one(build(patterns, MatchKind::All))?,
            each,
            ignore: if ignore.is_empty() { None } else { Some(one(build(ignore, MatchKind::LeftmostFirst))?) },
        })
    }

    pub fn patterns(&self) -> usize {
        self.each.len()
    }

    /// The first pattern (in order) that matches `line`, if any and if no
    /// ignore pattern matches it.
    pub fn line(&self, line: &[u8]) -> Option<usize> {
        let input = Input::new(line);
        let pattern = if self.each.len() == 1 {
            self.search.is_match(input.clone()).then_some(0)?
        } else {
            let mut set = PatternSet::new(self.which.pattern_len());
            self.which.which_overlapping_matches(&input, &mut set);
            set.iter().next()?.as_usize()
        };
        if self.ignore.as_ref().is_some_and(|i| i.is_match(line)) {
            return None;
        }
        Some(pattern)
    }

    /// Calls `hit` for each matching line of `buf`, which holds whole lines
    /// (the last one may lack its `\n`). Returns the number of hits.
    pub fn scan(&self, buf: &[u8], mut hit: impl FnMut(Hit)) -> usize {
        let mut count = 0;
        let mut at = 0;
        while at < buf.len() {
            let Some(m) = self.search.search(&Input::new(buf).range(at..)) else { break };
            let start = memchr::memrchr(b'\n', &buf[..m.start()]).map_or(0, |i| i + 1);
            let nl = memchr::memchr(b'\n', &buf[m.start()..]).map(|i| m.start() + i);
            let end_with_nl = nl.map_or(buf.len(), |i| i + 1);
            let mut end = nl.unwrap_or(buf.len());
            if end > start && buf[end - 1] == b'\r' {
                end -= 1;
            }
            let line = &buf[start..end];
            // The common case: one pattern, a match inside its line, no
            // ignore list: no second look needed.
            let pattern =
                if self.each.len() == 1 && m.end() <= end && self.ignore.is_none() { Some(0) } else { self.line(line) };
            if let Some(pattern) = pattern {
                count += 1;
                hit(Hit { start, end, pattern });
            }
            at = end_with_nl;
        }
        count
    }

    /// Named captures of pattern `pattern` in `line`, lossily decoded.
    pub fn captures(&self, pattern: usize, line: &[u8]) -> Vec<(String, String)> {
        let re = &self.each[pattern];
        let Some(caps) = re.captures(line) else { return Vec::new() };
        re.capture_names()
            .flatten()
            .filter_map(|name| {
                caps.name(name).map(|m| (name.to_string(), String::from_utf8_lossy(m.as_bytes()).into_owned()))
            })
            .collect()
    }
}

/// Scans everything `r` yields, in large chunks, calling `hit` with each
/// matching line and its pattern. Returns the bytes read. For whole files
/// (`alerter scan`, the benchmark); following a growing file is `follow`'s.
pub fn scan_reader(m: &Matcher, mut r: impl std::io::Read, mut hit: impl FnMut(&[u8], usize)) -> std::io::Result<u64> {
    const CHUNK: usize = 4 << 20;
    let mut buf = vec![0u8; CHUNK];
    let mut filled = 0;
    let mut total = 0u64;
    loop {
        if filled == buf.len() {
            // One line longer than the buffer: make room.
            buf.resize(buf.len() * 2, 0);
        }
        let n = match r.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        filled += n;
        let whole = if n == 0 {
            filled
        } else {
            match memchr::memrchr(b'\n', &buf[..filled]) {
                Some(i) => i + 1,
                None => continue,
            }
        };
        let chunk = &buf[..whole];
        m.scan(chunk, |h| hit(&chunk[h.start..h.end], h.pattern));
        buf.copy_within(whole..filled, 0);
        filled -= whole;
        if n == 0 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(m: &Matcher, text: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        m.scan(text.as_bytes(), |h| out.push((text[h.start..h.end].to_string(), h.pattern)));
        out
    }

    #[test]
    fn one_pattern_counts_lines_not_matches() {
        let m = Matcher::new(&["error"], &[]).unwrap();
        let text = "ok\nerror error error\nfine\nan error\nerror";
        assert_eq!(hits(&m, text), vec![("error error error".into(), 0), ("an error".into(), 0), ("error".into(), 0)]);
    }

    #[test]
    fn first_pattern_in_order_wins_and_ignore_drops() {
        let m = Matcher::new(&["disk", "fail"], &["CRON"]).unwrap();
        let text = "a fail on disk\nCRON disk\ndisk\nfail\nnone\n";
        assert_eq!(hits(&m, text), vec![("a fail on disk".into(), 0), ("disk".into(), 0), ("fail".into(), 1)]);
    }

    #[test]
    fn matches_never_cross_lines() {
        // `\s+` could match the newline; `.*` cannot, `$` is the line end.
        let m = Matcher::new(&[r"a\s+b", r"^x$"], &[]).unwrap();
        let text = "a\nb\na  b\nxx\nx\r\nend";
        assert_eq!(hits(&m, text), vec![("a  b".into(), 0), ("x".into(), 1)]);
        // A cross-line candidate hides no match on the next line.
        let m = Matcher::new(&[r"q[^z]*w"], &[]).unwrap();
        assert_eq!(hits(&m, "q\nq w\n"), vec![("q w".into(), 0)]);
    }

    #[test]
    fn captures_by_name_and_bad_bytes() {
        let m = Matcher::new(&[r"Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)"], &[]).unwrap();
        let line = b"sshd[1]: Failed password for r\xffoot from 10.0.0.1 port 22";
        let mut found = Vec::new();
        m.scan(line, |h| found.push(h));
        assert_eq!(found.len(), 1, "invalid UTF-8 does not stop a match");
        let caps = m.captures(0, line);
        assert_eq!(caps, vec![("user".into(), "r\u{fffd}oot".into()), ("ip".into(), "10.0.0.1".into())]);
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = Matcher::new(&["ok", "(unclosed", ""], &["[z-a]"]).unwrap_err();
        let idx: Vec<usize> = err.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![1, 2, 3]);
        assert_eq!(err[0].message, "unclosed group (at character 1 of the pattern)");
        assert!(Matcher::new(&[], &[]).is_err());
    }

    /// The one-pass scan agrees with matching every line alone, on random
    /// text and patterns that may cross lines.
    #[test]
    fn scan_agrees_with_line_by_line() {
        let patterns = [r"a\s*b", "b.c", "^c", r"a$", r"[ab]\n?c"];
        let m = Matcher::new(&patterns, &["^bb"]).unwrap();
        let each: Vec<regex::bytes::Regex> =
            patterns.iter().map(|p| regex::bytes::Regex::new(&format!("(?m){p}")).unwrap()).collect();
        let ignore = regex::bytes::Regex::new("(?m)^bb").unwrap();
        let mut seed = 7u64;
        for _ in 0..500 {
            let mut text = Vec::new();
            for _ in 0..40 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push(b"abc \n"[(seed >> 33) as usize % 5]);
            }
            let mut got = Vec::new();
            m.scan(&text, |h| got.push((h.start, h.pattern)));
            let mut want = Vec::new();
            let mut start = 0;
            for line in text.split(|b| *b == b'\n') {
                if !ignore.is_match(line)
                    && let Some(p) = each.iter().position(|r| r.is_match(line))
                {
                    want.push((start, p));
                }
                start += line.len() + 1;
            }
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&text));
        }
    }
}
