//! Merging the files of a configuration, checking what the schema cannot
//! (duplicates, references, plugin settings, unreachable rules), and
//! compiling the result into the runtime [`Config`].
//!
//! Every check reports into the same list and carries on, so one run of
//! `alerter check` shows every problem. Compilation only produces a
//! [`Config`] when the structural pass found nothing; reference errors
//! still let the rest compile so their own checks run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;

/// How long history is kept by default (`alerter.retention`).
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

use super::diag::{Diagnostic, Place, Target as DiagTarget, YamlPath};
use super::model::{self, LabelMatch, LabelOp, MatcherConfig, RecipientsConfig};
use super::source::SourceMap;
use super::{ApiSettings, Config, ParsedFile, SourceCheck, default_state_dir, hostname, relative_to};
use crate::budget::{Allowance, Allowances, Budgets, Class, DEFAULT_POPUPS, TransportBudget};
use crate::event::ALERTER_SOURCE;
use crate::notices::Notice;
use crate::notify::TransportInfo;
use crate::plugin::{Isolation, PluginKind, PluginRegistry, SourceSpec};
use crate::rules::{self, LabelCond, Matcher, Recipient, Rule, Silence, SourcePattern, Target};
use crate::schedule::{Schedule, Window};
use crate::template::Templates;

/// Where a named thing was defined: file and path of its key.
#[derive(Debug, Clone)]
struct Origin {
    file: usize,
    path: YamlPath,
}

struct Ctx<'a> {
    sources: &'a SourceMap,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, file: usize, path: &YamlPath, msg: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::at(file, path, msg));
        self.diags.last_mut().expect("just pushed")
    }

    fn warn(&mut self, file: usize, path: &YamlPath, msg: impl Into<String>) -> &mut Diagnostic {
        let d = self.error(file, path, msg);
        d.level = super::diag::Level::Warning;
        d
    }

    fn describe(&self, o: &Origin) -> String {
        self.describe_at(o, DiagTarget::Key)
    }

    fn describe_value(&self, o: &Origin) -> String {
        self.describe_at(o, DiagTarget::Value)
    }

    fn describe_at(&self, o: &Origin, target: DiagTarget) -> String {
        let f = &self.sources.files()[o.file];
        match f.locate(&o.path, target) {
            Some((line, col)) => format!("{}:{line}:{col}", f.display_name()),
            None => f.display_name().to_string(),
        }
    }
}

/// Checks a reference and reports it with "did you mean" if it is unknown.
/// A reference to a thing defined with errors is neither resolved nor
/// reported again.
fn check_ref<T>(
    cx: &mut Ctx<'_>,
    kind: &str,
    name: &str,
    known: &Known<'_, T>,
    file: usize,
    path: &YamlPath,
    used_in: &str,
) -> bool {
    let (known, invalid) = (known.0, known.1);
    if known.contains_key(name) {
        return true;
    }
    if invalid.contains(name) {
        return false;
    }
    let mut names: Vec<&str> = known.keys().map(String::as_str).chain(invalid.iter().map(String::as_str)).collect();
    names.sort_unstable();
    names.dedup();
    let mut d = Diagnostic::at(file, path, format!("undefined {kind} `{name}` used in {used_in}"));
    d = d.suggest(name, names.iter().copied());
    if names.is_empty() {
        d = d.with_note(format!("no {kind}s are defined; define it under `{kind}s:`"));
    } else {
        d = d.with_note(format!("defined {kind}s: {}", names.join(", ")));
    }
    cx.diags.push(d);
    false
}

/// The valid definitions of a kind, and the names of those with errors.
struct Known<'a, T>(&'a IndexMap<String, T>, &'a HashSet<String>);

fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Merges one id-keyed section across files, reporting duplicates.
fn merge_section<T: Clone>(
    cx: &mut Ctx<'_>,
    files: &[(usize, ParsedFile)],
    section: &'static str,
    noun: &str,
    get: impl Fn(&ParsedFile) -> &IndexMap<String, T>,
) -> (IndexMap<String, T>, HashMap<String, Origin>, HashSet<String>) {
    let invalid: HashSet<String> =
        files.iter().flat_map(|(_, f)| f.invalid.get(section).into_iter().flatten().cloned()).collect();
    let mut out = IndexMap::new();
    let mut origins: HashMap<String, Origin> = HashMap::new();
    for (file, f) in files {
        for (id, item) in get(f) {
            let path = YamlPath::root().key(section).key(id.clone());
            if !valid_id(id) {
                cx.diags.push(
                    Diagnostic::at_key(*file, &path, format!("`{id}` is not a valid {noun} id"))
                        .with_note("ids start with a letter or digit and use only letters, digits, `_`, `-` and `.`"),
                );
            }
            if let Some(first) = origins.get(id) {
                let first = cx.describe(first);
                cx.diags.push(
                    Diagnostic::at_key(*file, &path, format!("{noun} `{id}` is defined twice"))
                        .with_note(format!("first defined at {first}")),
                );
                continue;
            }
            origins.insert(id.clone(), Origin { file: *file, path });
            out.insert(id.clone(), item.clone());
        }
    }
    (out, origins, invalid)
}

/// Warns about plugin directories that cannot be scanned. The scan skips
/// them (a packaged default may not exist yet), so without this a typo in
/// the path only shows as plugins that are never found. Returns how many.
fn check_plugin_dirs(cx: &mut Ctx<'_>, file: usize, written: &[PathBuf], resolved: &[PathBuf]) -> usize {
    let mut unusable = 0;
    for (i, (raw, dir)) in written.iter().zip(resolved).enumerate() {
        let (problem, fix) = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => ("is not a directory".to_string(), "correct the path"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ("does not exist".to_string(), "create it, or correct the path")
            }
            Err(e) => (format!("cannot be read ({e})"), "correct the path or its permissions"),
        };
        unusable += 1;
        let at = YamlPath::root().key("alerter").key("plugin_dirs").index(i);
        let d = cx.warn(file, &at, format!("plugin directory {} {problem}", dir.display()));
        d.notes.push(format!("no plugin in it can be used: {fix}"));
        if raw.is_relative() {
            d.notes.push(format!(
                "`{}` is relative, so it is taken from the directory of the config file that names it",
                raw.display()
            ));
        }
    }
    unusable
}

/// Warns about the sources a rule names that are not configured: events
/// come only from configured sources and from the daemon itself
/// (`alerter`), so such a rule, or that part of it, can never fire. A
/// warning, not an error: the config still does what it says, and a source
/// may be added later.
fn check_rule_sources(cx: &mut Ctx<'_>, rule: &str, m: &MatcherConfig, file: usize, path: &YamlPath, known: &[&str]) {
    let mut named: Vec<(YamlPath, &str)> = Vec::new();
    if let Some(src) = &m.source {
        let one = matches!(src, super::types::OneOrMany::One(_));
        for (i, p) in src.to_vec().into_iter().enumerate() {
            let at = if one { path.key("source") } else { path.key("source").index(i) };
            named.push((at, p.as_str()));
        }
    }
    if let Some(LabelMatch::Equals(s)) = m.labels.get("source") {
        named.push((path.key("labels").key("source"), s.as_str()));
    }
    for (at, pattern) in named {
        // A bad glob is reported by `check_matcher`.
        let Ok(p) = SourcePattern::new(pattern) else { continue };
        if known.iter().any(|k| p.matches(k)) {
            continue;
        }
        let message = if matches!(p, SourcePattern::Exact(_)) {
            format!("rule `{rule}` matches source `{pattern}`, which is not configured")
        } else {
            format!("rule `{rule}` matches sources `{pattern}`, but no configured source does")
        };
        let mut d = Diagnostic::at(file, &at, message);
        d.level = super::diag::Level::Warning;
        if matches!(p, SourcePattern::Exact(_)) {
            d = d.suggest(pattern, known.iter().copied());
        }
        let names: Vec<&str> = known.iter().copied().filter(|k| *k != ALERTER_SOURCE).collect();
        d = d.with_note(if names.is_empty() {
            format!("no sources are configured; there is only `{ALERTER_SOURCE}`, the daemon's own")
        } else {
            format!("configured sources: `{}`; and `{ALERTER_SOURCE}`, the daemon's own", names.join("`, `"))
        });
        d = d.with_note(
            "events come from configured sources only, so this never matches; correct the name or define the source",
        );
        cx.diags.push(d);
    }
}

