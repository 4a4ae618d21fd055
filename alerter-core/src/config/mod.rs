//! Configuration: reading the YAML files, reporting every problem with its
//! position, and compiling what is valid into the runtime [`Config`].
//!
//! The pipeline, per file: parse (serde_norway), expand `${VAR}` in string
//! values ([`expand`]), check structure against the schema generated from
//! [`model`] ([`validate`]), deserialize into [`model::ConfigFile`]. Then for
//! the whole set of files: merge, check references and semantics, compile
//! ([`compile`]). Problems are collected as [`diag::Diagnostic`]s at every
//! stage; nothing stops at the first one. Loading reads the config files and
//! files named by `*_file` keys, and nothing else: it creates no directories
//! and opens no sockets, so `alerter check` and SIGHUP reloads are safe.

pub mod compile;
pub mod diag;
pub mod expand;
pub mod model;
pub mod path;
pub mod source;
pub mod types;
pub mod validate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;

use self::diag::{Diagnostic, Level, Place, YamlPath};
use self::source::{SourceFile, SourceMap};
use crate::notices::Notice;
use crate::notify::{RenderCx, TransportInfo};
use crate::plugin::{PluginRegistry, PluginSet, SourceSpec};
use crate::rules::{Rule, Silence};
use crate::schedule::Schedule;
use crate::template::Templates;

/// The shipped default configuration, embedded so `alerter run` works with no file.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/alerter.yaml");

/// Display name of the embedded default in diagnostics.
pub const EMBEDDED_NAME: &str = "<embedded default config>";

/// How to load.
pub struct LoadOptions<'a> {
    /// Built-in plugins and how to run the others.
    pub plugins: &'a PluginRegistry,
    /// Environment for `${VAR}`; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
    /// The transports' own checks of their settings
    /// (`alerter_core::transport::check_settings`).
    pub check_transport: TransportCheck,
}

/// A transport's check of its settings beyond their shape: problems, each
/// with the path below the transport's entry. Transports own these checks;
/// the config only reports them where they belong, so it never depends on
/// a transport.
pub type TransportCheck = fn(&model::TransportConfig) -> Vec<(YamlPath, String)>;

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions").field("env", &self.env).finish_non_exhaustive()
    }
}

/// What loading does with the `sources` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceCheck {
    /// Scan the plugin directories, resolve every source to its plugin and
    /// have the plugin check its settings (third-party plugins in a child
    /// process). For everything that runs or validates sources: `run`,
    /// `check`, reloads, `alerter test`.
    Full,
    /// Built-in plugins only: no plugin directory is read and no plugin
    /// process is started. Sources of built-in types are checked as usual;
    /// a source of another type is accepted unchecked when plugin
    /// directories are configured (a plugin there may provide it) and is
    /// left out of [`Config::sources`]. For commands that use only the
    /// delivery side of a config (`alerter send`), which must work while a
    /// third-party plugin is broken or its directory is missing.
    BuiltinOnly,
}

/// A validated, compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// This machine's name in notifications.
    pub name: String,
    pub workgroup: String,
    pub state_dir: PathBuf,
    /// How long history is kept (`alerter.retention`).
    pub retention: std::time::Duration,
    /// `alerter.timezone`, or the system's.
    pub timezone: chrono_tz::Tz,
    /// Resolved: relative ones against the main config file's directory.
    pub plugin_dirs: Vec<PathBuf>,
    /// Sources, resolved to their plugins.
    pub sources: IndexMap<String, SourceSpec>,
    /// The plugins found for this configuration (and those refused).
    pub plugins: Arc<PluginSet>,
    pub transports: IndexMap<String, model::TransportConfig>,
    pub transport_info: BTreeMap<String, TransportInfo>,
    /// Budgets of holders and person-facing transports.
    pub budgets: Arc<alerter_engine::budget::Budgets>,
    pub subscribers: IndexMap<String, model::SubscriberConfig>,
    pub groups: IndexMap<String, model::GroupConfig>,
    pub schedules: IndexMap<String, Arc<Schedule>>,
    pub rules: Vec<Arc<Rule>>,
    pub silences: Vec<Silence>,
    pub notices: Vec<Arc<Notice>>,
    pub templates: Arc<Templates>,
    /// Every file read, main file first (empty path for the embedded default).
    pub files: Vec<PathBuf>,
    /// SHA-256 of the files' text as read (hex), for `alerter status`.
    pub hash: String,
    /// The control API (`api:`).
    pub api: ApiSettings,
}

