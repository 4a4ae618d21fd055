//! Compiled rules, matchers, recipients and silences: what the router runs.
//!
//! These are built from the config by [`crate::config`] after validation, so
//! every regex is compiled, every reference resolved and every duration
//! parsed; nothing here can fail at run time.

pub mod matchers;
pub mod router;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Severity};
use crate::schedule::Schedule;

/// Which events a rule or silence applies to. Conditions are ordered cheap
/// first (severity, source, exact labels, regexes) because most events fail
/// most rules and the router's throughput is decided by how fast they fail.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub min_severity: Option<Severity>,
    /// Empty: any source.
    pub sources: Vec<SourcePattern>,
    /// Exact conditions first, regexes last.
    pub labels: Vec<(LabelKey, LabelCond)>,
}

/// A label name, with the pseudo-labels resolved once at compile time
/// instead of by string comparison for every event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelKey {
    Source,
    Host,
    Severity,
    /// The rule an alert belongs to: only silences match on it (`rule=` or
    /// `alertname=` in a matcher), as an event has no rule of its own.
    Rule,
    Label(String),
}

impl LabelKey {
    pub fn new(name: &str) -> LabelKey {
        match name {
            "source" => LabelKey::Source,
            "host" => LabelKey::Host,
            "severity" => LabelKey::Severity,
            other => LabelKey::Label(other.to_string()),
        }
    }

    #[inline]
    fn get<'e>(&self, e: &'e Event, rule: Option<&'e str>) -> Option<&'e str> {
        match self {
            LabelKey::Source => Some(&e.source),
            LabelKey::Host => Some(&e.host),
            LabelKey::Severity => Some(e.severity.as_str()),
            LabelKey::Rule => rule,
            LabelKey::Label(name) => e.labels.get(name).map(String::as_str),
        }
    }
}

#[derive(Debug, Clone)]
pub enum SourcePattern {
    Exact(String),
    /// `disk*`: the common glob, checked without the glob machinery.
    Prefix(String),
    Glob(globset::GlobMatcher),
}

impl SourcePattern {
    pub fn new(pattern: &str) -> Result<SourcePattern, String> {
        let special = |c: char| matches!(c, '*' | '?' | '[' | '{' | '\\');
        if !pattern.contains(special) {
            return Ok(SourcePattern::Exact(pattern.to_string()));
        }
        if let Some(prefix) = pattern.strip_suffix('*')
            && !prefix.contains(special)
        {
            return Ok(SourcePattern::Prefix(prefix.to_string()));
        }
        globset::Glob::new(pattern)
            .map(|g| SourcePattern::Glob(g.compile_matcher()))
            .map_err(|e| format!("`{pattern}` is not a valid glob: {e}"))
    }

    pub fn matches(&self, source: &str) -> bool {
        match self {
            SourcePattern::Exact(s) => s == source,
            SourcePattern::Prefix(p) => source.starts_with(p.as_str()),
            SourcePattern::Glob(g) => g.is_match(source),
        }
    }
}

#[derive(Debug, Clone)]
pub enum LabelCond {
    Equals(String),
    Regex(regex::Regex),
    Not(String),
    NotRegex(regex::Regex),
}

impl LabelCond {
    fn cost(&self) -> u8 {
        match self {
            LabelCond::Equals(_) | LabelCond::Not(_) => 0,
            LabelCond::Regex(_) | LabelCond::NotRegex(_) => 1,
        }
    }

    fn matches(&self, value: Option<&str>) -> bool {
        match self {
            LabelCond::Equals(want) => value == Some(want.as_str()),
            LabelCond::Regex(re) => value.is_some_and(|v| re.is_match(v)),
            LabelCond::Not(v) => value != Some(v.as_str()),
            LabelCond::NotRegex(re) => !value.is_some_and(|v| re.is_match(v)),
        }
    }
}

impl Matcher {
    pub fn new(
        min_severity: Option<Severity>,
        sources: Vec<SourcePattern>,
        labels: Vec<(String, LabelCond)>,
    ) -> Matcher {
        let mut labels: Vec<(LabelKey, LabelCond)> = labels.into_iter().map(|(k, c)| (LabelKey::new(&k), c)).collect();
        labels.sort_by_key(|(_, c)| c.cost());
        Matcher { min_severity, sources, labels }
    }

