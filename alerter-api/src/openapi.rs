//! The OpenAPI document of the API, generated from the types in
//! [`crate::types`] (their JSON Schemas, by schemars) and the table of
//! endpoints below, so the document cannot drift from the code: a test
//! checks the shipped `docs/openapi.json` against it, and the server
//! serves it at `/api/v1/openapi.json`.

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::types;

/// One operation: method, path, scope, summary, request body type (its
/// schema reference), answer type, status of success.
struct Op {
    method: &'static str,
    path: &'static str,
    scope: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, &'static str, &'static str)],
    body: Option<Value>,
    answer: Value,
    status: &'static str,
}

/// The document.
pub fn document() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let schema = |s: schemars::Schema| serde_json::to_value(s).expect("a schema is JSON");
    let status = schema(g.subschema_for::<types::Status>());
    let silences = schema(g.subschema_for::<Vec<types::Silence>>());
    let silence = schema(g.subschema_for::<types::Silence>());
    let silence_req = schema(g.subschema_for::<types::SilenceRequest>());
    let page = schema(g.subschema_for::<types::AlertsPage>());
    let ack_req = schema(g.subschema_for::<types::AckRequest>());
    let ack_res = schema(g.subschema_for::<types::AckResult>());
    let events = schema(g.subschema_for::<types::EventsIn>());
    let ingested = schema(g.subschema_for::<types::Ingested>());
    let notices = schema(g.subschema_for::<Vec<types::Notice>>());
    let notice = schema(g.subschema_for::<types::Notice>());
    let notice_req = schema(g.subschema_for::<types::NoticeRequest>());
    let history = schema(g.subschema_for::<types::HistoryPage>());
    let reloaded = schema(g.subschema_for::<types::Reloaded>());
    let test_req = schema(g.subschema_for::<types::TestRequest>());
    let test_res = schema(g.subschema_for::<types::TestQueued>());
    let error = schema(g.subschema_for::<types::ErrorBody>());
    let network = schema(g.subschema_for::<types::Network>());
    let directory = schema(g.subschema_for::<types::Directory>());
    let preview = schema(g.subschema_for::<types::NoticePreview>());
    let ops = [
        Op {
            method: "get",
            path: crate::paths::STATUS,
            scope: "read",
            summary: "The daemon's state: sources, transports, outbox, alerts, silences, next notices.",
            query: &[],
            body: None,
            answer: status,
            status: "200",
        },
        Op {
            method: "get",
            path: crate::paths::ALERTS,
            scope: "read",
            summary: "Alerts, the most severe first, then the oldest, a page at a time.",
            query: &[
                ("filter", "string", "matchers: rule=disk-space host=~\"web.*\""),
                ("state", "string", "active (default), firing, pending, all"),
                ("limit", "integer", "page size, default 100, at most 1000"),
                ("offset", "integer", "how many to skip"),
                ("sort", "string", "severity (default) or rule"),
                ("id", "string", "one alert: its id, or 4 or more hex digits of it"),
            ],
            body: None,
            answer: page,
            status: "200",
        },
        Op {
            method: "post",
            path: crate::paths::ACKS,
            scope: "operate",
            summary: "Acknowledge alerts by id or by matchers: their repeats stop until the severity rises.",
            query: &[],
            body: Some(ack_req),
            answer: ack_res,
            status: "200",
        },
        Op {
            method: "get",
            path: crate::paths::SILENCES,
            scope: "read",
            summary: "Silences of the config and those set at run time.",
            query: &[("expired", "boolean", "also those ended in the last day")],
            body: None,
            answer: silences,
            status: "200",
        },
        Op {
            method: "post",
            path: crate::paths::SILENCES,
            scope: "operate",
            summary: "Set a silence; in force when the call returns, kept across reloads and restarts.",
            query: &[],
            body: Some(silence_req),
            answer: silence.clone(),
            status: "201",
        },
        Op {
            method: "delete",
            path: "/api/v1/silences/{id}",
            scope: "operate",
            summary: "Expire a silence set at run time.",
            query: &[],
            body: None,
            answer: silence,
            status: "200",
        },
        Op {
            method: "get",
            path: crate::paths::HISTORY,
            scope: "read",
            summary: "History, newest first: notifications and what became of them, suppressions and why, changes and who made them.",
            query: &[
                ("rule", "string", "a rule's name (notice:ID for a notice's)"),
                ("transport", "string", "a transport id"),
                ("status", "string", "sent, failed, expired, pending, suppressed, silence, ack, notice, reload"),
                ("recipient", "string", "a subscriber id among the recipients (* the workgroup)"),
                ("alert", "string", "an alert id (4 or more hex digits of it)"),
                ("since", "string", "RFC 3339: entries at or after"),
                ("until", "string", "RFC 3339: entries before"),
                ("limit", "integer", "page size, default 100, at most 1000"),
                ("cursor", "string", "the next of the previous page"),
            ],
            body: None,
            answer: history,
            status: "200",
        },
        Op {
            method: "post",
            path: crate::paths::RELOAD,
            scope: "admin",
            summary: "Read the config again, as SIGHUP does; answers once it is applied, or 422 with every problem if it was refused.",
            query: &[],
            body: None,
            answer: reloaded,
            status: "200",
        },
        Op {
            method: "post",
            path: crate::paths::TEST,
            scope: "operate",
            summary: "Queue a test notification through one transport; follow it in history by its rule.",
            query: &[],
            body: Some(test_req),
            answer: test_res,
            status: "202",
        },
        Op {
            method: "get",
            path: crate::paths::NOTICES,
            scope: "read",
            summary: "Notices of the config and those set at run time, with what each sends next.",
            query: &[],
            body: None,
            answer: notices,
            status: "200",
        },
        Op {
            method: "post",
            path: crate::paths::NOTICES,
            scope: "operate",
            summary: "Announce something once, now or at a time, with reminders ahead of it; kept across restarts.",
            query: &[],
            body: Some(notice_req.clone()),
            answer: notice.clone(),
            status: "201",
        },
        Op {
            method: "post",
            path: crate::paths::NOTICE_PREVIEW,
            scope: "read",
            summary: "What a notice would send, per transport, as people will see it (code page and length limit \
                      applied), and when; nothing is set.",
            query: &[],
            body: Some(notice_req.clone()),
            answer: preview,
            status: "200",
        },
        Op {
            method: "get",
            path: crate::paths::NETWORK,
            scope: "read",
            summary: "What the Messenger name service finds on the LAN now: machines answering a node status \
                      request with their names, and whether each subscriber's machine is found. Takes a second or two.",
            query: &[],
            body: None,
            answer: network,
            status: "200",
        },
        Op {
            method: "get",
            path: crate::paths::DIRECTORY,
            scope: "read",
            summary: "Subscribers, groups and transports: whom notices and tests may name.",
            query: &[],
            body: None,
            answer: directory,
            status: "200",
        },
        Op {
            method: "delete",
            path: "/api/v1/notices/{id}",
            scope: "operate",
            summary: "Cancel a notice set at run time: nothing more of it goes out.",
            query: &[],
            body: None,
            answer: notice,
            status: "200",
        },
        Op {
            method: "post",
            path: crate::paths::EVENTS,
            scope: "ingest",
            summary: "Post one event or a list of up to 1000, routed by the rules like a source's.",
            query: &[],
            body: Some(events),
            answer: ingested.clone(),
            status: "200",
        },
        Op {
            method: "post",
            path: "/api/v1/alertmanager/{source}",
            scope: "ingest",
            summary: "An Alertmanager webhook notification (payload version 4, as `webhook_configs` send it) for the \
                      `alertmanager` source named in the path: each alert becomes an event. At most 4 MiB and 1000 alerts.",
            query: &[],
            body: Some(json!({"type": "object", "description": "Alertmanager's webhook payload, version 4",
                              "required": ["version", "status", "alerts"]})),
            answer: ingested,
            status: "200",
        },
    ];
    let mut paths = serde_json::Map::new();
    for op in ops {
        let mut o = json!({
            "summary": op.summary,
            "description": format!("Needs the scope `{}`.", op.scope),
            "responses": {
                op.status: { "description": "done", "content": { "application/json": { "schema": op.answer } } },
                "4XX": { "description": "refused; the body says why", "content": { "application/json": { "schema": error } } },
                "503": { "description": "the daemon cannot answer now", "content": { "application/json": { "schema": error } } },
            },
        });
        if let Some(b) = op.body {
            o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": b } } });
        }
        let mut params: Vec<Value> = op
            .query
            .iter()
            .map(|(name, ty, what)| json!({ "name": name, "in": "query", "description": what, "schema": { "type": ty } }))
            .collect();
        for name in ["id", "source"] {
            if op.path.contains(&format!("{{{name}}}")) {
                params.push(json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }));
            }
        }
        if !params.is_empty() {
            o["parameters"] = Value::Array(params);
        }
        let entry = paths.entry(op.path.to_string()).or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    let schemas: serde_json::Map<String, Value> = g.take_definitions(true).into_iter().collect();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "alerter control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The control API of a running alerter daemon (docs/api.md). On the Unix socket the caller is the peer's user; over TCP, a bearer token.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "token": [] }],
        "paths": paths,
    })
}

/// The document as shipped (`docs/openapi.json`): pretty, with a final newline.
pub fn text() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("JSON");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let shipped = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            shipped == super::text(),
            "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json` and review the diff"
        );
        let doc = super::document();
        assert_eq!(doc["paths"]["/api/v1/silences"]["post"]["description"], "Needs the scope `operate`.");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        assert!(schemas.contains_key("SilenceRequest") && schemas.contains_key("Status"), "{schemas:?}");
    }
}