/// The `api:` section, checked, with paths resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// The socket; `None` for the default (decided where it is bound,
    /// from the environment and the state directory).
    pub socket: Option<PathBuf>,
    pub socket_group: Option<String>,
    pub listen: Option<std::net::SocketAddr>,
    /// Certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Name, file, scope.
    pub tokens: Vec<(String, PathBuf, alerter_api::Scope)>,
    /// Local user (name or uid) and scope.
    pub users: Vec<(String, alerter_api::Scope)>,
    pub others: Option<alerter_api::Scope>,
    /// Where `/metrics` is served; `None`: off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    pub metrics_token: bool,
    /// Whether the TCP listener serves the web console too.
    pub console: bool,
}

/// Where metrics are served unless the config says otherwise.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9311";

impl ApiSettings {
    /// The socket path: the configured one, else `api.sock` in systemd's
    /// `$RUNTIME_DIRECTORY`, else in the state directory.
    pub fn socket_path(&self, state_dir: &Path) -> PathBuf {
        if let Some(p) = &self.socket {
            return p.clone();
        }
        if let Some(dir) = systemd_directory("RUNTIME_DIRECTORY") {
            return dir.join(API_SOCKET);
        }
        state_dir.join(API_SOCKET)
    }
}

/// The file name of the API socket in its directory.
pub const API_SOCKET: &str = "api.sock";

impl Config {
    /// What the engine needs of this configuration.
    pub fn engine_config(&self) -> alerter_engine::EngineConfig {
        alerter_engine::EngineConfig {
            name: self.name.clone(),
            workgroup: self.workgroup.clone(),
            rules: self.rules.clone(),
            silences: self.silences.clone(),
            notices: self.notices.clone(),
            templates: self.templates.clone(),
            transports: self.transport_info.clone(),
            retention: self.retention,
            budgets: self.budgets.clone(),
            timezone: self.timezone,
        }
    }

    pub fn render_cx(&self) -> RenderCx<'_> {
        RenderCx {
            templates: &self.templates,
            transports: &self.transport_info,
            alerter_name: &self.name,
            workgroup: &self.workgroup,
        }
    }
}

/// A configuration that loaded, with any warnings.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
    pub sources: SourceMap,
}

/// A configuration that did not load: every problem found.
#[derive(Debug)]
pub struct ConfigErrors {
    pub diagnostics: Vec<Diagnostic>,
    pub sources: SourceMap,
    /// What the errors mean for the admin, after the count.
    pub verdict: &'static str,
}

/// The verdict of a configuration with errors.
pub const NOT_APPLIED: &str = "configuration not applied";

impl ConfigErrors {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.level == Level::Error).count()
    }

    /// The rustc-style report.
    pub fn render(&self, color: bool) -> String {
        diag::render_with(&self.diagnostics, &self.sources, color, self.verdict)
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(false))
    }
}

impl std::error::Error for ConfigErrors {}

/// The JSON Schema of a config file, as shipped in `config/alerter.schema.json`.
pub fn json_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = schemars::schema_for!(model::ConfigFile);
        serde_json::to_value(schema).expect("a schema is JSON")
    })
}

/// The JSON Schema of any document type (test files use this too).
pub fn json_schema_for<T: schemars::JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
}

/// The schema as pretty JSON with a trailing newline.
pub fn json_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(json_schema()).expect("a schema is JSON");
    s.push('\n');
    s
}

/// Loads the config at `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>, opts: &LoadOptions<'_>) -> Result<Loaded, ConfigErrors> {
    load_with(path, opts, SourceCheck::Full)
}

