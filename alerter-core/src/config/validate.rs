//! Structural validation of a YAML tree against the config's JSON Schema.
//!
//! serde stops at the first problem; admins want all of them. So before
//! serde runs, this module walks the parsed YAML together with the schema
//! generated from [`super::model`] and collects every unknown or misspelt
//! key, missing key, wrong type and bad formatted string (durations, regexes,
//! crontab lines, time zones, templates), each with its path. Once it finds
//! nothing, deserializing into the model cannot fail.
//!
//! Only the schema features schemars emits for our types are understood:
//! `$ref`, `type`, `properties`, `required`, `additionalProperties`, `items`,
//! `enum`, `const`, `anyOf`/`oneOf`, `format`, `minimum`, `maximum`.

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use super::diag::{Diagnostic, YamlPath};
use super::types::check_format;

/// Validates `node` against `schema` (whose `$defs` live in `root`).
pub fn validate(root: &Json, schema: &Json, node: &Yaml, file: usize, path: &YamlPath) -> Vec<Diagnostic> {
    let mut v = Validator { root, file, out: Vec::new() };
    let noun = match schema.get("title").and_then(Json::as_str).map(noun_for) {
        Some(n) if n != "this mapping" => n,
        _ => "the configuration",
    };
    v.check(schema, node, path, noun);
    v.out
}

struct Validator<'a> {
    root: &'a Json,
    file: usize,
    out: Vec<Diagnostic>,
}

/// Human name of a YAML value's kind, with the value for scalars.
fn describe(node: &Yaml) -> String {
    match node {
        Yaml::Null => "nothing".to_string(),
        Yaml::Bool(b) => format!("`{b}`"),
        Yaml::Number(n) => format!("the number `{n}`"),
        Yaml::String(s) => format!("the text `{}`", truncate(s, 40)),
        Yaml::Sequence(_) => "a list".to_string(),
        Yaml::Mapping(_) => "a mapping".to_string(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n { s.to_string() } else { format!("{}...", s.chars().take(n).collect::<String>()) }
}

fn type_phrase(t: &str) -> &'static str {
    match t {
        "string" => "text",
        "boolean" => "true or false",
        "integer" => "a whole number",
        "number" => "a number",
        "array" => "a list",
        "object" => "a mapping",
        "null" => "nothing",
        _ => "a value",
    }
}

fn node_matches_type(node: &Yaml, t: &str) -> bool {
    match (t, node) {
        ("null", Yaml::Null) => true,
        ("boolean", Yaml::Bool(_)) => true,
        ("string", Yaml::String(_)) => true,
        ("integer", Yaml::Number(n)) => n.is_i64() || n.is_u64(),
        ("number", Yaml::Number(_)) => true,
        ("array", Yaml::Sequence(_)) => true,
        ("object", Yaml::Mapping(_)) => true,
        _ => false,
    }
}

fn schema_types(schema: &Json) -> Vec<&str> {
    match schema.get("type") {
        Some(Json::String(s)) => vec![s.as_str()],
        Some(Json::Array(a)) => a.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Words YAML 1.1 read as booleans but YAML 1.2 (and so this config) reads as text.
fn yaml11_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "yes" | "on" | "y" => Some(true),
        "no" | "off" | "n" => Some(false),
        _ => None,
    }
}

/// The noun for a schema definition in messages: `RuleConfig` -> "rule".
fn noun_for(def: &str) -> &'static str {
    match def {
        "AlerterSection" => "the `alerter` section",
        "SourceConfig" => "a source",
        "TransportConfig" => "a transport",
        "TemplateConfig" => "a template",
        "SubscriberConfig" => "a subscriber",
        "GroupConfig" => "a group",
        "ScheduleConfig" => "a schedule",
        "WindowConfig" => "a schedule window",
        "RuleConfig" => "a rule",
        "MatcherConfig" => "`match`",
        "LabelMatch" | "LabelOp" => "a label condition",
        "RecipientsConfig" => "a `notify` entry",
        "SilenceConfig" => "a silence",
        "NoticeConfig" => "a notice",
        "TestFile" => "the test file",
        "TestCase" => "a test",
        "TestEvent" => "a test event",
        "Expected" => "an expected notification",
        _ => "this mapping",
    }
}