fn compile_matcher(m: &MatcherConfig) -> Matcher {
    let sources = m
        .source
        .as_ref()
        .map(|s| s.to_vec().into_iter().filter_map(|p| SourcePattern::new(p).ok()).collect())
        .unwrap_or_default();
    let labels = m
        .labels
        .iter()
        .map(|(k, v)| {
            let cond = match v {
                LabelMatch::Equals(s) => LabelCond::Equals(s.clone()),
                LabelMatch::Op(LabelOp::Regex(r)) => LabelCond::Regex(r.value.clone()),
                LabelMatch::Op(LabelOp::Not(s)) => LabelCond::Not(s.clone()),
                LabelMatch::Op(LabelOp::NotRegex(r)) => LabelCond::NotRegex(r.value.clone()),
            };
            (k.clone(), cond)
        })
        .collect();
    Matcher::new(m.severity, sources, labels)
}

/// A config matcher in amtool's words, for listing the config's silences
/// beside those set at run time.
fn describe_matcher(m: &MatcherConfig) -> Vec<String> {
    let quote = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let mut out = Vec::new();
    if let Some(src) = &m.source {
        let list = src.to_vec();
        // Source patterns are globs: shown as written, not as a regex.
        let list: Vec<String> = list.iter().map(|p| quote(p)).collect();
        out.push(format!("source~glob({})", list.join(", ")));
    }
    if let Some(sev) = m.severity {
        out.push(format!("severity>={}", sev.as_str()));
    }
    for (k, v) in &m.labels {
        out.push(match v {
            LabelMatch::Equals(s) => format!("{k}={}", quote(s)),
            LabelMatch::Op(LabelOp::Regex(r)) => format!("{k}=~{}", quote(&r.raw)),
            LabelMatch::Op(LabelOp::Not(s)) => format!("{k}!={}", quote(s)),
            LabelMatch::Op(LabelOp::NotRegex(r)) => format!("{k}!~{}", quote(&r.raw)),
        });
    }
    out
}

fn check_matcher(cx: &mut Ctx<'_>, m: &MatcherConfig, file: usize, path: &YamlPath) {
    if let Some(src) = &m.source {
        let list = src.to_vec();
        for (i, p) in list.iter().enumerate() {
            if let Err(e) = SourcePattern::new(p) {
                let at = if matches!(src, super::types::OneOrMany::One(_)) {
                    path.key("source")
                } else {
                    path.key("source").index(i)
                };
                cx.error(file, &at, e);
            }
        }
    }
}

/// Reports names used twice in a list section, across files, counting
/// items that have other errors too.
fn check_duplicate_names(
    cx: &mut Ctx<'_>,
    files: &[(usize, ParsedFile)],
    section: &'static str,
    noun: &str,
    valid: impl Fn(&ParsedFile) -> Vec<(usize, &str)>,
) {
    let mut seen: HashMap<String, Origin> = HashMap::new();
    for (file, f) in files {
        let mut names: Vec<(usize, &str)> = valid(f);
        names.extend(
            f.partial
                .iter()
                .filter(|p| p.section == section && !p.name.starts_with('#'))
                .map(|p| (p.index, p.name.as_str())),
        );
        names.sort_by_key(|(i, _)| *i);
        for (i, name) in names {
            let path = YamlPath::root().key(section).index(i).key("name");
            if let Some(first) = seen.get(name) {
                let first = cx.describe_value(first);
                cx.error(*file, &path, format!("{noun} name `{name}` is used twice"))
                    .notes
                    .push(format!("first used at {first}; {noun} names must be unique"));
            } else {
                seen.insert(name.to_string(), Origin { file: *file, path });
            }
        }
    }
}

/// Resolves `notify:` entries into per-transport recipient lists.
#[allow(clippy::too_many_arguments)]
fn compile_targets(
    cx: &mut Ctx<'_>,
    entries: &[RecipientsConfig],
    file: usize,
    path: &YamlPath,
    used_in: &str,
    subscribers: &Known<'_, model::SubscriberConfig>,
    groups: &Known<'_, model::GroupConfig>,
    transports: &Known<'_, model::TransportConfig>,
) -> Vec<Target> {
    if entries.is_empty() {
        cx.error(file, path, format!("{used_in} notifies nobody"))
            .notes
            .push("add an entry such as `{ groups: [admins], via: [popup] }`".into());
    }
    let entries: Vec<(usize, &RecipientsConfig)> = entries.iter().enumerate().collect();
    compile_entries(cx, &entries, file, path, used_in, subscribers, groups, transports)
}