/// [`load`] for commands that only deliver (`alerter send`): see
/// [`SourceCheck::BuiltinOnly`]. The result must not be used to run sources.
pub fn load_for_delivery(path: Option<&Path>, opts: &LoadOptions<'_>) -> Result<Loaded, ConfigErrors> {
    load_with(path, opts, SourceCheck::BuiltinOnly)
}

fn load_with(path: Option<&Path>, opts: &LoadOptions<'_>, check: SourceCheck) -> Result<Loaded, ConfigErrors> {
    let mut sources = SourceMap::default();
    let main = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => sources.add(SourceFile::new(p.display().to_string(), Some(p.to_path_buf()), text)),
            Err(e) => {
                return Err(ConfigErrors {
                    diagnostics: vec![
                        Diagnostic::error(Place::None, format!("cannot read config file {}: {e}", p.display()))
                            .with_note("pass the right file with -c FILE, or leave -c out to use the embedded default"),
                    ],
                    sources,
                    verdict: NOT_APPLIED,
                });
            }
        },
        None => sources.add(SourceFile::new(EMBEDDED_NAME, None, DEFAULT_CONFIG.to_string())),
    };
    load_files(sources, main, opts, check)
}

/// Loads config text as if read from a file called `name` (for tests and
/// `alerter test`); includes are resolved relative to `base_dir`.
pub fn load_str(
    name: &str,
    text: &str,
    base_dir: Option<&Path>,
    opts: &LoadOptions<'_>,
) -> Result<Loaded, ConfigErrors> {
    let mut sources = SourceMap::default();
    let path = base_dir.map(|d| d.join(name));
    let main = sources.add(SourceFile::new(name, path, text.to_string()));
    load_files(sources, main, opts, SourceCheck::Full)
}

fn load_files(
    mut sources: SourceMap,
    main: usize,
    opts: &LoadOptions<'_>,
    check: SourceCheck,
) -> Result<Loaded, ConfigErrors> {
    let mut diags = Vec::new();
    let mut parsed: Vec<(usize, ParsedFile)> = Vec::new();
    if let Some(file) = parse_one(&sources, main, true, opts, &mut diags) {
        let includes = file.include.clone();
        parsed.push((main, file));
        let base = sources.files()[main]
            .path()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        for (i, pattern) in includes.iter().enumerate() {
            let at = YamlPath::root().key("include").index(i);
            for path in expand_include(&base, pattern, main, &at, &mut diags) {
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        let id = sources.add(SourceFile::new(path.display().to_string(), Some(path.clone()), text));
                        if let Some(f) = parse_one(&sources, id, false, opts, &mut diags) {
                            parsed.push((id, f));
                        }
                    }
                    Err(e) => diags.push(Diagnostic::at(
                        main,
                        &at,
                        format!("cannot read included file {}: {e}", path.display()),
                    )),
                }
            }
        }
    }
    let config = compile::compile(&parsed, &sources, opts.plugins, check, opts.check_transport, &mut diags);
    diags.sort_by_key(|d| d.level);
    let has_errors = diags.iter().any(|d| d.level == Level::Error);
    match config {
        Some(config) if !has_errors => Ok(Loaded { config, warnings: diags, sources }),
        _ => Err(ConfigErrors { diagnostics: diags, sources, verdict: NOT_APPLIED }),
    }
}

fn expand_include(base: &Path, pattern: &str, main: usize, at: &YamlPath, diags: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
    let full_str = full.to_string_lossy().to_string();
    let is_glob = pattern.contains(['*', '?', '[']);
    match glob::glob(&full_str) {
        Ok(paths) => {
            let mut found: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
            found.sort();
            if found.is_empty() && !is_glob {
                diags.push(
                    Diagnostic::at(main, at, format!("included file {} does not exist", full.display()))
                        .with_note("a glob pattern such as rules.d/*.yaml may match nothing; a plain path must exist"),
                );
            }
            found
        }
        Err(e) => {
            diags.push(Diagnostic::at(main, at, format!("`{pattern}` is not a valid glob pattern: {e}")));
            Vec::new()
        }
    }
}

