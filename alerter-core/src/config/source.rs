//! Config file text: reading, YAML parsing, and finding nodes by path.
//!
//! Positions come from serde_norway itself, so there is one YAML parser with
//! one set of rules. serde_norway reports a position only with an error, so
//! [`SourceFile::locate`] walks the document with a seed that fails on
//! purpose at the node it is looking for and reads the error's position.
//! Config files are small and this runs only for diagnostics, so the extra
//! parse per problem costs nothing that matters.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::path::{Seg, Target, YamlPath};

/// One config file's text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: String,
    path: Option<PathBuf>,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, path: Option<PathBuf>, text: String) -> SourceFile {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        SourceFile { name: name.into(), path, text, line_starts }
    }

    /// The name shown in diagnostics: the path as given, or `<embedded default>`.
    pub fn display_name(&self) -> &str {
        &self.name
    }

    /// The file on disk, if it came from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Byte offset of a 1-based line and (character) column.
    pub fn offset_of(&self, line: usize, column: usize) -> Option<usize> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let rest = &self.text[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        let col = column.saturating_sub(1);
        let within = line_text.char_indices().nth(col).map(|(i, _)| i).unwrap_or(line_text.len());
        Some(start + within)
    }

    /// 1-based line and character column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self.text[start..offset.min(self.text.len())].chars().count() + 1;
        (line, col)
    }

    /// The end of the YAML token starting at `start`, for underlining it: a
    /// quoted string to its closing quote, a flow collection to its closing
    /// bracket, a plain scalar or key to the end of the word.
    pub fn token_end(&self, start: usize) -> usize {
        let rest = &self.text[start..];
        let line = rest.split('\n').next().unwrap_or("");
        let mut chars = line.char_indices();
        let end = match chars.next() {
            None => 0,
            Some((_, q @ ('"' | '\''))) => {
                let mut escaped = false;
                let mut end = line.len();
                for (i, c) in chars {
                    if q == '"' && c == '\\' && !escaped {
                        escaped = true;
                        continue;
                    }
                    if c == q && !escaped {
                        end = i + 1;
                        break;
                    }
                    escaped = false;
                }
                end
            }
            Some((_, open @ ('[' | '{'))) => {
                let close = if open == '[' { ']' } else { '}' };
                let mut depth = 0usize;
                let mut end = line.len();
                for (i, c) in line.char_indices() {
                    if c == open {
                        depth += 1;
                    } else if c == close {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                }
                end
            }
            Some(_) => {
                let bytes = line.as_bytes();
                let mut end = line.len();
                for (i, c) in line.char_indices() {
                    let next_blank = bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t');
                    let prev_blank = i > 0 && (bytes[i - 1] == b' ' || bytes[i - 1] == b'\t');
                    if (c == ':' && next_blank) || c == ',' || c == ']' || c == '}' || (c == '#' && prev_blank) {
                        end = i;
                        break;
                    }
                }
                line[..end].trim_end().len()
            }
        };
        start + end.max(1).min(line.len().max(1))
    }

    /// Parses the file as one YAML document. Errors carry 1-based positions.
    pub fn parse(&self) -> Result<serde_norway::Value, (String, Option<(usize, usize)>)> {
        serde_norway::from_str::<serde_norway::Value>(&self.text).map_err(|e| {
            let pos = e.location().map(|l| (l.line(), l.column()));
            (strip_position(&e.to_string()), pos)
        })
    }

    /// The 1-based line and column of the node at `path` (its key when
    /// `target` is [`Target::Key`] and the last step is a key).
    pub fn locate(&self, path: &YamlPath, target: Target) -> Option<(usize, usize)> {
        let de = serde_norway::Deserializer::from_str(&self.text);
        let seed = Locator { path: &path.0, target };
        match seed.deserialize(de) {
            Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
            _ => None,
        }
    }
}

/// serde_norway appends " at line L column C" to messages; diagnostics show
/// the position themselves.
fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// All files of one configuration: the main file first, then includes.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn add(&mut self, file: SourceFile) -> usize {
        self.files.push(file);
        self.files.len() - 1
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }
}

const FOUND: &str = "\u{1}alerter-locate-found";

struct Locator<'p> {
    path: &'p [Seg],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Locator<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => d.deserialize_any(Fail),
            Some((Seg::Key(k), rest)) => d.deserialize_map(MapWalk { key: k, rest, target: self.target }),
            Some((Seg::Index(i), rest)) => d.deserialize_seq(SeqWalk { index: *i, rest, target: self.target }),
        }
    }
}

/// Fails on whatever node it is given, so the error carries that node's mark.
struct Fail;

impl<'de> Visitor<'de> for Fail {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("anything")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_some<D: de::Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

struct MapWalk<'p> {
    key: &'p str,
    rest: &'p [Seg],
    target: Target,
}

impl<'de> Visitor<'de> for MapWalk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fail_on_key = self.rest.is_empty() && self.target == Target::Key;
        while let Some(found) = map.next_key_seed(KeySeed { want: self.key, fail: fail_on_key })? {
            if found {
                return map.next_value_seed(Locator { path: self.rest, target: self.target });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

struct SeqWalk<'p> {
    index: usize,
    rest: &'p [Seg],
    target: Target,
}

impl<'de> Visitor<'de> for SeqWalk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            if i == self.index {
                seq.next_element_seed(Locator { path: self.rest, target: self.target })?;
                return Ok(());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
}

/// Reads a mapping key, says whether it is the wanted one, and fails on it
/// when the key itself is what is being located.
struct KeySeed<'p> {
    want: &'p str,
    fail: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        if key == self.want { if self.fail { Err(E::custom(FOUND)) } else { Ok(true) } } else { Ok(false) }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.check("null")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
alerter:
  name: HOST
rules:
  - name: first
    notify:
      - via: [log, popup]
  - name: \"second\"
    for: 5m
";

    fn file() -> SourceFile {
        SourceFile::new("t.yaml", None, DOC.to_string())
    }

    #[test]
    fn locates_keys_and_values() {
        let f = file();
        let rules = YamlPath::root().key("rules");
        assert_eq!(f.locate(&YamlPath::root().key("alerter").key("name"), Target::Key), Some((2, 3)));
        assert_eq!(f.locate(&YamlPath::root().key("alerter").key("name"), Target::Value), Some((2, 9)));
        assert_eq!(f.locate(&rules.index(1).key("for"), Target::Key), Some((8, 5)));
        assert_eq!(f.locate(&rules.index(1).key("name"), Target::Value), Some((7, 11)));
        let via1 = rules.index(0).key("notify").index(0).key("via").index(1);
        assert_eq!(f.locate(&via1, Target::Value), Some((6, 20)));
        assert_eq!(f.locate(&rules.index(7), Target::Value), None);
        assert_eq!(f.locate(&YamlPath::root().key("nope"), Target::Key), None);
    }

    #[test]
    fn token_ends() {
        let f = file();
        let start = f.offset_of(7, 11).unwrap();
        assert_eq!(&f.text()[start..f.token_end(start)], "\"second\"");
        let start = f.offset_of(6, 14).unwrap();
        assert_eq!(&f.text()[start..f.token_end(start)], "[log, popup]");
        let start = f.offset_of(8, 5).unwrap();
        assert_eq!(&f.text()[start..f.token_end(start)], "for");
        assert_eq!(f.line_col(start), (8, 5));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let f = SourceFile::new("bad.yaml", None, "rules:\n  - name: [unclosed\n".into());
        let (msg, pos) = f.parse().unwrap_err();
        assert!(pos.is_some(), "{msg}");
        assert!(!msg.contains(" at line "));
    }
}
