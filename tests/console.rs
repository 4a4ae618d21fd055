//! The web console, in a real browser: Debian's Chromium driven over
//! WebDriver (chromedriver), against a daemon whose popups reach `alerter
//! listen` receivers on a LAN of network namespaces; and, without a
//! browser, every refusal (no session, a forged form, a wrong origin).
//!
//! The browser test runs on a thread that has entered the daemon's
//! namespace: chromedriver, Chromium and the daemon are started from it
//! and so live there, and the test reaches them on that namespace's
//! loopback. Screenshots of every page at desktop and phone widths are
//! saved in `target/tmp/console-screenshots/` (the CI's artifacts).

mod util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use util::netns::{Lan, Netns, Proc, until};
use util::{Daemon, api_addr, http_exchange, http_request};

const LONG: Duration = Duration::from_secs(20);
const OPS: &str = "ops-0123456789abcdef0123456789abcdef";
const VIEWER: &str = "view-0123456789abcdef0123456789abcd";
const HOOK: &str = "hook-0123456789abcdef0123456789abcd";

fn alerter_bin() -> &'static str {
    env!("CARGO_BIN_EXE_alerter")
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Moves this thread into `ns`: what it opens, and what it starts, lives
/// there from now on.
fn enter(ns: &Netns) {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the test's namespace");
}

/// The daemon's config: `alice` on WS0 by popup, a rule that repeats
/// every 2 s, the API on loopback with an operate and a read token.
fn config(dir: &Path, listen: &str) -> PathBuf {
    for (file, secret) in [("ops.tok", OPS), ("viewer.tok", VIEWER), ("hook.tok", HOOK)] {
        let p = dir.join(file);
        std::fs::write(&p, secret).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    }
    let cfg = dir.join("alerter.yaml");
    std::fs::write(
        &cfg,
        format!(
            "alerter:
  name: FILESERVER
  workgroup: TESTWG
  state_dir: {d}/state
api:
  socket: {d}/api.sock
  listen: {listen}
  metrics_listen: \"off\"
  tokens:
    ops: {{ file: {d}/ops.tok, scope: operate }}
    viewer: {{ file: {d}/viewer.tok, scope: read }}
    hook: {{ file: {d}/hook.tok, scope: ingest }}
transports:
  popup:
    type: messenger
    dns: false
    hosts: {{ WS0: 10.77.0.1 }}
subscribers:
  alice: {{ name: Alice, machine: WS0 }}
rules:
  - name: disk-space
    match: {{ source: api }}
    repeat_interval: 2s
    notify: [{{ subscribers: [alice], via: [popup] }}]
",
            d = dir.display()
        ),
    )
    .unwrap();
    cfg
}

