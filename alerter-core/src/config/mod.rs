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
pub mod source;
pub mod types;
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use indexmap::IndexMap;

use self::diag::{Diagnostic, Level, Place, YamlPath};
use self::source::{SourceFile, SourceMap};
use crate::notices::Notice;
use crate::notify::{RenderCx, TransportInfo};
use crate::rules::{Rule, Silence};
use crate::schedule::Schedule;
use crate::template::Templates;

/// The shipped default configuration, embedded so `alerter run` works with no file.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/alerter.yaml");

/// Display name of the embedded default in diagnostics.
pub const EMBEDDED_NAME: &str = "<embedded default config>";

/// Source types known to the loader (plugins), and their validation.
pub trait SourceCatalog {
    /// Every source type that can be configured.
    fn types(&self) -> Vec<String>;
    /// Checks one source's plugin settings (the keys besides `type` and
    /// `enabled`); returns each problem with its path inside the settings.
    fn validate(&self, kind: &str, settings: &serde_json::Value) -> Vec<(YamlPath, String)>;
}

/// A catalog that knows no source types.
#[derive(Debug, Default)]
pub struct NoSources;

impl SourceCatalog for NoSources {
    fn types(&self) -> Vec<String> {
        Vec::new()
    }
    fn validate(&self, _: &str, _: &serde_json::Value) -> Vec<(YamlPath, String)> {
        Vec::new()
    }
}

/// How to load.
pub struct LoadOptions<'a> {
    pub catalog: &'a dyn SourceCatalog,
    /// Environment for `${VAR}`; `None` reads the process environment.
    pub env: Option<HashMap<String, String>>,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions { catalog: &NoSources, env: None }
    }
}

impl std::fmt::Debug for LoadOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions").field("env", &self.env).finish_non_exhaustive()
    }
}

/// A validated, compiled configuration.
#[derive(Debug)]
pub struct Config {
    /// This machine's name in notifications.
    pub name: String,
    pub workgroup: String,
    pub state_dir: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    pub event_queue: usize,
    pub sources: IndexMap<String, model::SourceConfig>,
    pub transports: IndexMap<String, model::TransportConfig>,
    pub transport_info: BTreeMap<String, TransportInfo>,
    pub subscribers: IndexMap<String, model::SubscriberConfig>,
    pub groups: IndexMap<String, model::GroupConfig>,
    pub schedules: IndexMap<String, Arc<Schedule>>,
    pub rules: Vec<Arc<Rule>>,
    pub silences: Vec<Silence>,
    pub notices: Vec<Arc<Notice>>,
    pub templates: Templates,
    /// Every file read, main file first (empty path for the embedded default).
    pub files: Vec<PathBuf>,
}

impl Config {
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
}

impl ConfigErrors {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.level == Level::Error).count()
    }

    /// The rustc-style report.
    pub fn render(&self, color: bool) -> String {
        diag::render(&self.diagnostics, &self.sources, color)
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

/// The schema as pretty JSON with a trailing newline.
pub fn json_schema_text() -> String {
    let mut s = serde_json::to_string_pretty(json_schema()).expect("a schema is JSON");
    s.push('\n');
    s
}

/// Loads the config at `path`, or the embedded default when `None`.
pub fn load(path: Option<&Path>, opts: &LoadOptions<'_>) -> Result<Loaded, ConfigErrors> {
    let mut sources = SourceMap::default();
    let main = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => sources.add(SourceFile::new(p.display().to_string(), Some(p.to_path_buf()), text)),
            Err(e) => {
                return Err(ConfigErrors {
                    diagnostics: vec![Diagnostic::error(
                        Place::None,
                        format!("cannot read config file {}: {e}", p.display()),
                    )
                    .with_note("pass the right file with -c FILE, or leave -c out to use the embedded default")],
                    sources,
                });
            }
        },
        None => sources.add(SourceFile::new(EMBEDDED_NAME, None, DEFAULT_CONFIG.to_string())),
    };
    load_files(sources, main, opts)
}

/// Loads config text as if read from a file called `name` (for tests and
/// `alerter test`); includes are resolved relative to `base_dir`.
pub fn load_str(name: &str, text: &str, base_dir: Option<&Path>, opts: &LoadOptions<'_>) -> Result<Loaded, ConfigErrors> {
    let mut sources = SourceMap::default();
    let path = base_dir.map(|d| d.join(name));
    let main = sources.add(SourceFile::new(name, path, text.to_string()));
    load_files(sources, main, opts)
}

fn load_files(mut sources: SourceMap, main: usize, opts: &LoadOptions<'_>) -> Result<Loaded, ConfigErrors> {
    let mut diags = Vec::new();
    let mut parsed: Vec<(usize, model::ConfigFile)> = Vec::new();
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
                    Err(e) => diags.push(Diagnostic::at(main, &at, format!("cannot read included file {}: {e}", path.display()))),
                }
            }
        }
    }
    let config = compile::compile(&parsed, &sources, opts.catalog, &mut diags);
    diags.sort_by_key(|d| d.level);
    let has_errors = diags.iter().any(|d| d.level == Level::Error);
    match config {
        Some(config) if !has_errors => Ok(Loaded { config, warnings: diags, sources }),
        _ => Err(ConfigErrors { diagnostics: diags, sources }),
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

/// Parses, expands, validates and deserializes one file. `None` when it has
/// errors (which are in `diags`).
fn parse_one(
    sources: &SourceMap,
    file: usize,
    is_main: bool,
    opts: &LoadOptions<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<model::ConfigFile> {
    let src = &sources.files()[file];
    let before = diags.len();
    let mut value = match src.parse() {
        Ok(v) => v,
        Err((message, pos)) => {
            let place = match pos {
                Some((line, column)) => Place::Position { file, line, column },
                None => Place::File(file),
            };
            diags.push(Diagnostic::error(place, format!("YAML syntax error: {message}")));
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
    if !is_main {
        if let serde_norway::Value::Mapping(m) = &value {
            for key in ["alerter", "include"] {
                if m.contains_key(key) {
                    diags.push(
                        Diagnostic::at_key(file, &YamlPath::root().key(key), format!("`{key}` is only allowed in the main config file"))
                            .with_note("move it to the main file; included files may hold sources, transports, subscribers, groups, schedules, rules, silences and notices"),
                    );
                }
            }
        }
    }
    let schema = json_schema();
    diags.extend(validate::validate(schema, schema, &value, file, &YamlPath::root()));
    if diags.len() > before {
        return None;
    }
    match serde_norway::from_value::<model::ConfigFile>(value) {
        Ok(f) => Some(f),
        Err(e) => {
            // The validator should have caught anything serde rejects; if
            // not, report serde's own words rather than nothing.
            diags.push(Diagnostic::error(Place::File(file), format!("invalid configuration: {e}")));
            None
        }
    }
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

/// The state directory when the config names none: systemd's
/// `$STATE_DIRECTORY`, else /var/lib/alerter for root, else the XDG state
/// directory, so that a user trying it out needs no privileges.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several, colon-separated; the first is ours.
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        return PathBuf::from(first);
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