/// [`compile_targets`] for entries that keep their index in the file.
///
/// Each transport of an entry gets those of its recipients it can reach:
/// popups go to machines (and the workgroup), mail to addresses. Groups
/// mix people who have a workstation, a mail address or both, so someone
/// a transport cannot reach is left out of that transport only, with a
/// warning; an entry that reaches nobody through any of its transports is
/// an error, since it was certainly meant to tell someone.
#[allow(clippy::too_many_arguments)]
fn compile_entries(
    cx: &mut Ctx<'_>,
    entries: &[(usize, &RecipientsConfig)],
    file: usize,
    path: &YamlPath,
    used_in: &str,
    subscribers: &Known<'_, model::SubscriberConfig>,
    groups: &Known<'_, model::GroupConfig>,
    transports: &Known<'_, model::TransportConfig>,
) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    for (j, entry) in entries.iter().copied() {
        let at = path.index(j);
        // Everyone the entry names, with the group they were named through
        // (`None`: directly, or the workgroup), for the messages below.
        let mut people: Vec<(Recipient, Option<&str>)> = Vec::new();
        // Someone named twice (through a group and directly) is told once;
        // named directly anywhere, their own budget is the one that counts.
        fn add<'a>(people: &mut Vec<(Recipient, Option<&'a str>)>, r: Recipient, group: Option<&'a str>) {
            match people.iter_mut().find(|(p, _)| p.id == r.id) {
                Some((p, g)) if r.group.is_none() => {
                    p.group = None;
                    *g = None;
                }
                Some(_) => {}
                None => people.push((r, group)),
            }
        }
        let subscriber = |id: &str, group: Option<&str>| {
            let s = &subscribers.0[id];
            Recipient {
                id: id.to_string(),
                name: s.name.clone(),
                machine: s.machine.clone(),
                user: s.user.clone(),
                email: s.email.clone(),
                group: group.map(str::to_string),
            }
        };
        for (k, g) in entry.groups.iter().enumerate() {
            if check_ref(cx, "group", g, groups, file, &at.key("groups").index(k), used_in) {
                if groups.0[g].members.is_empty() {
                    // Perhaps to be filled later, so not an error; but
                    // nobody hears of what is sent to it meanwhile.
                    cx.warn(file, &at.key("groups").index(k), format!("{used_in}: group `{g}` has no members"))
                        .notes
                        .push("nothing sent to it reaches anyone; add members, or notify someone else".into());
                }
                for m in &groups.0[g].members {
                    if subscribers.0.contains_key(m) {
                        add(&mut people, subscriber(m, Some(g.as_str())), Some(g.as_str()));
                    }
                }
            }
        }
        for (k, s) in entry.subscribers.iter().enumerate() {
            if check_ref(cx, "subscriber", s, subscribers, file, &at.key("subscribers").index(k), used_in) {
                add(&mut people, subscriber(s, None), None);
            }
        }
        if entry.workgroup {
            add(&mut people, Recipient::workgroup(), None);
        }
        if entry.groups.is_empty() && entry.subscribers.is_empty() && !entry.workgroup {
            cx.error(file, &at, "this notify entry names no recipients")
                .notes
                .push("give `groups`, `subscribers`, or `workgroup: true`".into());
        }
        if entry.via.is_empty() {
            cx.error(file, &at.key("via"), "`via` is empty").notes.push("name at least one transport".into());
        }
        // Per transport: whom it reaches (into its target) and whom not.
        let mut gaps: Vec<Gap<'_>> = Vec::new();
        let mut reached: HashSet<&str> = HashSet::new();
        let mut usable = false;
        for (k, t) in entry.via.iter().enumerate() {
            if !check_ref(cx, "transport", t, transports, file, &at.key("via").index(k), used_in) {
                continue;
            }
            usable = true;
            let kind = transports.0[t].kind();
            let (reach, missing): (Vec<_>, Vec<_>) = people.iter().partition(|(r, _)| r.reachable_by(kind));
            if !reach.is_empty() {
                let target = match targets.iter_mut().find(|x| &x.transport == t) {
                    Some(x) => x,
                    None => {
                        targets.push(Target { transport: t.clone(), recipients: Vec::new() });
                        targets.last_mut().expect("just pushed")
                    }
                };
                for (r, _) in reach {
                    reached.insert(&r.id);
                    // Across entries too: one recipient once, direct naming winning.
                    match target.recipients.iter_mut().find(|x| x.id == r.id) {
                        Some(x) if r.group.is_none() => x.group = None,
                        Some(_) => {}
                        None => target.recipients.push(r.clone()),
                    }
                }
            }
            if !missing.is_empty() {
                gaps.push(Gap { via: k, transport: t, kind, missing });
            }
        }
        if usable && !people.is_empty() && reached.is_empty() {
            let d = cx.error(file, &at, format!("{used_in} reaches nobody through this notify entry"));
            for g in &gaps {
                let ids: Vec<&str> = g.missing.iter().map(|(r, _)| r.id.as_str()).collect();
                d.notes.push(g.needs_note(&ids));
                if g.kind == "email" && entry.workgroup {
                    d.notes.push("`workgroup: true` is reached by popups only".into());
                }
            }
            d.notes.push("give them what a transport needs, or add a transport that can reach them".into());
            continue;
        }
        for g in gaps {
            g.warn(cx, file, &at, used_in, &reached);
        }
    }
    targets
}

/// A popup transport's or a rule's `offline`: the wait must be more than
/// nothing, and `then` a transport other than a popup one (a popup
/// falling back to a popup would wait again).
fn compile_offline(
    cx: &mut Ctx<'_>,
    o: &model::OfflineConfig,
    file: usize,
    at: &YamlPath,
    used_in: &str,
    transports: &Known<'_, model::TransportConfig>,
    own: Option<&str>,
) -> Option<crate::notify::OfflinePolicy> {
    if let Some(w) = &o.wait
        && w.value.is_zero()
    {
        cx.error(file, &at.key("wait"), "`wait` must be more than 0s")
            .notes
            .push("it is how long a popup waits for someone who is nowhere; e.g. 30m".into());
    }
    if let Some(p) = &o.poll
        && p.value.is_zero()
    {
        cx.error(file, &at.key("poll"), "`poll` must be more than 0s").notes.push("e.g. 30s".into());
    }
    if let Some(then) = &o.then {
        let path = at.key("then");
        if own == Some(then.as_str()) {
            cx.error(file, &path, "a popup transport cannot fall back to itself")
                .notes
                .push("name another transport, e.g. an email one".into());
            return None;
        }
        if !check_ref(cx, "transport", then, transports, file, &path, used_in) {
            return None;
        }
        if transports.0[then].kind() == "messenger" {
            cx.error(file, &path, format!("`{then}` is a popup transport: the fallback must reach them another way"))
                .notes
                .push("name an email or log transport".into());
            return None;
        }
    }
    Some(crate::notify::OfflinePolicy { wait: o.wait.as_ref().map(|w| w.value), then: o.then.clone() })
}

/// Recipients of a notify entry that one of its transports cannot reach.
struct Gap<'a> {
    /// Index in `via`.
    via: usize,
    transport: &'a str,
    kind: &'static str,
    missing: Vec<&'a (Recipient, Option<&'a str>)>,
}

impl Gap<'_> {
    /// What the transport needs, and the `ids` that lack it.
    fn needs_note(&self, ids: &[&str]) -> String {
        let need = if self.kind == "messenger" { "a `machine`" } else { "an `email`" };
        let list: Vec<String> =
            ids.iter().map(|id| if *id == "*" { "`workgroup: true`".to_string() } else { format!("`{id}`") }).collect();
        let have = if ids.len() == 1 { "has" } else { "have" };
        format!("transport `{}` needs {need}; {} {have} none", self.transport, list.join(", "))
    }

    /// One warning per group (and one for those named directly), so that
    /// each names who to fix and where they come from.
    fn warn(&self, cx: &mut Ctx<'_>, file: usize, entry: &YamlPath, used_in: &str, reached: &HashSet<&str>) {
        let at = entry.key("via").index(self.via);
        let t = self.transport;
        let mut buckets: Vec<(Option<&str>, Vec<&str>)> = Vec::new();
        for (r, group) in &self.missing {
            if r.is_workgroup() {
                cx.warn(
                    file,
                    &at,
                    format!("{used_in}: transport `{t}` sends mail, which cannot reach `workgroup: true`"),
                )
                .notes
                .push("the workgroup is reached by popups; to mail people, name their groups or subscribers".into());
                continue;
            }
            match buckets.iter_mut().find(|(g, _)| g == group) {
                Some((_, ids)) => ids.push(&r.id),
                None => buckets.push((*group, vec![&r.id])),
            }
        }
        let (field, hint) = if self.kind == "messenger" {
            (
                "user` or `machine",
                "a `user:` (their login name, found wherever they are logged on) or a `machine:` (the NetBIOS name of their workstation)",
            )
        } else {
            ("email", "an `email:` address")
        };
        for (group, ids) in buckets {
            let who = match (group, ids.as_slice()) {
                (Some(g), [one]) => format!("member `{one}` of group `{g}` has"),
                (Some(g), many) => format!("members `{}` of group `{g}` have", many.join("`, `")),
                (None, [one]) => format!("subscriber `{one}` has"),
                (None, many) => format!("subscribers `{}` have", many.join("`, `")),
            };
            let d = cx.warn(file, &at, format!("{used_in}: {who} no `{field}`, so transport `{t}` cannot reach them"));
            let nobody: Vec<&str> = ids.iter().copied().filter(|id| !reached.contains(id)).collect();
            if !nobody.is_empty() {
                d.notes.push(format!("no transport of this entry reaches `{}`", nobody.join("`, `")));
            }
            d.notes.push(format!("give each {hint} for `{t}` to reach them"));
        }
    }
}