impl<'a> Validator<'a> {
    fn resolve(&self, schema: &'a Json) -> (&'a Json, Option<&'a str>) {
        let mut s = schema;
        let mut name = None;
        // Chains of $ref are short; the bound guards against a cyclic schema.
        for _ in 0..16 {
            match s.get("$ref").and_then(Json::as_str) {
                Some(r) => {
                    let def = r.rsplit('/').next().unwrap_or(r);
                    name = Some(def);
                    match self.root.get("$defs").and_then(|d| d.get(def)) {
                        Some(target) => s = target,
                        None => return (s, name),
                    }
                }
                None => break,
            }
        }
        (s, name)
    }

    fn push(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn check(&mut self, schema: &'a Json, node: &Yaml, path: &YamlPath, noun: &'static str) {
        let (schema, def) = self.resolve(schema);
        let noun = def.map(noun_for).unwrap_or(noun);
        if let Yaml::Tagged(t) = node {
            self.push(
                Diagnostic::at(self.file, path, format!("YAML tags such as `{}` are not used in this config", t.tag))
                    .with_note("remove the tag"),
            );
            return;
        }
        if let Some(branches) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Json::as_array) {
            self.check_union(branches, node, path, noun);
            return;
        }
        if schema.as_bool() == Some(true) {
            return;
        }
        let types = schema_types(schema);
        if !types.is_empty() && !types.iter().any(|t| node_matches_type(node, t)) {
            self.type_error(&types, schema.get("format").and_then(Json::as_str), node, path);
            return;
        }
        if let Some(c) = schema.get("const") {
            if !json_eq_yaml(c, node) {
                let want = display_json(c);
                let mut d = Diagnostic::at(self.file, path, format!("expected `{want}`, found {}", describe(node)));
                if let Yaml::String(s) = node {
                    d = Diagnostic::at(self.file, path, format!("unknown value `{s}`"))
                        .suggest(s, [want.as_str()])
                        .with_note(format!("expected `{want}`"));
                }
                self.push(d);
            }
            return;
        }
        if let Some(options) = schema.get("enum").and_then(Json::as_array) {
            self.check_enum(options, node, path);
            return;
        }
        match node {
            Yaml::String(s) => {
                if let Some(format) = schema.get("format").and_then(Json::as_str)
                    && let Some(Err(msg)) = check_format(format, s)
                {
                    self.push(Diagnostic::at(self.file, path, msg));
                }
            }
            Yaml::Number(n) => {
                if let (Some(min), Some(x)) = (schema.get("minimum").and_then(Json::as_f64), n.as_f64())
                    && x < min
                {
                    self.push(Diagnostic::at(self.file, path, format!("must be at least {min}, found {n}")));
                }
                if let (Some(max), Some(x)) = (schema.get("maximum").and_then(Json::as_f64), n.as_f64())
                    && x > max
                {
                    self.push(Diagnostic::at(self.file, path, format!("must be at most {max}, found {n}")));
                }
            }
            Yaml::Sequence(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.check(item_schema, item, &path.index(i), noun);
                    }
                }
            }
            Yaml::Mapping(map) => self.check_mapping(schema, map, path, noun),
            _ => {}
        }
    }

    fn type_error(&mut self, types: &[&str], format: Option<&str>, node: &Yaml, path: &YamlPath) {
        if let (Some("duration"), Yaml::Number(n)) = (format, node) {
            self.push(
                Diagnostic::at(self.file, path, format!("`{n}` is not a duration: it has no unit"))
                    .with_label(format!("write e.g. {n}s or {n}m")),
            );
            return;
        }
        let wanted: Vec<&str> = types.iter().filter(|t| **t != "null").map(|t| type_phrase(t)).collect();
        let wanted = if wanted.is_empty() { "nothing".to_string() } else { wanted.join(" or ") };
        let mut d = Diagnostic::at(self.file, path, format!("expected {wanted}, found {}", describe(node)));
        if types.contains(&"boolean")
            && let Yaml::String(s) = node
            && let Some(b) = yaml11_bool(s)
        {
            d = d
                .with_label(format!("write `{b}`"))
                .with_note(format!("YAML 1.2 reads `{s}` as text, not as a boolean; only true and false are booleans"));
        }
        if types.contains(&"string") && matches!(node, Yaml::Number(_) | Yaml::Bool(_)) {
            d = d.with_note("put the value in quotes to make it text");
        }
        self.push(d);
    }

    fn check_enum(&mut self, options: &[Json], node: &Yaml, path: &YamlPath) {
        if options.iter().any(|o| json_eq_yaml(o, node)) {
            return;
        }
        let names: Vec<String> = options.iter().map(display_json).collect();
        let found = match node {
            Yaml::String(s) => format!("`{s}`"),
            other => describe(other),
        };
        let mut d = Diagnostic::at(self.file, path, format!("unknown value {found}"))
            .with_note(format!("expected one of: {}", names.join(", ")));
        if let Yaml::String(s) = node {
            d = d.suggest(s, names.iter().map(String::as_str));
        }
        self.push(d);
    }

    fn check_mapping(&mut self, schema: &'a Json, map: &serde_norway::Mapping, path: &YamlPath, noun: &'static str) {
        let props = schema.get("properties").and_then(Json::as_object);
        let additional = schema.get("additionalProperties");
        for (key, value) in map {
            let Some(key) = key_string(key) else {
                self.push(Diagnostic::at(self.file, path, format!("keys must be text, found {}", describe(key))));
                continue;
            };
            let child = path.key(key.clone());
            if let Some(prop) = props.and_then(|p| p.get(&key)) {
                self.check(prop, value, &child, noun);
                continue;
            }
            match additional {
                Some(Json::Bool(false)) => {
                    let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                    let mut d = Diagnostic::at_key(self.file, &child, format!("unknown key `{key}` in {noun}"))
                        .suggest(&key, known.iter().copied())
                        .with_note(format!("expected one of: {}", known.join(", ")));
                    // The one place a budget does not belong on purpose: a
                    // transport read by machines must see every notification.
                    if key == "budget" && noun == "a transport" {
                        d = d.with_note(
                            "a `log` transport feeds machines, which must see every notification, so it takes \
                             no budget (docs/budgets.md); set budgets on people or on messenger and email transports",
                        );
                    }
                    self.push(d);
                }
                Some(extra @ Json::Object(_)) => self.check(extra, value, &child, noun),
                _ => {}
            }
        }
        if let Some(required) = schema.get("required").and_then(Json::as_array) {
            for r in required.iter().filter_map(Json::as_str) {
                let present = map.keys().any(|k| key_string(k).as_deref() == Some(r));
                if !present {
                    self.push(Diagnostic::at(self.file, path, format!("missing `{r}` in {noun}")));
                }
            }
        }
    }

    fn check_union(&mut self, branches: &'a [Json], node: &Yaml, path: &YamlPath, noun: &'static str) {
        let fitting: Vec<&'a Json> = branches
            .iter()
            .filter(|b| {
                let (b, _) = self.resolve(b);
                let types = schema_types(b);
                if types.is_empty() {
                    if let Some(c) = b.get("const") {
                        return json_eq_yaml(c, node);
                    }
                    if let Some(opts) = b.get("enum").and_then(Json::as_array) {
                        return matches!(node, Yaml::String(_)) || opts.iter().any(|o| json_eq_yaml(o, node));
                    }
                    return true;
                }
                types.iter().any(|t| node_matches_type(node, t))
            })
            .collect();
        if let (Yaml::Mapping(_), false) = (node, fitting.is_empty()) {
            let resolved: Vec<&'a Json> = fitting.iter().map(|b| self.resolve(b).0).collect();
            if discriminator(&resolved).is_some() {
                self.check_ambiguous(&fitting, node, path, noun);
                return;
            }
        }
        match fitting.as_slice() {
            [] => {
                let mut types: Vec<&str> = Vec::new();
                for b in branches {
                    let (b, _) = self.resolve(b);
                    for t in schema_types(b) {
                        if !types.contains(&t) {
                            types.push(t);
                        }
                    }
                    if schema_types(b).is_empty()
                        && (b.get("enum").is_some() || b.get("const").is_some())
                        && !types.contains(&"string")
                    {
                        types.push("string");
                    }
                }
                let format = branches.iter().find_map(|b| self.resolve(b).0.get("format").and_then(Json::as_str));
                self.type_error(&types, format, node, path);
            }
            [one] => self.check(one, node, path, noun),
            many => self.check_ambiguous(many, node, path, noun),
        }
    }

    /// Several object branches fit: pick by discriminator or by key.
    fn check_ambiguous(&mut self, branches: &[&'a Json], node: &Yaml, path: &YamlPath, noun: &'static str) {
        let resolved: Vec<&'a Json> = branches.iter().map(|b| self.resolve(b).0).collect();
        let Yaml::Mapping(map) = node else {
            // Several scalar branches (e.g. string enums) fit: fold their
            // options into one enum check.
            let options: Vec<Json> = resolved
                .iter()
                .flat_map(|b| {
                    b.get("enum")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .chain(b.get("const").cloned())
                })
                .collect();
            if !options.is_empty() {
                self.check_enum(&options, node, path);
            }
            return;
        };
        // Internally tagged: every branch has a `const` property of the same name.
        if let Some(tag) = discriminator(&resolved) {
            let tags: Vec<String> =
                resolved.iter().filter_map(|b| b["properties"][tag.as_str()].get("const").map(display_json)).collect();
            let value = map.iter().find(|(k, _)| key_string(k).as_deref() == Some(tag.as_str())).map(|(_, v)| v);
            let Some(value) = value else {
                self.push(
                    Diagnostic::at(self.file, path, format!("missing `{tag}` in {noun}"))
                        .with_note(format!("expected `{tag}` to be one of: {}", tags.join(", "))),
                );
                return;
            };
            let chosen = resolved
                .iter()
                .zip(branches)
                .find(|(b, _)| b["properties"][tag.as_str()].get("const").is_some_and(|c| json_eq_yaml(c, value)));
            match chosen {
                Some((_, branch)) => self.check(branch, node, path, noun),
                None => {
                    let shown = match value {
                        Yaml::String(s) => format!("`{s}`"),
                        other => describe(other),
                    };
                    let mut d =
                        Diagnostic::at(self.file, &path.key(tag.clone()), format!("unknown {tag} {shown} for {noun}"))
                            .with_note(format!("expected one of: {}", tags.join(", ")));
                    if let Yaml::String(s) = value {
                        d = d.suggest(s, tags.iter().map(String::as_str));
                    }
                    self.push(d);
                }
            }
            return;
        }
        // Externally tagged: every branch requires exactly one key.
        let single_keys: Vec<Option<&str>> = resolved
            .iter()
            .map(|b| match b.get("required").and_then(Json::as_array).map(Vec::as_slice) {
                Some([only]) => only.as_str(),
                _ => None,
            })
            .collect();
        if single_keys.iter().all(Option::is_some) {
            let keys: Vec<&str> = single_keys.into_iter().flatten().collect();
            if map.len() != 1 {
                self.push(
                    Diagnostic::at(self.file, path, format!("expected exactly one of {} in {noun}", keys.join(", ")))
                        .with_note(format!("found {} keys", map.len())),
                );
                return;
            }
            let (k, _) = map.iter().next().expect("one entry");
            let k = key_string(k).unwrap_or_default();
            match keys.iter().position(|c| *c == k) {
                Some(i) => self.check(branches[i], node, path, noun),
                None => self.push(
                    Diagnostic::at_key(self.file, &path.key(k.clone()), format!("unknown key `{k}` in {noun}"))
                        .suggest(&k, keys.iter().copied())
                        .with_note(format!("expected one of: {}", keys.join(", "))),
                ),
            }
            return;
        }
        // Otherwise report against the branch that fits best.
        let mut best: Option<Vec<Diagnostic>> = None;
        for b in branches {
            let mut sub = Validator { root: self.root, file: self.file, out: Vec::new() };
            sub.check(b, node, path, noun);
            if best.as_ref().is_none_or(|x| sub.out.len() < x.len()) {
                best = Some(sub.out);
            }
        }
        self.out.extend(best.unwrap_or_default());
    }
}

fn discriminator(branches: &[&Json]) -> Option<String> {
    let first = branches.first()?.get("properties")?.as_object()?;
    first
        .iter()
        .filter(|(_, s)| s.get("const").is_some())
        .map(|(k, _)| k.clone())
        .find(|k| branches.iter().all(|b| b["properties"][k.as_str()].get("const").is_some()))
}

fn key_string(k: &Yaml) -> Option<String> {
    match k {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn json_eq_yaml(j: &Json, y: &Yaml) -> bool {
    match (j, y) {
        (Json::String(a), Yaml::String(b)) => a == b,
        (Json::Bool(a), Yaml::Bool(b)) => a == b,
        (Json::Null, Yaml::Null) => true,
        (Json::Number(a), Yaml::Number(b)) => a.as_f64() == b.as_f64(),
        _ => false,
    }
}

fn display_json(j: &Json) -> String {
    match j {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}
