//! `${VAR}` expansion inside string values.
//!
//! Expansion happens on the parsed tree, never on the file text, so a
//! variable's value cannot change the YAML structure, and keys are never
//! expanded. `${VAR:-default}` supplies a default; `$$` is a literal `$`; a
//! `$` not followed by `{` or `$` stays as it is (so regexes ending in `$`
//! need no escaping).

use serde_norway::Value;

use super::diag::YamlPath;

/// Expands one string. `Err` names the problem.
pub fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{s}`; write ${{NAME}}, or $$ for a literal $"))?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{inner}}}` is not a variable reference; names use letters, digits and _"));
            }
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => {
                    return Err(format!(
                        "environment variable `{name}` is not set; set it, or give a default with ${{{name}:-value}}"
                    ));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands every string value in the tree, reporting each failure with its path.
pub fn expand_tree(
    value: &mut Value,
    path: &YamlPath,
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut dyn FnMut(&YamlPath, String),
) {
    match value {
        Value::String(s) => match expand_str(s, lookup) {
            Ok(v) => *s = v,
            Err(msg) => report(path, msg),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &path.index(i), lookup, report);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_norway::to_string(other).unwrap_or_default().trim().to_string(),
                };
                expand_tree(v, &path.key(key), lookup, report);
            }
        }
        Value::Tagged(t) => expand_tree(&mut t.value, path, lookup, report),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("mail.example.org".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_defaults_and_escapes() {
        assert_eq!(expand_str("smtp://${HOST}:25", &env).unwrap(), "smtp://mail.example.org:25");
        assert_eq!(expand_str("${NOPE:-fallback}", &env).unwrap(), "fallback");
        assert_eq!(expand_str("${EMPTY:-x}", &env).unwrap(), "", "set but empty is set");
        assert_eq!(expand_str("cost $$5", &env).unwrap(), "cost $5");
        assert_eq!(expand_str("^/var$", &env).unwrap(), "^/var$");
    }

    #[test]
    fn reports_problems() {
        assert!(expand_str("${NOPE}", &env).unwrap_err().contains("`NOPE` is not set"));
        assert!(expand_str("${HOST", &env).unwrap_err().contains("unterminated"));
        assert!(expand_str("${a b}", &env).unwrap_err().contains("not a variable reference"));
    }

    #[test]
    fn only_string_values_are_touched() {
        let mut v: Value = serde_norway::from_str("${HOST}: ${HOST}\nlist: [\"${NOPE}\"]\nn: 5").unwrap();
        let mut errors = Vec::new();
        expand_tree(&mut v, &YamlPath::root(), &env, &mut |p, m| errors.push((p.to_string(), m)));
        assert_eq!(v["${HOST}"], Value::String("mail.example.org".into()));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].0, "list[0]");
    }
}