fn schedule_refs(
    cx: &mut Ctx<'_>,
    names: &[String],
    schedules: &Known<'_, Arc<Schedule>>,
    file: usize,
    path: &YamlPath,
    used_in: &str,
) -> Vec<Arc<Schedule>> {
    names
        .iter()
        .enumerate()
        .filter(|(k, n)| check_ref(cx, "schedule", n, schedules, file, &path.index(*k), used_in))
        .map(|(_, n)| schedules.0[n].clone())
        .collect()
}

/// Compiles parsed files into a [`Config`]. Returns `None` when nothing
/// could be parsed at all; otherwise a config, whose use is up to the caller
/// (the loader discards it when `diags` holds errors).
pub fn compile(
    files: &[(usize, ParsedFile)],
    sources: &SourceMap,
    registry: &PluginRegistry,
    check: SourceCheck,
    check_transport: super::TransportCheck,
    diags: &mut Vec<Diagnostic>,
) -> Option<Config> {
    let (main_file, main) = files.first()?;
    let mut cx = Ctx { sources, diags };
    let section = main.alerter.clone().unwrap_or_default();

    let (source_cfgs, source_origins, bad_sources) = merge_section(&mut cx, files, "sources", "source", |f| &f.sources);
    let (transports, transport_origins, bad_transports) =
        merge_section(&mut cx, files, "transports", "transport", |f| &f.transports);
    let (subscribers, subscriber_origins, bad_subscribers) =
        merge_section(&mut cx, files, "subscribers", "subscriber", |f| &f.subscribers);
    let (groups, group_origins, bad_groups) = merge_section(&mut cx, files, "groups", "group", |f| &f.groups);
    let (schedule_cfgs, schedule_origins, bad_schedules) =
        merge_section(&mut cx, files, "schedules", "schedule", |f| &f.schedules);
    let known_transports = Known(&transports, &bad_transports);
    let known_subscribers = Known(&subscribers, &bad_subscribers);
    let known_groups = Known(&groups, &bad_groups);

    // Only the main file may have an `alerter` section, so its directory is
    // the one relative plugin directories belong to (as for `include`).
    let base = sources.files()[*main_file].path().and_then(Path::parent);
    let plugin_dirs: Vec<PathBuf> = section.plugin_dirs.iter().map(|d| relative_to(base, d)).collect();
    let unusable_dirs = check_plugin_dirs(&mut cx, *main_file, &section.plugin_dirs, &plugin_dirs);

    // Sources: reserved id, a usable plugin, the pin, the plugin's own validation.
    let plugin_set = match check {
        SourceCheck::Full => registry.scan(&plugin_dirs),
        SourceCheck::BuiltinOnly => registry.scan(&[]),
    };
    let types: Vec<&str> = plugin_set.plugins.keys().map(String::as_str).collect();
    let mut source_specs: IndexMap<String, SourceSpec> = IndexMap::new();
    for (id, src) in &source_cfgs {
        let o = &source_origins[id];
        if id == ALERTER_SOURCE {
            cx.diags.push(
                Diagnostic::at_key(o.file, &o.path, "the source id `alerter` is reserved for the daemon's own events")
                    .with_note("choose another id"),
            );
        }
        let Some(plugin) = plugin_set.plugins.get(&src.kind) else {
            if check == SourceCheck::BuiltinOnly && !plugin_dirs.is_empty() {
                // A plugin in a directory not scanned may provide it.
                continue;
            }
            let mut d =
                Diagnostic::at(o.file, &o.path.key("type"), format!("no plugin provides source type `{}`", src.kind))
                    .suggest(&src.kind, types.iter().copied());
            d = if types.is_empty() {
                d.with_note("no source plugins are available; see `alerter plugins`")
            } else {
                d.with_note(format!("available source types: {}", types.join(", ")))
            };
            if unusable_dirs > 0 {
                let dirs = if unusable_dirs == 1 { "directory" } else { "directories" };
                d = d.with_note(format!("{unusable_dirs} plugin {dirs} could not be scanned; see the warnings"));
            }
            if !plugin_set.refused.is_empty() {
                d = d.with_note(format!(
                    "{} plugin file(s) were refused; `alerter plugins` says why",
                    plugin_set.refused.len()
                ));
            }
            cx.diags.push(d);
            continue;
        };
        if let Some(pin) = &src.sha256 {
            match &plugin.sha256 {
                Some(actual) if actual.eq_ignore_ascii_case(pin.trim()) => {}
                Some(actual) => cx.diags.push(
                    Diagnostic::at(
                        o.file,
                        &o.path.key("sha256"),
                        format!("plugin `{}` does not match its pin", src.kind),
                    )
                    .with_note(format!(
                        "{} has sha256 {actual}",
                        plugin.path().map(|p| p.display().to_string()).unwrap_or_default()
                    ))
                    .with_note("if the new file is the one you want, update the pin"),
                ),
                None => cx.diags.push(Diagnostic::at(
                    o.file,
                    &o.path.key("sha256"),
                    format!("`{}` is a built-in plugin; a sha256 pin applies only to plugin files", src.kind),
                )),
            }
        }
        let isolation = match (&plugin.kind, src.isolation) {
            (PluginKind::Executable(_), Some(Isolation::InProcess)) => {
                cx.diags.push(Diagnostic::at(
                    o.file,
                    &o.path.key("isolation"),
                    "an executable plugin always runs in its own process",
                ));
                Isolation::Process
            }
            (_, Some(i)) => i,
            (PluginKind::Builtin(_), None) => Isolation::InProcess,
            (_, None) => Isolation::Process,
        };
        let settings = serde_json::Value::Object(src.settings.clone().into_iter().collect());
        for problem in plugin_set.validate(&src.kind, &settings) {
            let mut path = o.path.clone();
            if let Some(p) = &problem.path {
                path.0.extend(parse_dotted(p).0);
            }
            let mut d = Diagnostic::at(o.file, &path, problem.message.clone());
            if problem.path.is_none() {
                d.place = Place::Path { file: o.file, path: o.path.clone(), target: DiagTarget::Key };
                d.message = format!("source `{id}`: {}", problem.message);
            }
            cx.diags.push(d);
        }
        source_specs.insert(
            id.clone(),
            SourceSpec {
                id: id.clone(),
                plugin: plugin.clone(),
                settings,
                isolation,
                queue: src.queue.or(section.event_queue).map_or(1000, |q| q.max(1) as usize),
                enabled: src.enabled,
            },
        );
    }

    // Subscribers' names on the network: a popup to a name that cannot be
    // one would fail at every attempt.
    for (id, s) in &subscribers {
        let o = &subscriber_origins[id];
        for (key, value) in [("machine", &s.machine), ("user", &s.user)] {
            if let Some(v) = value
                && let Err(e) = messenger_transport::NetbiosName::new(v, messenger_transport::name::MESSENGER)
            {
                cx.error(o.file, &o.path.key(key), format!("subscriber `{id}`: {e}"));
            }
        }
    }

    for (id, g) in &groups {
        let o = group_origins[id].clone();
        for (k, m) in g.members.iter().enumerate() {
            check_ref(
                &mut cx,
                "subscriber",
                m,
                &known_subscribers,
                o.file,
                &o.path.key("members").index(k),
                &format!("group `{id}`"),
            );
        }
    }

    let mut schedules: IndexMap<String, Arc<Schedule>> = IndexMap::new();
    for (id, s) in &schedule_cfgs {
        let o = &schedule_origins[id];
        if s.windows.is_empty() {
            cx.error(o.file, &o.path.key("windows"), format!("schedule `{id}` has no windows"))
                .notes
                .push("add at least one window, e.g. `{ weekdays: [mon-fri], times: [\"08:00-18:00\"] }`".into());
        }
        let windows = s
            .windows
            .iter()
            .map(|w| {
                let days: Vec<_> = w.weekdays.iter().map(|d| d.value).collect();
                Window::new(&days, w.times.iter().map(|t| t.value).collect())
            })
            .collect();
        let tz = s.timezone.as_ref().map_or(chrono_tz::UTC, |t| t.value);
        schedules.insert(id.clone(), Arc::new(Schedule { name: id.clone(), tz, windows }));
    }

    let mut templates = Templates::default();
    let template_error = |cx: &mut Ctx<'_>, file: usize, path: &YamlPath, r: Result<(), String>| {
        if let Err(e) = r {
            cx.error(file, path, e);
        }
    };
    let transport_file = |id: &str| -> (usize, YamlPath) {
        for (file, f) in files {
            if f.transports.contains_key(id) {
                return (*file, YamlPath::root().key("transports").key(id.to_string()));
            }
        }
        (*main_file, YamlPath::root())
    };
    for (id, t) in &transports {
        // Each transport checks its own settings (files, names, addresses);
        // the config knows only where to report what it finds.
        let (file, path) = transport_file(id);
        for (below, problem) in check_transport(t) {
            let mut at = path.clone();
            at.0.extend(below.0);
            cx.error(file, &at, problem);
        }
        if let Some(tpl) = t.template() {
            let (file, path) = transport_file(id);
            if let Some(title) = &tpl.title {
                let r = templates.add(format!("transport/{id}/title"), title.raw.clone());
                template_error(&mut cx, file, &path.key("template").key("title"), r);
            }
            if let Some(text) = &tpl.text {
                let r = templates.add(format!("transport/{id}/text"), text.raw.clone());
                template_error(&mut cx, file, &path.key("template").key("text"), r);
            }
            if let Some(html) = &tpl.html {
                let r = templates.add(format!("transport/{id}/html"), html.raw.clone());
                template_error(&mut cx, file, &path.key("template").key("html"), r);
            }
        }
    }

    check_duplicate_names(&mut cx, files, "rules", "rule", |f| {
        f.rules.iter().map(|(i, r)| (*i, r.name.as_str())).collect()
    });
    check_duplicate_names(&mut cx, files, "notices", "notice", |f| {
        f.notices.iter().map(|(i, n)| (*i, n.name.as_str())).collect()
    });

    // Rules, in file order.
    let mut rules: Vec<Arc<Rule>> = Vec::new();
    let mut catch_all: Option<String> = None;
    let known_schedules = Known(&schedules, &bad_schedules);
    // Sources defined with errors count as configured: they are reported
    // where they are defined, not again at every rule.
    let mut configured: Vec<&str> = std::iter::once(ALERTER_SOURCE)
        .chain(source_cfgs.keys().map(String::as_str))
        .chain(bad_sources.iter().map(String::as_str))
        .collect();
    configured.sort_unstable();
    configured.dedup();
    for (file, f) in files {
        for (i, r) in &f.rules {
            let i = *i;
            let path = YamlPath::root().key("rules").index(i);
            let used_in = format!("rule `{}`", r.name);
            if let Some(before) = &catch_all {
                cx.diags.push(
                    Diagnostic::at(*file, &path.key("name"), format!("rule `{}` can never match", r.name))
                        .with_note(format!("rule `{before}` before it matches every event and does not `continue`")),
                );
                cx.diags.last_mut().expect("pushed").level = super::diag::Level::Warning;
            }
            check_matcher(&mut cx, &r.matcher, *file, &path.key("match"));
            check_rule_sources(&mut cx, &r.name, &r.matcher, *file, &path.key("match"), &configured);
            let targets = compile_targets(
                &mut cx,
                &r.notify,
                *file,
                &path.key("notify"),
                &used_in,
                &known_subscribers,
                &known_groups,
                &known_transports,
            );
            let mute_during =
                schedule_refs(&mut cx, &r.mute_during, &known_schedules, *file, &path.key("mute_during"), &used_in);
            let active_during =
                schedule_refs(&mut cx, &r.active_during, &known_schedules, *file, &path.key("active_during"), &used_in);
            let dur = |d: &Option<super::types::Duration>, default: Duration| d.as_ref().map_or(default, |d| d.value);
            let mut rule = Rule::new(r.name.clone());
            rule.matcher = compile_matcher(&r.matcher);
            rule.hold_for = dur(&r.hold_for, Duration::ZERO);
            rule.group_by = r.group_by.clone();
            rule.group_wait = dur(&r.group_wait, rules::DEFAULT_GROUP_WAIT);
            rule.group_interval = dur(&r.group_interval, rules::DEFAULT_GROUP_INTERVAL);
            rule.repeat_interval = dur(&r.repeat_interval, rules::DEFAULT_REPEAT_INTERVAL);
            rule.send_resolved = r.send_resolved.unwrap_or(true);
            rule.continue_matching = r.continue_matching;
            rule.targets = targets;
            rule.mute_during = mute_during;
            rule.active_during = active_during;
            rule.budget = r.budget;
            if let Some(o) = &r.offline {
                let at = path.key("offline");
                rule.offline = compile_offline(&mut cx, o, *file, &at, &used_in, &known_transports, None);
                if o.poll.is_some() {
                    cx.error(*file, &at.key("poll"), "`poll` is a setting of the popup transport, not of a rule")
                        .notes
                        .push("set it under the transport's `offline`".into());
                }
                if !rule.targets.iter().any(|t| transports.get(&t.transport).is_some_and(|t| t.kind() == "messenger")) {
                    let d = Diagnostic::at(*file, &at, format!("{used_in} sends no popups: `offline` does nothing"))
                        .with_note(
                            "`offline` keeps popups for people who are nowhere; add a messenger transport to `via`",
                        );
                    cx.diags.push(d);
                    cx.diags.last_mut().expect("pushed").level = super::diag::Level::Warning;
                }
            }
            if rule.repeat_interval.is_zero() {
                cx.error(*file, &path.key("repeat_interval"), "`repeat_interval` must be more than 0s")
                    .notes
                    .push("it is how long a still-firing alert stays quiet; e.g. 4h".into());
            }
            if let Some(tpl) = &r.template {
                if let Some(title) = &tpl.title {
                    rule.has_title = true;
                    let res = templates.add(format!("rule/{}/title", r.name), title.raw.clone());
                    template_error(&mut cx, *file, &path.key("template").key("title"), res);
                }
                if let Some(text) = &tpl.text {
                    rule.has_text = true;
                    let res = templates.add(format!("rule/{}/text", r.name), text.raw.clone());
                    template_error(&mut cx, *file, &path.key("template").key("text"), res);
                }
                if let Some(html) = &tpl.html {
                    rule.has_html = true;
                    let res = templates.add(format!("rule/{}/html", r.name), html.raw.clone());
                    template_error(&mut cx, *file, &path.key("template").key("html"), res);
                }
            }
            if rule.matcher.is_catch_all() && !rule.continue_matching && catch_all.is_none() {
                catch_all = Some(r.name.clone());
            }
            rules.push(Arc::new(rule));
        }
    }

    // References in rules and notices that have other errors.
    for (file, f) in files {
        for item in &f.partial {
            let path = YamlPath::root().key(item.section).index(item.index);
            let kind = if item.section == "rules" { "rule" } else { "notice" };
            let used_in = format!("{kind} `{}`", item.name);
            let entries: Vec<(usize, &RecipientsConfig)> = item.notify.iter().map(|(j, e)| (*j, e)).collect();
            compile_entries(
                &mut cx,
                &entries,
                *file,
                &path.key("notify"),
                &used_in,
                &known_subscribers,
                &known_groups,
                &known_transports,
            );
            for (key, names) in [("mute_during", &item.mute_during), ("active_during", &item.active_during)] {
                if let Some(names) = names {
                    schedule_refs(&mut cx, names, &known_schedules, *file, &path.key(key), &used_in);
                }
            }
        }
    }

    let mut silences = Vec::new();
    for (file, f) in files {
        for (i, s) in &f.silences {
            let path = YamlPath::root().key("silences").index(*i);
            check_matcher(&mut cx, &s.matcher, *file, &path.key("match"));
            if let Some(starts) = &s.starts
                && starts.value >= s.ends.value
            {
                cx.error(*file, &path.key("ends"), "the silence ends before it starts");
            }
            silences.push(Silence {
                id: format!("silence#{}", silences.len() + 1),
                matcher: compile_matcher(&s.matcher),
                matchers: describe_matcher(&s.matcher),
                starts: s.starts.as_ref().map(|t| t.value),
                ends: s.ends.value,
                comment: s.comment.clone(),
                created_by: None,
                created_at: None,
            });
        }
    }

    let mut notices = Vec::new();
    for (file, f) in files {
        for (i, n) in &f.notices {
            let path = YamlPath::root().key("notices").index(*i);
            let used_in = format!("notice `{}`", n.name);
            let targets = compile_targets(
                &mut cx,
                &n.notify,
                *file,
                &path.key("notify"),
                &used_in,
                &known_subscribers,
                &known_groups,
                &known_transports,
            );
            let mut offsets: Vec<Duration> = n.remind.iter().map(|d| d.value).filter(|d| !d.is_zero()).collect();
            if n.at_time.unwrap_or(true) {
                offsets.push(Duration::ZERO);
            }
            offsets.sort_by(|a, b| b.cmp(a));
            offsets.dedup();
            if offsets.is_empty() {
                cx.error(*file, &path.key("at_time"), "this notice would never be sent")
                    .notes
                    .push("set `at_time: true` or give `remind` offsets".into());
            }
            let notice = Notice {
                name: n.name.clone(),
                when: crate::notices::When::Cron(Box::new(n.cron.value.clone())),
                tz: n.timezone.as_ref().map_or(chrono_tz::UTC, |t| t.value),
                offsets,
                targets,
                set: None,
            };
            let res = templates.add(notice.template_name(), n.message.raw.clone());
            template_error(&mut cx, *file, &path.key("message"), res);
            notices.push(Arc::new(notice));
        }
    }

    let transport_info: BTreeMap<String, TransportInfo> = transports
        .iter()
        .map(|(id, t)| {
            let html = match t {
                model::TransportConfig::Email(e) => {
                    e.html.unwrap_or(false) || e.template.as_ref().is_some_and(|t| t.html.is_some())
                }
                _ => false,
            };
            let offline = match t {
                model::TransportConfig::Messenger(m) => m.offline.as_ref().and_then(|o| {
                    let o_ = &transport_origins[id];
                    let used_in = format!("transport `{id}`");
                    compile_offline(&mut cx, o, o_.file, &o_.path.key("offline"), &used_in, &known_transports, Some(id))
                }),
                _ => None,
            };
            let max_age = crate::transport::retry_policy(t).max_age;
            (id.clone(), TransportInfo { kind: t.kind(), html, offline, max_age })
        })
        .collect();
    // Acknowledgements come back to one port: a second transport taking
    // them would need a second listener for no gain.
    let mut with_acks = Vec::new();
    for (id, t) in &transports {
        if let model::TransportConfig::Messenger(m) = t
            && m.acks.is_some()
        {
            let o = &transport_origins[id];
            if let Some(first) = with_acks.first() {
                let d = Diagnostic::at(
                    o.file,
                    &o.path.key("acks"),
                    format!("transport `{first}` already takes acknowledgements"),
                )
                .with_note("one port takes the acknowledgements of every popup: set `acks` on one messenger transport");
                cx.diags.push(d);
            }
            with_acks.push(id.clone());
        }
    }
    let budgets = compile_budgets(&transports, &subscribers, &groups);
    let paths: Vec<PathBuf> =
        files.iter().map(|(f, _)| sources.files()[*f].path().map(PathBuf::from).unwrap_or_default()).collect();
    if let Some(q) = section.event_queue
        && q == 0
    {
        cx.error(*main_file, &YamlPath::root().key("alerter").key("event_queue"), "`event_queue` must be at least 1");
    }
    let api = compile_api(&mut cx, *main_file, main.api.as_ref(), base);
    let hash = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for f in sources.files() {
            h.update((f.text().len() as u64).to_le_bytes());
            h.update(f.text().as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    };
    Some(Config {
        name: section.name.clone().unwrap_or_else(hostname),
        workgroup: section.workgroup.clone().unwrap_or_else(|| "WORKGROUP".to_string()),
        state_dir: section.state_dir.clone().unwrap_or_else(default_state_dir),
        retention: section.retention.as_ref().map_or(DEFAULT_RETENTION, |d| d.value),
        timezone: section.timezone.as_ref().map_or_else(system_timezone, |t| t.value),
        plugin_dirs,
        sources: source_specs,
        plugins: Arc::new(plugin_set),
        transports,
        transport_info,
        budgets: Arc::new(budgets),
        subscribers,
        groups,
        schedules,
        rules,
        silences,
        notices,
        templates: Arc::new(templates),
        files: paths,
        hash,
        api,
    })
}