fn post_event(addr: &str, event: Value) {
    let body = event.to_string();
    let auth = format!("Bearer {OPS}");
    let (status, answer) = http_request(
        addr,
        "POST",
        "/api/v1/events",
        &[("Authorization", &auth), ("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
}

fn api_get(addr: &str, path: &str) -> Value {
    let auth = format!("Bearer {OPS}");
    let (status, body) = http_request(addr, "GET", path, &[("Authorization", &auth)], b"");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn popups(p: &Proc, containing: &str) -> Vec<Value> {
    p.json_lines().into_iter().filter(|v| v["text"].as_str().is_some_and(|t| t.contains(containing))).collect()
}

/// chromedriver, and a headless Chromium session through it.
async fn browser(port: u16) -> (Client, Proc) {
    let mut c = std::process::Command::new("chromedriver");
    c.arg(format!("--port={port}"));
    let driver = Proc::spawn(c);
    let url = format!("http://127.0.0.1:{port}");
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     format!("--user-data-dir={}", profile.path().display())],
        },
    });
    let Value::Object(caps) = caps else { unreachable!() };
    let mut last = None;
    let deadline = Instant::now() + LONG;
    while Instant::now() < deadline {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
            Ok(client) => return (client, driver.keep(profile)),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no WebDriver session: {last:?}\n{}", driver.stderr());
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits (without reloading) until the element's text contains `want`.
async fn wait_text(c: &Client, css: &str, want: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let t = text_of(c, css).await;
        if t.contains(want) {
            return t;
        }
        if Instant::now() > deadline {
            let body = text_of(c, "body").await;
            panic!("`{css}` never said `{want}`; it says `{t}`; the page: {body}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}")).click().await.unwrap();
}

async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"));
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// Sets the viewport (not the window) to `width` × `height`.
async fn viewport(c: &Client, width: u32, height: u32) {
    c.set_window_size(width, height).await.unwrap();
    let inner = c.execute("return [window.innerWidth, window.innerHeight]", vec![]).await.unwrap();
    let (w, h) = (inner[0].as_u64().unwrap() as u32, inner[1].as_u64().unwrap() as u32);
    if (w, h) != (width, height) {
        c.set_window_size(2 * width - w, 2 * height - h).await.unwrap();
    }
}

/// Saves the page at desktop and phone widths; at the phone's 390 px,
/// checks from the layout that nothing scrolls sideways and that the
/// page's main action (`[data-main]`) is on the screen.
async fn screenshots_of(c: &Client, name: &str) {
    viewport(c, 1280, 900).await;
    std::fs::write(screenshots().join(format!("{name}-desktop.png")), c.screenshot().await.unwrap()).unwrap();
    viewport(c, 390, 844).await;
    let layout = c
        .execute(
            "const m = document.querySelector('[data-main]');
             const r = m && m.getBoundingClientRect();
             return { inner: window.innerWidth, scroll: document.documentElement.scrollWidth,
                      main: r && { left: r.left, right: r.right, width: r.width, height: r.height,
                                   text: m.textContent.trim() } };",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(layout["inner"], 390, "{name}: {layout}");
    assert!(layout["scroll"].as_f64().unwrap() <= 390.0, "{name} scrolls sideways at 390 px: {layout}");
    let main = &layout["main"];
    assert!(main.is_object(), "{name} has no main action: {layout}");
    assert!(
        main["left"].as_f64().unwrap() >= 0.0
            && main["right"].as_f64().unwrap() <= 390.0
            && main["width"].as_f64().unwrap() > 0.0
            && main["height"].as_f64().unwrap() > 0.0,
        "{name}: its main action is not wholly on a phone's screen: {layout}"
    );
    std::fs::write(screenshots().join(format!("{name}-phone.png")), c.screenshot().await.unwrap()).unwrap();
    viewport(c, 1280, 900).await;
}

/// Forms on the page that would change something (posts), the logout
/// form aside.
async fn changing_forms(c: &Client) -> Vec<String> {
    let v = c
        .execute(
            "return Array.from(document.forms)
               .filter(f => f.method.toLowerCase() === 'post' && f.dataset.kind !== 'logout')
               .map(f => f.getAttribute('action'));",
            vec![],
        )
        .await
        .unwrap();
    v.as_array().unwrap().iter().map(|a| a.as_str().unwrap_or("").to_string()).collect()
}

async fn log_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/")).await.unwrap();
    wait_text(c, "h1", "Log in", LONG).await;
    type_into(c, "#token", token).await;
    click(c, "#login").await;
    wait_text(c, "h1", "Overview", LONG).await;
}

/// Acceptance 1, 2 and 5 of the console's issue, in one story: log in,
/// see an alert arrive without a reload, acknowledge it (its repeats stop
/// at the popup receiver), silence alerts like it (the next one is
/// suppressed), announce maintenance to the workgroup (two receivers get
/// it), expire the silence, find the receivers on the Network page, and
/// see that a read-only login is offered no form that changes anything.
#[test]
fn the_console_in_chromium_acknowledges_silences_and_announces() {
    let lan = Lan::new(3);
    let receivers: Vec<Proc> = (0..2)
        .map(|i| {
            let state = tempfile::tempdir().unwrap();
            let mut c = lan.hosts[i].cmd(alerter_bin());
            c.args(["listen", "--json", "--no-desktop", "--no-users", "--history", "/dev/null"])
                .args(["--name", &format!("WS{i}"), "--workgroup", "TESTWG"])
                .env("XDG_STATE_HOME", state.path());
            Proc::spawn(c).keep(state)
        })
        .collect();
    for host in &lan.hosts[..2] {
        until(LONG, "the receivers", || host.udp_bound(138) && host.udp_bound(137) && host.tcp_listening(139));
    }
    enter(&lan.hosts[2]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:9310");
    let daemon = Daemon::start(&cfg, &[]);
    let addr = "127.0.0.1:9310";
    until(LONG, "the API", || std::net::TcpStream::connect(addr).is_ok());
    let base = format!("http://{addr}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (c, _driver) = browser(9515).await;

        // The login page, then in.
        c.goto(&format!("{base}/")).await.unwrap();
        wait_text(&c, "h1", "Log in", LONG).await;
        screenshots_of(&c, "login").await;
        log_in(&c, &base, OPS).await;
        wait_text(&c, "#live", "Nothing is firing", LONG).await;
        assert!(text_of(&c, "header").await.contains("token:ops"));

        // An alert the test causes shows up without a reload.
        c.execute("window.notReloaded = true", vec![]).await.unwrap();
        let summary = "Disk /srv is 97% full";
        post_event(
            addr,
            json!({"severity": "critical", "summary": summary, "host": "fs1", "labels": {"mount": "/srv"}}),
        );
        let firing = Instant::now();
        until(LONG, "the alert firing", || api_get(addr, "/api/v1/alerts?state=firing")["total"] == 1);
        let since_firing = Instant::now();
        wait_text(&c, "#live", summary, Duration::from_secs(2)).await;
        eprintln!(
            "the overview showed the alert {:?} after the daemon had it firing ({:?} after the post)",
            since_firing.elapsed(),
            firing.elapsed()
        );
        assert_eq!(c.execute("return window.notReloaded === true", vec![]).await.unwrap(), true, "no reload");
        assert!(text_of(&c, "#live").await.contains("disk-space"), "grouped under its rule");
        screenshots_of(&c, "overview").await;

        // Its popups repeat at WS0 until acknowledged in the console.
        until(LONG, "repeated popups", || popups(&receivers[0], summary).len() >= 2);
        click(&c, "[data-alert] a").await;
        wait_text(&c, "h1", summary, LONG).await;
        wait_text(&c, ".timeline", "sent", LONG).await;
        assert!(text_of(&c, ".timeline").await.contains("alice"), "who was told how");
        screenshots_of(&c, "alert").await;
        type_into(&c, "#comment", "Cleaning up /srv/tmp").await;
        click(&c, "#ack").await;
        wait_text(&c, ".flash", "Acknowledged", LONG).await;
        let state = wait_text(&c, "#state", "acknowledged by token:ops", LONG).await;
        assert!(state.contains("Cleaning up /srv/tmp"), "{state}");
        std::thread::sleep(Duration::from_secs(1));
        let after_ack = popups(&receivers[0], summary).len();
        let quiet_until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < quiet_until {
            assert_eq!(popups(&receivers[0], summary).len(), after_ack, "a repeat after the acknowledgement");
            std::thread::sleep(Duration::from_millis(200));
        }

        // "Silence alerts like this": the form comes filled from its
        // labels, and its preview follows what is typed.
        click(&c, "#silence-like").await;
        wait_text(&c, "h1", "Silences", LONG).await;
        let matchers = c.find(Locator::Id("matchers")).await.unwrap().prop("value").await.unwrap().unwrap();
        assert_eq!(matchers, "rule=\"disk-space\"\nhost=\"fs1\"\nmount=\"/srv\"");
        wait_text(&c, "#silence-preview", "It would silence 1 alert", LONG).await;
        type_into(&c, "#matchers", "host=\"nowhere\"").await;
        wait_text(&c, "#silence-preview", "no alert", LONG).await;
        type_into(&c, "#matchers", &matchers).await;
        wait_text(&c, "#silence-preview", summary, LONG).await;
        type_into(&c, "#duration", "1h").await;
        type_into(&c, "#scomment", "Moving /srv to the new array").await;
        screenshots_of(&c, "silences").await;
        click(&c, "#silence").await;
        wait_text(&c, ".flash", "The silence is in force", LONG).await;
        let listed = text_of(&c, ".silences").await;
        assert!(listed.contains("active") && listed.contains("by token:ops"), "{listed}");

        // The next notification that matches is suppressed, with why.
        let second = "Disk /srv inode table 95% full";
        post_event(
            addr,
            json!({"severity": "critical", "summary": second, "host": "fs1", "labels": {"mount": "/srv"},
                   "key": "inodes"}),
        );
        until(LONG, "the suppression in history", || {
            api_get(addr, "/api/v1/history?status=suppressed")["entries"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["summary"].as_str().is_some_and(|s| s.contains("inode")))
        });
        assert!(popups(&receivers[0], second).is_empty(), "a silenced alert popped up");

        // A maintenance notice: its preview shows the popup as it will be
        // (CP850 has no €; a workgroup datagram's length limit cuts).
        c.goto(&format!("{base}/notices")).await.unwrap();
        wait_text(&c, "h1", "Notices", LONG).await;
        let long = format!("Kantine: Essen 4,50 € heute. {}", "Die Wartung dauert lange. ".repeat(30));
        type_into(&c, "#text", &long).await;
        let preview = wait_text(&c, "#notice-preview", "cut to fit", LONG).await;
        assert!(preview.contains("code page 850") && preview.contains("1 character the code page lacks"), "{preview}");
        let popup = text_of(&c, "pre.popup").await;
        assert!(popup.starts_with("Kantine: Essen 4,50 ? heute.") && popup.ends_with("[...]"), "{popup}");
        screenshots_of(&c, "notices").await;
        let notice = "The file server goes down at 18:00 for maintenance.";
        type_into(&c, "#text", notice).await;
        wait_text(&c, "pre.popup", notice, LONG).await;
        click(&c, "#send-notice").await;
        wait_text(&c, ".flash", "The notice is set", LONG).await;
        for r in &receivers {
            until(LONG, "the notice at both receivers", || !popups(r, notice).is_empty());
            let m = &popups(r, notice)[0];
            assert_eq!((m["from"].as_str(), m["group"].as_bool()), (Some("FILESERVER"), Some(true)), "{m}");
        }

        // Expire the silence.
        c.goto(&format!("{base}/silences")).await.unwrap();
        click(&c, ".silences .expire").await;
        wait_text(&c, ".flash", "The silence has expired", LONG).await;
        assert!(text_of(&c, ".silences").await.contains("expired"));
        let silences = api_get(addr, "/api/v1/silences");
        assert_eq!(silences.as_array().unwrap().len(), 0, "none in force: {silences}");

        // History says who acknowledged.
        c.goto(&format!("{base}/history?status=ack")).await.unwrap();
        let h = wait_text(&c, ".timeline", "token:ops", LONG).await;
        assert!(h.contains("ack"), "{h}");
        c.goto(&format!("{base}/history")).await.unwrap();
        wait_text(&c, ".timeline", "suppressed", LONG).await;
        screenshots_of(&c, "history").await;

        // The Network page lists the names the receivers registered.
        c.goto(&format!("{base}/network")).await.unwrap();
        let hosts = wait_text(&c, ".hosts", "WS0", LONG).await;
        assert!(hosts.contains("WS1<03>") && hosts.contains("takes popups"), "{hosts}");
        assert!(text_of(&c, ".reach").await.contains("found"));
        screenshots_of(&c, "network").await;

        // A read-only login: every page, and no form that changes anything.
        click(&c, "form.logout button").await;
        wait_text(&c, "h1", "Log in", LONG).await;
        log_in(&c, &base, VIEWER).await;
        let id = api_get(addr, "/api/v1/alerts")["alerts"][0]["id"].as_str().unwrap().to_string();
        for page in ["/", &format!("/alerts/{id}"), "/silences", "/notices", "/history", "/network"] {
            c.goto(&format!("{base}{page}")).await.unwrap();
            wait_text(&c, "header", "token:viewer", LONG).await;
            assert!(!text_of(&c, "main").await.is_empty(), "{page} is empty");
            assert_eq!(changing_forms(&c).await, Vec::<String>::new(), "{page} offers a read-only login a change");
        }
        c.close().await.unwrap();
    });
    drop(daemon);
}

/// Acceptance 3: without a session every page sends the browser to the
/// login page and shows nothing; every form post is refused, and so is a
/// post from a session that lacks the form's CSRF token, comes from
/// another site, or has a read-only scope. Wrong tokens are refused, and
/// an address that keeps trying is locked out for a while.
#[test]
fn without_a_session_every_page_and_form_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "127.0.0.1:0");
    let daemon = Daemon::start(&cfg, &[]);
    let addr = api_addr(&daemon);
    post_event(&addr, json!({"severity": "critical", "summary": "Secret summary", "host": "fs1"}));
    until(LONG, "the alert", || api_get(&addr, "/api/v1/alerts")["total"] == 1);
    let id = api_get(&addr, "/api/v1/alerts")["alerts"][0]["id"].as_str().unwrap().to_string();

    let pages =
        ["/", "/live", "/silences", "/silences/preview?matchers=host%3Dfs1", "/notices", "/history", "/network"];
    let alert = format!("/alerts/{id}");
    for page in pages.iter().copied().chain([alert.as_str()]) {
        let (status, headers, body) = http_exchange(&addr, "GET", page, &[], b"");
        assert!(!body.contains("Secret summary"), "{page} shows an alert without a session");
        if page == "/live" || page.starts_with("/silences/preview") {
            assert_eq!(status, 401, "{page}");
        } else {
            assert_eq!(status, 303, "{page}: {body}");
            let location = headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.as_str());
            assert!(location.is_some_and(|l| l.starts_with("/login?next=")), "{page}: {headers:?}");
        }
    }
    let forms = [
        format!("/alerts/{id}/ack"),
        "/silences".into(),
        "/silences/s-0000000000000000/expire".into(),
        "/notices".into(),
        "/notices/preview".into(),
        "/notices/n-00000000/cancel".into(),
    ];
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    for path in &forms {
        let (status, body) = http_request(&addr, "POST", path, &form, b"csrf=guess&matchers=host%3Dfs1&duration=1h");
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Logging out without a session changes nothing: it only clears the cookie.
    let (status, _) = http_request(&addr, "POST", "/logout", &form, b"csrf=guess");
    assert_eq!(status, 303);

    // Log in as a browser does: the login form's cookie and token.
    let login = |token: &str| -> (u16, Vec<(String, String)>) {
        let (_, headers, page) = http_exchange(&addr, "GET", "/login", &[], b"");
        let cookie =
            headers.iter().find(|(k, v)| k == "set-cookie" && v.starts_with("__Secure-alerter_login=")).unwrap();
        let cookie = cookie.1.split(';').next().unwrap().to_string();
        let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
        let body = format!("token={token}&csrf={csrf}&next=%2F");
        let (status, headers, _) = http_exchange(
            &addr,
            "POST",
            "/login",
            &[("Cookie", &cookie), ("Content-Type", "application/x-www-form-urlencoded")],
            body.as_bytes(),
        );
        (status, headers)
    };
    let session = |headers: &[(String, String)]| {
        let c = headers.iter().find(|(k, v)| k == "set-cookie" && v.starts_with("__Host-alerter_session=")).unwrap();
        assert!(c.1.contains("HttpOnly") && c.1.contains("SameSite=Strict") && c.1.contains("Secure"), "{c:?}");
        c.1.split(';').next().unwrap().to_string()
    };
    let (status, headers) = login(OPS);
    assert_eq!(status, 303);
    let ops = session(&headers);
    let (_, page) = http_request(&addr, "GET", "/silences", &[("Cookie", &ops)], b"");
    assert!(page.contains("id=\"silence-form\""), "an operate login sees the form");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();

    // A forged post: the session's cookie, no or a wrong CSRF token, or
    // another site's origin.
    let with = |cookie: &str, origin: Option<&str>, body: String| {
        let mut h = vec![("Cookie", cookie.to_string()), ("Content-Type", form[0].1.to_string())];
        if let Some(o) = origin {
            h.push(("Origin", o.to_string()));
        }
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request(&addr, "POST", "/silences", &h, body.as_bytes())
    };
    let silence = "matchers=host%3Dfs1&duration=1h";
    let (status, body) = with(&ops, None, silence.to_string());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("security token is missing"), "{body}");
    let (status, _) = with(&ops, None, format!("csrf=0000{}&{silence}", &csrf[4..]));
    assert_eq!(status, 403);
    let (status, body) = with(&ops, Some("http://evil.example"), format!("csrf={csrf}&{silence}"));
    assert_eq!(status, 403, "{body}");
    assert_eq!(api_get(&addr, "/api/v1/silences"), json!([]), "no forged post set a silence");
    let (status, _) = with(&ops, Some(&format!("http://{addr}")), format!("csrf={csrf}&{silence}"));
    assert_eq!(status, 303, "the same post, with its token, from the console's own page");
    assert_eq!(api_get(&addr, "/api/v1/silences").as_array().unwrap().len(), 1);

    // A notice set from the console, listed with its reminder, cancelled.
    let post = |path: &str, body: String| {
        http_request(&addr, "POST", path, &[("Cookie", &ops), ("Content-Type", form[0].1)], body.as_bytes())
    };
    let (status, body) =
        post("/notices", format!("csrf={csrf}&text=Backups+pause&to=%2A&at=%2B2h&remind=1h&action=send"));
    assert_eq!(status, 303, "{body}");
    let (_, page) = http_request(&addr, "GET", "/notices", &[("Cookie", &ops)], b"");
    let id = page.split("data-notice=\"").nth(1).expect("the notice is listed").split('"').next().unwrap().to_string();
    assert!(page.contains("Backups pause") && page.contains("(reminder)"), "{page}");
    let (status, _) = post(&format!("/notices/{id}/cancel"), format!("csrf={csrf}"));
    assert_eq!(status, 303);
    let (_, page) = http_request(&addr, "GET", "/notices?done=cancelled", &[("Cookie", &ops)], b"");
    assert!(page.contains("The notice is cancelled") && !page.contains(&id), "{page}");

    // The silence form's preview without JavaScript: a post that sets nothing.
    let silences_before = api_get(&addr, "/api/v1/silences");
    let (status, page) = post("/silences", format!("csrf={csrf}&matchers=host%3D%22fs1%22&duration=1h&action=preview"));
    assert_eq!(status, 200);
    assert!(page.contains("It would silence <b>1</b> alert") && page.contains("Secret summary"), "{page}");
    assert_eq!(api_get(&addr, "/api/v1/silences"), silences_before, "a preview sets nothing");

    // A read-only login sees no form, and its posts are refused.
    let (_, headers) = login(VIEWER);
    let viewer = session(&headers);
    let (_, page) = http_request(&addr, "GET", "/silences", &[("Cookie", &viewer)], b"");
    assert!(!page.contains("id=\"silence-form\"") && !page.contains("/expire\""), "{page}");
    let vcsrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let (status, body) = with(&viewer, None, format!("csrf={vcsrf}&{silence}"));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("`read`"), "{body}");

    // An ingest token cannot log in; wrong tokens are counted and then
    // locked out, the right one too for that address.
    assert_eq!(login(HOOK).0, 403);
    for _ in 0..10 {
        assert_eq!(login("wrong-wrong-wrong-wrong-wrong-wrong").0, 401);
    }
    assert_eq!(login("wrong-wrong-wrong-wrong-wrong-wrong").0, 429);
    assert_eq!(login(OPS).0, 429, "locked out for a while, whatever the token");

    // Logging out ends the session: its cookie no longer opens a page.
    let (_, page) = http_request(&addr, "GET", "/", &[("Cookie", &ops)], b"");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let (status, _) = http_request(
        &addr,
        "POST",
        "/logout",
        &[("Cookie", &ops), ("Content-Type", form[0].1)],
        format!("csrf={csrf}").as_bytes(),
    );
    assert_eq!(status, 303);
    let (status, _) = http_request(&addr, "GET", "/", &[("Cookie", &ops)], b"");
    assert_eq!(status, 303, "the session ended at logout");
}