    pub fn is_catch_all(&self) -> bool {
        self.min_severity.is_none() && self.sources.is_empty() && self.labels.is_empty()
    }

    /// Whether the event matches. Severity is compared only for
    /// non-resolved events; `resolved` is routed by alert identity instead.
    pub fn matches(&self, e: &Event) -> bool {
        self.matches_in(e, None)
    }

    /// Whether an alert of rule `rule` with this event matches (a
    /// silence's matcher may name the rule).
    pub fn matches_in(&self, e: &Event, rule: Option<&str>) -> bool {
        if let Some(min) = self.min_severity
            && e.severity != Severity::Resolved
            && e.severity < min
        {
            return false;
        }
        // Exact label checks are the cheapest way to reject most events, so
        // they come before source globs and regexes.
        let split = self.labels.partition_point(|(_, c)| c.cost() == 0);
        let (exact, regexes) = self.labels.split_at(split);
        if !exact.iter().all(|(key, cond)| cond.matches(key.get(e, rule))) {
            return false;
        }
        if !self.sources.is_empty() && !self.sources.iter().any(|p| p.matches(&e.source)) {
            return false;
        }
        regexes.iter().all(|(key, cond)| cond.matches(key.get(e, rule)))
    }
}

/// Finds the rules that can possibly match an event without trying them
/// all.
///
/// Most rules require some label to have an exact value (`service: db`,
/// `source: disk`). Each such rule is filed under one of its exact
/// conditions; an event then only needs one hash lookup per distinct
/// indexed label to find its candidates. Rules with no exact condition are
/// always candidates. Candidates keep rule order, so "first match wins"
/// is unchanged.
#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    keys: Vec<(LabelKey, HashMap<String, Vec<usize>>)>,
    always: Vec<usize>,
}

impl RuleIndex {
    pub fn new(rules: &[Arc<Rule>]) -> RuleIndex {
        // File each rule under the exact condition whose label is the most
        // common among all rules, so events need few lookups.
        let mut freq: HashMap<LabelKey, usize> = HashMap::new();
        let exact = |m: &Matcher| -> Vec<(LabelKey, String)> {
            let mut v: Vec<(LabelKey, String)> = m
                .labels
                .iter()
                .filter_map(|(k, c)| match c {
                    LabelCond::Equals(value) => Some((k.clone(), value.clone())),
                    _ => None,
                })
                .collect();
            if let [SourcePattern::Exact(src)] = m.sources.as_slice() {
                v.push((LabelKey::Source, src.clone()));
            }
            v
        };
        for r in rules {
            for (k, _) in exact(&r.matcher) {
                *freq.entry(k).or_default() += 1;
            }
        }
        let mut index = RuleIndex::default();
        for (i, r) in rules.iter().enumerate() {
            let best = exact(&r.matcher).into_iter().max_by_key(|(k, _)| freq.get(k).copied().unwrap_or(0));
            match best {
                Some((key, value)) => {
                    let slot = match index.keys.iter().position(|(k, _)| *k == key) {
                        Some(p) => p,
                        None => {
                            index.keys.push((key, HashMap::new()));
                            index.keys.len() - 1
                        }
                    };
                    index.keys[slot].1.entry(value).or_default().push(i);
                }
                None => index.always.push(i),
            }
        }
        index
    }

    /// The indices of rules that may match `e`, in rule order.
    pub fn candidates(&self, e: &Event, out: &mut smallvec::SmallVec<[usize; 8]>) {
        out.clear();
        out.extend_from_slice(&self.always);
        let mut sources = usize::from(!self.always.is_empty());
        for (key, values) in &self.keys {
            if let Some(list) = key.get(e, None).and_then(|v| values.get(v)) {
                out.extend_from_slice(list);
                sources += 1;
            }
        }
        // Lists are each sorted; merging is only needed when several contributed.
        if sources > 1 {
            out.sort_unstable();
        }
    }
}