/// Every budget: the holders' own (subscribers by id, groups as `@id`),
/// and per person-facing transport its class and its own budget or the
/// class default. Transports read by machines get none, so no budget can
/// reach them.
fn compile_budgets(
    transports: &IndexMap<String, model::TransportConfig>,
    subscribers: &IndexMap<String, model::SubscriberConfig>,
    groups: &IndexMap<String, model::GroupConfig>,
) -> Budgets {
    let own = |b: &Option<model::BudgetConfig>| {
        b.as_ref().map(|b| Allowances {
            popups: b.popups.as_ref().map(|a| a.value),
            mails: b.mails.as_ref().map(|a| a.value),
        })
    };
    let mut holders = HashMap::new();
    for (id, s) in subscribers {
        if let Some(a) = own(&s.budget) {
            holders.insert(id.clone(), a);
        }
    }
    for (id, g) in groups {
        if let Some(a) = own(&g.budget) {
            holders.insert(format!("@{id}"), a);
        }
    }
    let transports = transports
        .iter()
        .filter_map(|(id, t)| {
            let (class, allowance) = match t {
                model::TransportConfig::Messenger(m) => {
                    (Class::Popups, Some(m.budget.as_ref().map_or(Allowance::Limited(DEFAULT_POPUPS), |b| b.value)))
                }
                model::TransportConfig::Email(e) => (Class::Mails, e.budget.as_ref().map(|b| b.value)),
                model::TransportConfig::Log { .. }
                | model::TransportConfig::Webhook(_)
                | model::TransportConfig::Alertmanager(_) => return None,
            };
            Some((id.clone(), TransportBudget { class, allowance }))
        })
        .collect();
    Budgets { holders, transports }
}