/// A YAML syntax error as a diagnostic. serde_norway reports a duplicate
/// key at the start of its mapping; this points at the second occurrence
/// of the key instead, which is the line to fix.
pub fn syntax_error(src: &SourceFile, file: usize, message: &str, pos: Option<(usize, usize)>) -> Diagnostic {
    if let Some((context, key)) = message
        .split_once(": duplicate entry with key ")
        .or_else(|| message.strip_prefix("duplicate entry with key ").map(|k| ("", k)))
    {
        let key = key.trim_matches('"');
        let start = pos.and_then(|(l, c)| src.offset_of(l, c)).unwrap_or(0);
        let text = &src.text()[start..];
        let mut seen = 0;
        let mut offset = None;
        for (i, line) in text.split_inclusive('\n').scan(0usize, |acc, l| {
            let at = *acc;
            *acc += l.len();
            Some((at, l))
        }) {
            let trimmed = line.trim_start().trim_start_matches("- ");
            let rest = trimmed.strip_prefix(key).or_else(|| trimmed.strip_prefix(&format!("\"{key}\"")));
            if rest.is_some_and(|r| r.trim_start().starts_with(':')) {
                seen += 1;
                if seen == 2 {
                    offset = Some(start + i + (line.len() - trimmed.len()));
                    break;
                }
            }
        }
        let place = match offset {
            Some(o) => {
                let (line, column) = src.line_col(o);
                Place::Position { file, line, column }
            }
            None => pos.map_or(Place::File(file), |(line, column)| Place::Position { file, line, column }),
        };
        let within = if context.is_empty() { String::new() } else { format!(" in {context}") };
        return Diagnostic::error(place, format!("duplicate key `{key}`{within}"))
            .with_note("each key may appear once in a mapping; remove one of them");
    }
    let place = match pos {
        Some((line, column)) => Place::Position { file, line, column },
        None => Place::File(file),
    };
    Diagnostic::error(place, format!("YAML syntax error: {message}"))
}

/// One file after parsing. Items that failed the structural checks are left
/// out, but their names are kept in `invalid`, so that the reference checks
/// still run on everything else without reporting "undefined" for a thing
/// that is defined, only wrongly.
#[derive(Debug, Default)]
pub struct ParsedFile {
    pub alerter: Option<model::AlerterSection>,
    pub api: Option<model::ApiSection>,
    pub include: Vec<String>,
    pub sources: IndexMap<String, model::SourceConfig>,
    pub transports: IndexMap<String, model::TransportConfig>,
    pub subscribers: IndexMap<String, model::SubscriberConfig>,
    pub groups: IndexMap<String, model::GroupConfig>,
    pub schedules: IndexMap<String, model::ScheduleConfig>,
    /// With their index in the file's list, for positions.
    pub rules: Vec<(usize, model::RuleConfig)>,
    pub silences: Vec<(usize, model::SilenceConfig)>,
    pub notices: Vec<(usize, model::NoticeConfig)>,
    /// Section name to the ids (or `name`s) of items with errors.
    pub invalid: HashMap<&'static str, HashSet<String>>,
    /// The references of rules and notices that have errors elsewhere, so
    /// a bad reference is reported in the same run as the other problem.
    pub partial: Vec<PartialItem>,
}

/// The readable reference fields of a rule or notice that has errors.
#[derive(Debug, Default)]
pub struct PartialItem {
    /// `rules` or `notices`.
    pub section: &'static str,
    pub index: usize,
    pub name: String,
    pub notify: Vec<(usize, model::RecipientsConfig)>,
    pub mute_during: Option<Vec<String>>,
    pub active_during: Option<Vec<String>>,
}