/// Someone a notification goes to, with their contact details.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Recipient {
    /// Subscriber id, or `*` for the whole workgroup.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// A login name: popups go to `USER<03>`, wherever they are logged on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The group the rule named them through (`None`: named directly):
    /// whose budget their notifications count against (see
    /// [`crate::budget::holder`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Recipient {
    pub fn workgroup() -> Recipient {
        Recipient { id: "*".into(), name: None, machine: None, user: None, email: None, group: None }
    }

    pub fn is_workgroup(&self) -> bool {
        self.id == "*"
    }

    /// Whether a transport of this kind (as `TransportConfig::kind` names
    /// it) can deliver to this recipient: a popup needs a user or a machine
    /// (or is the workgroup broadcast), a mail an address; a log records anyone. The
    /// config gives each transport only the recipients it can reach.
    pub fn reachable_by(&self, kind: &str) -> bool {
        match kind {
            "messenger" => self.user.is_some() || self.machine.is_some() || self.is_workgroup(),
            "email" => self.email.is_some(),
            _ => true,
        }
    }
}

/// The recipients one transport delivers to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub transport: String,
    pub recipients: Vec<Recipient>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub matcher: Matcher,
    pub hold_for: Duration,
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub send_resolved: bool,
    pub continue_matching: bool,
    pub targets: Vec<Target>,
    pub mute_during: Vec<Arc<Schedule>>,
    pub active_during: Vec<Arc<Schedule>>,
    /// Whether the rule has its own title and text templates (registered
    /// under `rule/<name>/title` and `rule/<name>/text`).
    pub has_title: bool,
    pub has_text: bool,
    pub has_html: bool,
    /// How its notifications meet budgets; `None`: critical ones counted,
    /// the rest folded (see [`crate::budget::Mode::effective`]).
    pub budget: Option<crate::budget::Mode>,
    /// Store-and-forward for its popups, overriding the transport's.
    pub offline: Option<crate::notify::OfflinePolicy>,
}

pub const DEFAULT_GROUP_WAIT: Duration = Duration::ZERO;
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

impl Rule {
    /// A rule with defaults, matching everything, notifying nobody; for tests
    /// and benchmarks.
    pub fn new(name: impl Into<String>) -> Rule {
        Rule {
            name: name.into(),
            matcher: Matcher::default(),
            hold_for: Duration::ZERO,
            group_by: Vec::new(),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
            send_resolved: true,
            continue_matching: false,
            targets: Vec::new(),
            mute_during: Vec::new(),
            active_during: Vec::new(),
            has_title: false,
            has_text: false,
            has_html: false,
            budget: None,
            offline: None,
        }
    }

    /// Why the rule sends nothing at `now`, if it is muted.
    pub fn muted_by(&self, now: DateTime<Utc>) -> Option<String> {
        if let Some(s) = self.mute_during.iter().find(|s| s.is_active(now)) {
            return Some(format!("muted during schedule `{}`", s.name));
        }
        if !self.active_during.is_empty() && !self.active_during.iter().any(|s| s.is_active(now)) {
            let names: Vec<&str> = self.active_during.iter().map(|s| s.name.as_str()).collect();
            return Some(format!("outside active schedule `{}`", names.join("`, `")));
        }
        None
    }

    /// When the rule's mute state next changes, if ever.
    pub fn mute_changes_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.mute_during.iter().chain(&self.active_during).filter_map(|s| s.next_change(now)).min()
    }
}

/// A compiled silence: from the config, or set at run time through the
/// control API (then it has a creator and is kept in the store).
#[derive(Debug, Clone)]
pub struct Silence {
    /// Stable id for the audit trail (`silence#<n>` for config silences,
    /// a random id for those set at run time).
    pub id: String,
    pub matcher: Matcher,
    /// The matchers as written (amtool's syntax), for listing and storing.
    pub matchers: Vec<String>,
    pub starts: Option<DateTime<Utc>>,
    pub ends: DateTime<Utc>,
    pub comment: Option<String>,
    /// Who set it at run time; `None` for the config's silences.
    pub created_by: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

impl Silence {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.starts.is_none_or(|s| s <= now) && now < self.ends
    }