/// The system's time zone: `TZ` when it names one, else the zone
/// /etc/localtime links to, else UTC.
pub fn system_timezone() -> chrono_tz::Tz {
    let from_env = std::env::var("TZ").ok().and_then(|tz| tz.trim_start_matches(':').parse().ok());
    from_env
        .or_else(|| iana_time_zone::get_timezone().ok().and_then(|name| name.parse().ok()))
        .unwrap_or(chrono_tz::UTC)
}

/// Checks the `api:` section: a TCP address that parses, plain HTTP only
/// on loopback, TLS only with an address. Files are read when the server
/// is built, not here (loading has no side effects and reads no secrets
/// it does not need).
fn compile_api(cx: &mut Ctx<'_>, file: usize, api: Option<&model::ApiSection>, base: Option<&Path>) -> ApiSettings {
    let Some(api) = api else {
        return ApiSettings {
            socket: None,
            socket_group: None,
            listen: None,
            tls: None,
            tokens: Vec::new(),
            users: Vec::new(),
            others: Some(alerter_api::Scope::Read),
            metrics_listen: super::DEFAULT_METRICS_LISTEN.parse().ok(),
            metrics_token: false,
            console: true,
        };
    };
    let at = |key: &str| YamlPath::root().key("api").key(key);
    let listen = api.listen.as_ref().and_then(|l| match l.parse::<std::net::SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.error(file, &at("listen"), format!("`{l}` is not an address and port"))
                .notes
                .push("write it as `127.0.0.1:9310` or `[::1]:9310`".into());
            None
        }
    });
    if let Some(a) = listen
        && !a.ip().is_loopback()
        && api.tls.is_none()
    {
        cx.error(
            file,
            &at("listen"),
            format!("`{a}` is not a loopback address, and plain HTTP would carry tokens in the clear"),
        )
        .notes
        .push("add `tls: { cert_file: ..., key_file: ... }`, or listen on 127.0.0.1".into());
    }
    let metrics_listen = match api.metrics_listen.as_deref() {
        None => super::DEFAULT_METRICS_LISTEN.parse().ok(),
        Some("off") => None,
        Some(l) => match l.parse::<std::net::SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                cx.error(file, &at("metrics_listen"), format!("`{l}` is not an address and port"))
                    .notes
                    .push("write it as `127.0.0.1:9311`, or `off`".into());
                None
            }
        },
    };
    if api.tls.is_some() && api.listen.is_none() {
        cx.diags.push(
            Diagnostic::warning(
                Place::Path { file, path: at("tls"), target: DiagTarget::Key },
                "`tls` has no effect without `listen`",
            )
            .with_note("the Unix socket needs no TLS; set `listen` to serve the API over TCP"),
        );
    }
    ApiSettings {
        socket: api.socket.as_ref().map(|p| relative_to(base, p)),
        socket_group: api.socket_group.clone(),
        listen,
        tls: api.tls.as_ref().map(|t| (relative_to(base, &t.cert_file), relative_to(base, &t.key_file))),
        tokens: api.tokens.iter().map(|(name, t)| (name.clone(), relative_to(base, &t.file), t.scope)).collect(),
        users: api.users.iter().map(|(u, s)| (u.clone(), *s)).collect(),
        others: api.others.map_or(Some(alerter_api::Scope::Read), |o| o.scope()),
        metrics_listen,
        metrics_token: api.metrics_token.unwrap_or(false),
        console: api.console.unwrap_or(true),
    }
}