/// Parses, expands, validates and deserializes one file. `None` only when
/// the file is not YAML at all; otherwise whatever could be read, with the
/// problems in `diags`.
fn parse_one(
    sources: &SourceMap,
    file: usize,
    is_main: bool,
    opts: &LoadOptions<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<ParsedFile> {
    let src = &sources.files()[file];
    let before = diags.len();
    let mut value = match src.parse() {
        Ok(v) => v,
        Err((message, pos)) => {
            diags.push(syntax_error(src, file, &message, pos));
            return None;
        }
    };
    if value.is_null() {
        value = serde_norway::Value::Mapping(serde_norway::Mapping::new());
    }
    let lookup = |name: &str| match &opts.env {
        Some(env) => env.get(name).cloned(),
        None => std::env::var(name).ok(),
    };
    expand::expand_tree(&mut value, &YamlPath::root(), &lookup, &mut |path, msg| {
        diags.push(Diagnostic::at(file, path, msg));
    });
    if !is_main && let serde_norway::Value::Mapping(m) = &mut value {
        for key in ["alerter", "api", "include"] {
            if m.remove(key).is_some() {
                diags.push(
                        Diagnostic::at_key(file, &YamlPath::root().key(key), format!("`{key}` is only allowed in the main config file"))
                            .with_note("move it to the main file; included files may hold sources, transports, subscribers, groups, schedules, rules, silences and notices"),
                    );
            }
        }
    }
    let schema = json_schema();
    diags.extend(validate::validate(schema, schema, &value, file, &YamlPath::root()));
    let bad: Vec<YamlPath> = diags[before..]
        .iter()
        .map(|d| match &d.place {
            Place::Path { path, .. } => path.clone(),
            _ => YamlPath::root(),
        })
        .collect();
    Some(deserialize_resilient(value, &bad, file, diags))
}

/// Deserializes each item of each section on its own, skipping items under
/// any path in `bad`.
fn deserialize_resilient(
    value: serde_norway::Value,
    bad: &[YamlPath],
    file: usize,
    diags: &mut Vec<Diagnostic>,
) -> ParsedFile {
    use serde_norway::Value;
    let mut out = ParsedFile::default();
    let is_bad = |p: &YamlPath| bad.iter().any(|b| b.0.starts_with(&p.0) || p.0.starts_with(&b.0));
    let Value::Mapping(top) = value else { return out };
    fn item<T: serde::de::DeserializeOwned>(
        v: Value,
        path: &YamlPath,
        file: usize,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<T> {
        match serde_norway::from_value(v) {
            Ok(t) => Some(t),
            Err(e) => {
                // The validator should have caught anything serde rejects;
                // if not, report serde's own words rather than nothing.
                diags.push(Diagnostic::at(file, path, format!("invalid value: {e}")));
                None
            }
        }
    }
    fn name_of(v: &Value) -> Option<String> {
        v.get("name").and_then(Value::as_str).map(str::to_string)
    }
    for (k, v) in top {
        let Some(key) = k.as_str() else { continue };
        let path = YamlPath::root().key(key);
        macro_rules! map_section {
            ($field:ident, $name:literal) => {{
                if let Value::Mapping(m) = v {
                    for (id, item_value) in m {
                        let Some(id) = id.as_str().map(str::to_string) else { continue };
                        let p = path.key(id.clone());
                        if is_bad(&p) {
                            out.invalid.entry($name).or_default().insert(id);
                        } else if let Some(t) = item(item_value, &p, file, diags) {
                            out.$field.insert(id, t);
                        } else {
                            out.invalid.entry($name).or_default().insert(id);
                        }
                    }
                }
            }};
        }
        macro_rules! list_section {
            ($field:ident, $name:literal) => {{
                if let Value::Sequence(items) = v {
                    let items_copy = items.clone();
                    for (i, item_value) in items.into_iter().enumerate() {
                        let p = path.index(i);
                        let name = name_of(&item_value);
                        let parsed = if is_bad(&p) { None } else { item(item_value, &p, file, diags) };
                        match parsed {
                            Some(t) => out.$field.push((i, t)),
                            None => {
                                if let Some(n) = &name {
                                    out.invalid.entry($name).or_default().insert(n.clone());
                                }
                                out.partial.push(partial_item($name, i, name, &items_copy[i], &p, &is_bad));
                            }
                        }
                    }
                }
            }};
        }
        match key {
            "alerter" if !is_bad(&path) => out.alerter = item(v, &path, file, diags),
            "api" if !is_bad(&path) => out.api = item(v, &path, file, diags),
            "include" if !is_bad(&path) => out.include = item(v, &path, file, diags).unwrap_or_default(),
            "sources" => map_section!(sources, "sources"),
            "transports" => map_section!(transports, "transports"),
            "subscribers" => map_section!(subscribers, "subscribers"),
            "groups" => map_section!(groups, "groups"),
            "schedules" => map_section!(schedules, "schedules"),
            "rules" => list_section!(rules, "rules"),
            "silences" => list_section!(silences, "silences"),
            "notices" => list_section!(notices, "notices"),
            _ => {}
        }
    }
    out
}

/// Reads what can be read of a bad rule's or notice's references.
fn partial_item(
    section: &'static str,
    index: usize,
    name: Option<String>,
    value: &serde_norway::Value,
    path: &YamlPath,
    is_bad: &dyn Fn(&YamlPath) -> bool,
) -> PartialItem {
    let mut p = PartialItem {
        section,
        index,
        name: name.unwrap_or_else(|| format!("#{}", index + 1)),
        ..PartialItem::default()
    };
    let field = |key: &str| value.get(key).filter(|_| !is_bad(&path.key(key))).cloned();
    if let Some(serde_norway::Value::Sequence(entries)) = value.get("notify") {
        for (j, e) in entries.iter().enumerate() {
            if !is_bad(&path.key("notify").index(j))
                && let Ok(r) = serde_norway::from_value(e.clone())
            {
                p.notify.push((j, r));
            }
        }
    }
    p.mute_during = field("mute_during").and_then(|v| serde_norway::from_value(v).ok());
    p.active_during = field("active_during").and_then(|v| serde_norway::from_value(v).ok());
    p
}

/// `path` as named in a config file whose directory is `base`: relative
/// paths belong to the file that names them, not to the working directory
/// (which is `/` under systemd and means nothing to whoever wrote the file).
pub fn relative_to(base: Option<&Path>, path: &Path) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path.to_path_buf(),
    }
}