    pub fn silences(&self, e: &Event, now: DateTime<Utc>) -> bool {
        self.is_active(now) && self.matcher.matches(e)
    }

    /// Whether it silences an alert of rule `rule` at `now`.
    pub fn silences_alert(&self, rule: &str, e: &Event, now: DateTime<Utc>) -> bool {
        self.is_active(now) && self.matcher.matches_in(e, Some(rule))
    }

    /// Whether it was set at run time (and so is kept in the store).
    pub fn is_runtime(&self) -> bool {
        self.created_by.is_some()
    }

    /// What the store keeps of a silence set at run time.
    pub fn record(&self) -> SilenceRecord {
        SilenceRecord {
            id: self.id.clone(),
            matchers: self.matchers.clone(),
            starts: self.starts,
            ends: self.ends,
            comment: self.comment.clone(),
            created_by: self.created_by.clone().unwrap_or_default(),
            created_at: self.created_at.unwrap_or(self.ends),
        }
    }

    /// A silence set at run time, from its record; the matchers are
    /// compiled again (their syntax is [`matchers`]').
    pub fn from_record(r: SilenceRecord) -> Result<Silence, String> {
        Ok(Silence {
            matcher: matchers::compile(&r.matchers)?,
            id: r.id,
            matchers: r.matchers,
            starts: r.starts,
            ends: r.ends,
            comment: r.comment,
            created_by: Some(r.created_by),
            created_at: Some(r.created_at),
        })
    }
}

/// A silence set at run time as the store keeps it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SilenceRecord {
    pub id: String,
    pub matchers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<DateTime<Utc>>,
    pub ends: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(source: &str, sev: Severity) -> Event {
        Event::new(source, "h", sev, "s", DateTime::from_timestamp(0, 0).unwrap()).with_label("mount", "/var")
    }

    #[test]
    fn matcher_conditions() {
        let m = Matcher::new(
            Some(Severity::Warning),
            vec![SourcePattern::new("disk*").unwrap()],
            vec![("mount".into(), LabelCond::Regex(regex::Regex::new("^/v.*$").unwrap()))],
        );
        assert!(m.matches(&ev("disk", Severity::Warning)));
        assert!(m.matches(&ev("disk-2", Severity::Critical)));
        assert!(!m.matches(&ev("disk", Severity::Info)), "below minimum severity");
        assert!(!m.matches(&ev("log", Severity::Critical)), "other source");
        assert!(!m.matches(&ev("disk", Severity::Warning).with_label("mount", "/srv")));
        let not = Matcher::new(None, vec![], vec![("env".into(), LabelCond::Not("prod".into()))]);
        assert!(not.matches(&ev("x", Severity::Info)), "a missing label is `not prod`");
        assert!(!not.matches(&ev("x", Severity::Info).with_label("env", "prod")));
    }

    #[test]
    fn source_patterns() {
        assert!(matches!(SourcePattern::new("disk*").unwrap(), SourcePattern::Prefix(_)));
        assert!(matches!(SourcePattern::new("log-?").unwrap(), SourcePattern::Glob(_)));
        assert!(SourcePattern::new("disk*").unwrap().matches("disk-usage"));
        assert!(!SourcePattern::new("disk*").unwrap().matches("log"));
        assert!(SourcePattern::new("log-?").unwrap().matches("log-1"));
        assert!(SourcePattern::new("[").is_err());
        assert!(
            Matcher::new(None, vec![], vec![("severity".into(), LabelCond::Equals("info".into()))])
                .matches(&ev("x", Severity::Info))
        );
    }

    #[test]
    fn exact_labels_are_checked_before_regexes() {
        let m = Matcher::new(
            None,
            vec![],
            vec![
                ("a".into(), LabelCond::Regex(regex::Regex::new("x").unwrap())),
                ("b".into(), LabelCond::Equals("y".into())),
            ],
        );
        assert!(matches!(m.labels[0].1, LabelCond::Equals(_)));
    }
}