/// `mounts[1].path` as a YAML path.
fn parse_dotted(s: &str) -> YamlPath {
    let mut path = YamlPath::root();
    for part in s.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        if !name.is_empty() {
            path = path.key(name);
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse::<usize>() {
                path = path.index(i);
            }
        }
    }
    path
}

/// A diagnostic that applies to the configuration as a whole.
pub fn general(message: impl Into<String>) -> Diagnostic {
    Diagnostic::error(Place::None, message)
}

#[cfg(test)]
mod tests {
    use super::super::{load_for_delivery, load_str};
    use super::*;
    use crate::transport::load_options;

    const GROUP: &str = r#"
transports:
  popup: { type: messenger }
  mail: { type: email, relay: localhost, tls: none, from: "Alerter <alerter@example.org>" }
  file: { type: log, path: "-" }
subscribers:
  alice: { machine: ALICE-PC }
  bob: { email: bob@example.org }
groups:
  admins: { members: [alice, bob] }
rules:
  - name: r
    notify: [{ groups: [admins], workgroup: true, via: [popup, mail, file] }]
"#;

    fn ids(t: &Target) -> Vec<&str> {
        t.recipients.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn each_transport_gets_the_recipients_it_can_reach() {
        let loaded = load_str("a.yaml", GROUP, None, &load_options(&PluginRegistry::empty())).unwrap();
        let targets = &loaded.config.rules[0].targets;
        let by = |t: &str| targets.iter().find(|x| x.transport == t).unwrap();
        assert_eq!(ids(by("popup")), ["alice", "*"], "machines and the workgroup");
        assert_eq!(ids(by("mail")), ["bob"], "addresses only");
        assert_eq!(ids(by("file")), ["alice", "bob", "*"], "a log records everyone");
        let warned: Vec<&str> = loaded.warnings.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(warned.len(), 3, "{warned:?}");
    }

    #[test]
    fn someone_named_through_a_group_and_directly_is_told_once_under_their_own_budget() {
        let text = GROUP
            .replace(
                "groups: [admins], workgroup: true, via: [popup, mail, file]",
                "groups: [admins], via: [popup, file]",
            )
            .replace(
                "    notify: [{ groups: [admins], via: [popup, file] }]",
                "    notify: [{ groups: [admins], via: [popup, file] }, { subscribers: [alice], via: [popup] }]",
            )
            .replace("  popup: { type: messenger }", "  popup: { type: messenger, budget: 3 per 1m }")
            .replace("  alice: { machine: ALICE-PC }", "  alice: { machine: ALICE-PC, budget: { popups: unlimited } }")
            .replace(
                "  admins: { members: [alice, bob] }",
                "  admins: { members: [alice, bob], budget: { popups: 1 per 1h } }",
            );
        let loaded = load_str("a.yaml", &text, None, &load_options(&PluginRegistry::empty())).unwrap();
        let targets = &loaded.config.rules[0].targets;
        let by = |t: &str| targets.iter().find(|x| x.transport == t).unwrap();
        let popup: Vec<(&str, Option<&str>)> =
            by("popup").recipients.iter().map(|r| (r.id.as_str(), r.group.as_deref())).collect();
        assert_eq!(popup, [("alice", None)], "once, as herself");
        let file: Vec<(&str, Option<&str>)> =
            by("file").recipients.iter().map(|r| (r.id.as_str(), r.group.as_deref())).collect();
        assert_eq!(file, [("alice", Some("admins")), ("bob", Some("admins"))]);
        let b = &loaded.config.budgets;
        assert_eq!(b.limit("alice", "popup"), None, "her own: unlimited");
        assert_eq!(b.limit("@admins", "popup").map(|(_, l)| l.to_string()), Some("1 per 1h".into()));
        assert_eq!(b.limit("bob", "popup").map(|(_, l)| l.to_string()), Some("3 per 1m".into()), "the transport's");
        assert_eq!(b.limit("alice", "file"), None, "a log has none");
        assert_eq!(b.limit("bob", "mail"), None, "mails: none by default");
    }

    #[test]
    fn a_transport_that_reaches_nobody_of_an_entry_gets_no_target() {
        let text = GROUP.replace(
            "groups: [admins], workgroup: true, via: [popup, mail, file]",
            "subscribers: [alice], via: [popup, mail]",
        );
        let loaded = load_str("a.yaml", &text, None, &load_options(&PluginRegistry::empty())).unwrap();
        let targets = &loaded.config.rules[0].targets;
        assert_eq!(targets.len(), 1, "{targets:?}");
        assert_eq!(targets[0].transport, "popup");
        let nobody = GROUP.replace(
            "groups: [admins], workgroup: true, via: [popup, mail, file]",
            "subscribers: [alice], via: [mail]",
        );
        let errors = load_str("a.yaml", &nobody, None, &load_options(&PluginRegistry::empty())).unwrap_err();
        assert_eq!(errors.error_count(), 1, "{errors}");
        assert!(errors.diagnostics[0].message.contains("reaches nobody"), "{errors}");
    }

    #[test]
    fn relative_plugin_dirs_belong_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plugins")).unwrap();
        let text = "alerter: { plugin_dirs: [plugins, /abs/plugins] }\n";
        let loaded = load_str("a.yaml", text, Some(dir.path()), &load_options(&PluginRegistry::empty())).unwrap();
        assert_eq!(loaded.config.plugin_dirs, [dir.path().join("plugins"), PathBuf::from("/abs/plugins")]);
        // Only the absolute one is missing; the relative one was found next to the file.
        assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
        assert!(loaded.warnings[0].message.contains("/abs/plugins does not exist"));
    }