/// The plugin directories a config file names, read leniently: `alerter
/// plugins` must be able to list plugins (and say why one was refused) even
/// when the rest of the configuration does not load. Relative ones are
/// resolved against the file's directory, as the loader does.
pub fn plugin_dirs(path: Option<&Path>) -> Vec<PathBuf> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => DEFAULT_CONFIG.to_string(),
    };
    let Ok(value) = serde_norway::from_str::<serde_norway::Value>(&text) else { return Vec::new() };
    let dirs = value.get("alerter").and_then(|a| a.get("plugin_dirs")).and_then(|d| d.as_sequence());
    dirs.into_iter()
        .flatten()
        .filter_map(|d| d.as_str())
        .filter_map(|d| expand::expand_str(d, &|n| std::env::var(n).ok()).ok())
        .map(|d| relative_to(path.and_then(Path::parent), Path::new(&d)))
        .collect()
}

/// This machine's host name, for the default alerter name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_string())
}

/// A directory systemd made for the service (`STATE_DIRECTORY`,
/// `RUNTIME_DIRECTORY`, ...): it may pass several, colon-separated, and the
/// first is ours.
pub fn systemd_directory(var: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os(var).filter(|d| !d.is_empty())?;
    let first = dirs.to_string_lossy().split(':').next().unwrap_or_default().to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// The state directory when the config names none: systemd's
/// `$STATE_DIRECTORY`, else /var/lib/alerter for root, else the XDG state
/// directory, so that a user trying it out needs no privileges.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = systemd_directory("STATE_DIRECTORY") {
        return dir;
    }
    let is_root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if is_root.unwrap_or(false) {
        return PathBuf::from("/var/lib/alerter");
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(xdg).join("alerter");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/alerter"),
        None => PathBuf::from("/var/lib/alerter"),
    }
}