    #[test]
    fn delivery_loading_reads_no_plugin_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        let with_dirs = "alerter: { plugin_dirs: [/nonexistent] }\nsources:\n  ups: { type: ups }\n";
        std::fs::write(&path, with_dirs).unwrap();
        let loaded = load_for_delivery(Some(&path), &load_options(&PluginRegistry::empty())).unwrap();
        assert!(loaded.config.sources.is_empty(), "an unchecked source is not one to run");
        assert!(
            super::super::load(Some(&path), &load_options(&PluginRegistry::empty())).is_err(),
            "a full load looks for it"
        );
        // Without plugin directories nothing could provide it.
        std::fs::write(&path, "sources:\n  ups: { type: ups }\n").unwrap();
        assert!(load_for_delivery(Some(&path), &load_options(&PluginRegistry::empty())).is_err());
    }

    /// A popup transport's `offline` and a rule's override become each
    /// popup's plan: its deadline (the rule's wait, else the transport's,
    /// else its `max_age`) and its fallback, rendered with the mail
    /// transport's own template, to those the mail transport reaches.
    #[test]
    fn offline_settings_give_each_popup_its_deadline_and_its_rendered_fallback() {
        let text = r#"
transports:
  popup: { type: messenger, offline: { wait: 30m, then: mail, poll: 10s }, retry: { max_age: 2h } }
  bare: { type: messenger }
  mail:
    type: email
    relay: 127.0.0.1
    from: alerter@example.org
    template: { title: "MAIL {{ summary }}" }
subscribers:
  alice: { user: alice, email: alice@example.org }
  bob: { machine: BOB-PC }
rules:
  - name: quick
    match: { labels: { r: quick } }
    offline: { wait: 5m }
    notify: [{ subscribers: [alice, bob], workgroup: true, via: [popup] }]
  - name: plain
    match: { labels: { r: plain } }
    notify: [{ subscribers: [alice], via: [popup, bare, mail] }]
  - name: bare-kept
    match: { labels: { r: bare } }
    offline: { then: mail }
    notify: [{ subscribers: [alice], via: [bare] }]
"#;
        let loaded = load_str("a.yaml", text, None, &load_options(&PluginRegistry::empty())).unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z").unwrap().to_utc();
        let mut engine =
            alerter_engine::Engine::new(loaded.config.engine_config(), Vec::new(), Default::default(), now);
        for r in ["quick", "plain", "bare"] {
            let e = crate::event::Event::new("app", "web01", crate::event::Severity::Warning, format!("disk {r}"), now)
                .with_label("r", r);
            engine.handle(crate::event::Inbound::Event(e), now);
        }
        let notes = engine.take_turn().notifications;
        let find = |rule: &str, t: &str| notes.iter().find(|n| n.rule == rule && n.transport == t).unwrap();
        let minutes = |n: &crate::notify::Notification| (n.offline.as_ref().unwrap().until - now).num_minutes();

        let quick = find("quick", "popup");
        assert_eq!(minutes(quick), 5, "the rule's wait");
        let f = quick.offline.as_ref().unwrap().then.as_ref().expect("the transport's fallback");
        assert_eq!(f.transport, "mail");
        assert_eq!(f.title, "MAIL disk quick", "rendered for the mail transport");
        let ids: Vec<&str> = f.recipients.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["alice"], "bob has no address, the workgroup none either");
        assert_ne!(f.id, quick.id);

        assert_eq!(minutes(find("plain", "popup")), 30, "the transport's wait");
        assert!(find("plain", "bare").offline.is_none(), "a transport without `offline`");
        assert!(find("plain", "mail").offline.is_none(), "not a popup");
        let bare = find("bare-kept", "bare");
        assert_eq!(minutes(bare), 60, "no wait given: the transport's max_age");
        assert_eq!(bare.offline.as_ref().unwrap().then.as_ref().unwrap().transport, "mail");
        assert_eq!(crate::transport::retry_policy(&loaded.config.transports["popup"]).poll, Duration::from_secs(10));
    }

    /// Each wrong `offline` setting is reported, all of them at once.
    #[test]
    fn wrong_offline_settings_are_all_reported() {
        let text = r#"
transports:
  popup: { type: messenger, offline: { wait: 0s, then: popup } }
  other: { type: messenger, offline: { then: popup2 } }
  third: { type: messenger, offline: { then: popup, poll: 0s } }
  mail: { type: email, relay: 127.0.0.1, from: alerter@example.org }
subscribers:
  alice: { user: alice, email: alice@example.org }
rules:
  - name: r
    offline: { then: mail, poll: 5s }
    notify: [{ subscribers: [alice], via: [popup] }]
  - name: m
    offline: { wait: 5m }
    notify: [{ subscribers: [alice], via: [mail] }]
"#;
        let err = load_str("a.yaml", text, None, &load_options(&PluginRegistry::empty())).unwrap_err();
        let all: Vec<String> = err.diagnostics.iter().map(|d| d.message.clone()).collect();
        for want in [
            "`wait` must be more than 0s",
            "a popup transport cannot fall back to itself",
            "undefined transport `popup2` used in transport `other`",
            "`popup` is a popup transport: the fallback must reach them another way",
            "`poll` must be more than 0s",
            "`poll` is a setting of the popup transport, not of a rule",
            "rule `m` sends no popups: `offline` does nothing",
        ] {
            assert!(all.iter().any(|m| m.contains(want)), "{want:?} not in {all:#?}");
        }
    }
}
