//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the `erasure` binary serving the test's database, its log captured.
//!
//! Needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`; `.ci/run`
//! installs them), and axe-core (`.ci/run` installs it from the npm registry into
//! `target/npm`; `AXE_CORE_JS` names another copy).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use erasure::deletion::DeletionStatus;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::{Shape, TestApp};

async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// chromedriver and a headless Chromium session; both end when the value goes.
struct Browser {
    client: Client,
    _driver: Child,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port().await;
        let driver = Command::new(std::env::var("CHROMEDRIVER").unwrap_or("chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium chromium-driver)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": std::env::var("CHROMIUM").unwrap_or("/usr/bin/chromium".into()),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(client) = ClientBuilder::new(connector.clone())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                return Self {
                    client,
                    _driver: driver,
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start a session");
    }

    /// The text of the element `css` picks, once the page has one (a click's navigation may
    /// still be under way).
    async fn text(&self, css: &str) -> String {
        for _ in 0..100 {
            if let Ok(element) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {css} on {}", self.path().await);
    }

    /// The element `css` picks, once the page has one.
    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        for _ in 0..100 {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return element;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {css} on {}", self.path().await);
    }

    /// Fills the field, found again if the page was replaced between finding and typing (a
    /// navigation still under way: the element found belonged to the page before).
    async fn fill(&self, css: &str, value: &str) {
        for attempt in 0.. {
            let field = self.element(css).await;
            let typed = async {
                field.clear().await?;
                field.send_keys(value).await
            };
            match typed.await {
                Ok(()) => return,
                Err(e) if attempt < 20 && stale(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("filling {css}: {e}"),
            }
        }
    }

    async fn click(&self, css: &str) {
        for attempt in 0.. {
            match self.element(css).await.click().await {
                Ok(()) => return,
                Err(e) if attempt < 20 && stale(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("clicking {css}: {e}"),
            }
        }
    }

    /// The page's path once it is `expected` (a click's navigation may still be under way);
    /// what it is after 5 s otherwise.
    async fn settled_path(&self, expected: &str) -> String {
        let mut path = self.path().await;
        for _ in 0..100 {
            if path == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            path = self.path().await;
        }
        path
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Serious and critical accessibility violations axe-core finds on the page.
    async fn accessibility_violations(&self) -> Vec<String> {
        let path = std::env::var("AXE_CORE_JS")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("target/npm/node_modules/axe-core/axe.min.js")
            });
        let axe = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("axe-core at {} ({e}): .ci/run installs it", path.display())
        });
        self.client.execute(&axe, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1]; \
                 axe.run(document).then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))));",
                vec![],
            )
            .await
            .unwrap();
        found
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .map(|v| v.to_string())
            .collect()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), png).unwrap();
    }

    async fn sign_in(&self, base: &str, key: &str) {
        self.client.goto(&format!("{base}/sign-in")).await.unwrap();
        self.fill("#key", key).await;
        self.click("form.stack button").await;
    }
}

/// `erasure run` with the test's configuration on a free port, its log (stderr) in a file.
async fn serve(app: &TestApp) -> (Child, String, PathBuf) {
    let port = free_port().await;
    let log = std::env::temp_dir().join(format!("erasure-test-{}-console.log", app.id));
    let file = std::fs::File::create(&log).unwrap();
    let child = app
        .command()
        .arg("run")
        .env("ERASURE_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            return (child, base, log);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service did not start");
}

/// Deletions of every status, written as the service writes them, for the overview's counts.
async fn seed_statuses(app: &TestApp) {
    sqlx::raw_sql(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel, \
           completed_at, error_key, error_message, data_json, created_at) \
         SELECT 'del_seed' || lpad(i::text, 20, '0'), gen_random_uuid(), 'seeded_' || i, s.status, \
           now() - interval '40 days', now() - interval '10 days', 'amqp', \
           CASE WHEN s.status IN ('DONE', 'FAILED', 'CANCELED') THEN now() - (i % 20) * interval '1 hour' END, \
           CASE WHEN s.status = 'FAILED' THEN s.error END, CASE WHEN s.status = 'FAILED' THEN 'seeded' END, \
           '{\"events\": 2}', now() - (i % 3) * interval '2 days' \
         FROM generate_series(1, 36) i, \
           LATERAL (SELECT (ARRAY['PENDING', 'IN_PROGRESS', 'DONE', 'FAILED', 'CANCELED', 'DONE'])[1 + i % 6] AS status, \
                           (ARRAY['not_found', 'conflict', 'internal'])[1 + i % 3] AS error) s",
    )
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_privacy_officer_finds_any_request_and_what_it_erased_in_a_real_browser() {
    let app = TestApp::new().await;
    app.seed_customer("cust_web", "src_web_9f2", Shape::typical())
        .await;
    app.seed_customer("cust_new", "src_new_7c1", Shape::typical())
        .await;
    seed_statuses(&app).await;
    let reader = erasure::keys::create(&app.pool, "privacy-officer", true)
        .await
        .unwrap();
    let writer = erasure::keys::create(&app.pool, "dpo-desk", false)
        .await
        .unwrap();
    let (mut service, base, log) = serve(&app).await;
    let request_id = app.request_erasure("src_web_9f2").await;
    let erased = app.wait_for_final(request_id).await;
    assert_eq!(erased.status, DeletionStatus::Done);

    let browser = Browser::start().await;
    let b = &browser;
    // Signed out, every page leads to sign-in; a wrong key is told so.
    b.client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(b.settled_path("/sign-in").await, "/sign-in");
    b.sign_in(&base, "erk_wrong_key").await;
    assert!(b.text("p.error").await.contains("unknown or revoked"));

    // Read-only: the overview's numbers are the database's.
    b.sign_in(&base, &reader).await;
    assert_eq!(b.settled_path("/").await, "/");
    let expected: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT status, count(*) FILTER (WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), count(*) \
         FROM erasure.deletions \
         WHERE created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') - interval '29 days') AT TIME ZONE 'UTC' \
         GROUP BY status",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(expected.len() >= 5, "{expected:?}");
    for (status, today, month) in &expected {
        let row = format!("#status-counts tr[data-status='{status}']");
        assert_eq!(
            b.text(&format!("{row} td.today")).await,
            today.to_string(),
            "{status}"
        );
        assert_eq!(
            b.text(&format!("{row} td.month")).await,
            month.to_string(),
            "{status}"
        );
    }
    // Overdue: owed to the data subject (open, or FAILED and unresolved) past its deadline.
    let overdue: i64 = app
        .count_of("SELECT count(*) FROM erasure.deletions WHERE status IN ('PENDING', 'IN_PROGRESS', 'FAILED') AND due_at < now()")
        .await;
    let listed = b
        .client
        .find_all(Locator::Css("#overdue-list tbody tr"))
        .await
        .unwrap();
    assert_eq!(listed.len() as i64, overdue);
    assert_eq!(b.text("#overdue-list tbody tr td.days").await, "10");
    let failures: Vec<(String, i64)> = sqlx::query_as(
        "SELECT error_key, count(*) FROM erasure.deletions WHERE status = 'FAILED' \
         AND completed_at >= now() - interval '30 days' GROUP BY error_key",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    for (key, n) in &failures {
        let cell = b
            .text(&format!("#failures-by-key tr[data-key='{key}'] td"))
            .await;
        assert_eq!(cell, n.to_string(), "{key}");
    }
    assert_eq!(
        b.client
            .find_all(Locator::Css("svg.chart"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        b.accessibility_violations().await.is_empty(),
        "overview: {:?}",
        b.accessibility_violations().await
    );
    b.client.set_window_size(1280, 1600).await.unwrap();
    b.screenshot("overview.png").await;
    b.client.set_window_size(1280, 1000).await.unwrap();
    // No submit form for a read-only key, and a forged POST is refused.
    assert!(
        b.client
            .find_all(Locator::Css("a[href='/submit']"))
            .await
            .unwrap()
            .is_empty()
    );
    b.client.goto(&format!("{base}/submit")).await.unwrap();
    assert!(
        b.client
            .find_all(Locator::Css("#customer_id"))
            .await
            .unwrap()
            .is_empty()
    );
    let cookie = b.client.get_named_cookie("erasure_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let session_cookie = format!("erasure_session={}", cookie.value());
    for (path, form) in [
        ("/submit", "csrf=forged&customer_id=cust_new&requested_by=x"),
        ("/find", "csrf=forged&q=cust_web"),
    ] {
        let answer = http
            .post(format!("{base}{path}"))
            .header("cookie", &session_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403, "{path}");
    }

    // Find by each kind of identifier; the page shows the stored counts and audit rows.
    for q in [
        erased.id.as_str(),
        &request_id.to_string(),
        "cust_web",
        "src_web_9f2",
    ] {
        b.client.goto(&format!("{base}/")).await.unwrap();
        b.fill("#find-q", q).await;
        b.click("form.find button").await;
        let expected = format!("/deletions/{}", erased.id);
        assert_eq!(b.settled_path(&expected).await, expected, "found by {q}");
    }
    assert_eq!(b.text("#status").await, "DONE");
    for (table, n) in erased.data_json.as_object().unwrap() {
        let cell = b
            .text(&format!("#counts tr[data-table='{table}'] td"))
            .await;
        assert_eq!(cell, n.to_string(), "{table}");
    }
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM erasure.audit_log WHERE request_id = $1 ORDER BY id",
    )
    .bind(request_id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let shown: Vec<String> = {
        let mut texts = Vec::new();
        for cell in b
            .client
            .find_all(Locator::Css("#audit td.action"))
            .await
            .unwrap()
        {
            texts.push(cell.text().await.unwrap());
        }
        texts
    };
    assert_eq!(shown, actions);
    assert!(
        b.accessibility_violations().await.is_empty(),
        "deletion page"
    );
    b.screenshot("deletion.png").await;

    // The list, filtered, and its CSV: the filtered rows and nothing personal.
    b.client
        .goto(&format!("{base}/deletions?status=FAILED"))
        .await
        .unwrap();
    let failed_rows = b
        .client
        .find_all(Locator::Css("#deletions tbody tr"))
        .await
        .unwrap()
        .len();
    let failed_total = app
        .count_of("SELECT count(*) FROM erasure.deletions WHERE status = 'FAILED'")
        .await;
    assert_eq!(failed_rows as i64, failed_total);
    assert!(b.accessibility_violations().await.is_empty(), "list");
    let csv = http
        .get(format!("{base}/deletions.csv?status=FAILED"))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count() as i64, failed_total + 1, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",FAILED,")), "{csv}");
    for personal in [
        "src_web_9f2",
        "Name of",
        "@mail.example",
        "seeded_",
        "cust_web",
    ] {
        assert!(!csv.contains(personal), "{personal} in the CSV");
    }

    // A write key submits, after the preview, and the request reaches DONE.
    b.click("form.signout button").await;
    assert_eq!(b.settled_path("/sign-in").await, "/sign-in");
    b.sign_in(&base, &writer).await;
    b.click("a[href='/submit']").await;
    assert_eq!(
        b.element("#requested_by")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("dpo-desk")
    );
    b.fill("#customer_id", "src_new_7c1").await;
    b.fill("#reason", "Art. 17 request by letter").await;
    b.click("form.stack button").await;
    assert!(b.text("#preview").await.contains("events"));
    assert!(b.accessibility_violations().await.is_empty(), "preview");
    b.click("form.stack button").await;
    let mut page = b.path().await;
    for _ in 0..100 {
        if page.starts_with("/deletions/del_") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        page = b.path().await;
    }
    assert!(page.starts_with("/deletions/del_"), "{page}");
    let mut status = String::new();
    for _ in 0..100 {
        b.client.refresh().await.unwrap();
        status = b.text("#status").await;
        if status == "DONE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "DONE");
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_new")
            .await,
        0
    );

    // Revoking the key ends its session.
    assert!(erasure::keys::revoke(&app.pool, "dpo-desk").await.unwrap());
    b.client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(b.settled_path("/sign-in").await, "/sign-in");

    // The identifiers searched for and submitted are in no URL visited and no log line.
    let history = b
        .client
        .execute("return performance.getEntriesByType('navigation').map(e => e.name).concat([location.href]);", vec![])
        .await
        .unwrap();
    let _ = browser.client.clone().close().await;
    service.start_kill().unwrap();
    service.wait().await.unwrap();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("/deletions/{id}"),
        "the log records matched routes"
    );
    for personal in ["src_web_9f2", "cust_web", "src_new_7c1"] {
        assert!(!logged.contains(personal), "{personal} in the log");
        assert!(
            !history.to_string().contains(personal),
            "{personal} in a URL: {history}"
        );
    }
    let _ = std::fs::remove_file(&log);
    let _: Value = history;
    let _ = Uuid::nil();
    app.cleanup().await;
}

#[tokio::test]
async fn wrong_keys_at_sign_in_are_limited_per_client_and_told_apart_from_right_ones() {
    let mut app = TestApp::with_settings(|s| s.http.rate_limit_per_minute = 3).await;
    let key = erasure::keys::create(&app.pool, "officer", true)
        .await
        .unwrap();
    let base = app.start(erasure::startup::Mode::Api).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |body: String| {
        http.post(format!("{base}/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-forwarded-for", format!("10.0.0.{}", body.len()))
            .body(body)
            .send()
    };
    // The allowance counts in minute windows: the right sign-in and the wrong ones below are
    // counted together (three in all, then the fourth is refused), so they must not straddle
    // two windows.
    crate::http_api::fresh_minute(&app).await;
    let right = sign_in(format!("key={key}")).await.unwrap();
    assert_eq!(right.status(), 303);
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "no Secure without console.secure_cookie"
    );
    for _ in 0..2 {
        assert_eq!(
            sign_in("key=erk_x_wrong".into()).await.unwrap().status(),
            401
        );
    }
    // A header of the client's choosing does not give it a new allowance.
    let limited = sign_in("key=erk_x_wrong_again".into()).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.text().await.unwrap().contains("Too many attempts"));
    app.cleanup().await;
}

/// A page of another site on `localhost` (the console runs on 127.0.0.1: another site to the
/// browser), serving `html` to every request; it ends with the test.
async fn other_site(html: String) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    (format!("http://localhost:{port}"), task)
}

#[tokio::test]
async fn sign_in_refuses_posts_from_other_sites_and_every_refusal_is_the_consoles_own_page() {
    let mut app = TestApp::new().await;
    let attacker = erasure::keys::create(&app.pool, "attacker", true)
        .await
        .unwrap();
    let base = app.start(erasure::startup::Mode::Api).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let host = base.trim_start_matches("http://").to_owned();
    let sign_in = |headers: Vec<(&'static str, String)>| {
        let mut request = http
            .post(format!("{base}/sign-in"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("key={attacker}"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request.send()
    };
    for refused in [
        vec![("sec-fetch-site", "cross-site".to_string())],
        vec![("sec-fetch-site", "same-site".to_string())],
        vec![("origin", "http://evil.example".to_string())],
        vec![("origin", "null".to_string())],
    ] {
        let answer = sign_in(refused.clone()).await.unwrap();
        assert_eq!(answer.status(), 403, "{refused:?}");
        assert!(answer.headers().get("set-cookie").is_none(), "{refused:?}");
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(answer.text().await.unwrap().contains("another site"));
    }
    for allowed in [
        vec![("sec-fetch-site", "same-origin".to_string())],
        vec![("origin", format!("http://{host}"))],
        vec![],
    ] {
        let answer = sign_in(allowed.clone()).await.unwrap();
        assert_eq!(answer.status(), 303, "{allowed:?}");
    }

    // With a session: a form without its token, one without a field it needs, and a body that
    // is not a form are refused with the console's page, never plain text.
    let caller = erasure::keys::verify(&app.pool, &attacker)
        .await
        .unwrap()
        .unwrap();
    let token = erasure::http::console::session::open(&app.pool, &caller, 1)
        .await
        .unwrap();
    let cookie = format!("erasure_session={token}");
    let csrf: String = sqlx::query_scalar(
        "SELECT csrf_token FROM erasure.console_sessions WHERE token_hash = sha256($1::bytea)",
    )
    .bind(token.as_bytes())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    for (path, content_type, body, status) in [
        (
            "/find",
            "application/x-www-form-urlencoded",
            "q=cust_1".to_string(),
            403,
        ),
        (
            "/sign-out",
            "application/x-www-form-urlencoded",
            String::new(),
            403,
        ),
        (
            "/find",
            "application/x-www-form-urlencoded",
            format!("csrf={csrf}"),
            422,
        ),
        ("/find", "text/plain", format!("csrf={csrf}&q=x"), 415),
    ] {
        let answer = http
            .post(format!("{base}{path}"))
            .header("cookie", &cookie)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), status, "{path} {body}");
        assert!(
            answer.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path} {body}"
        );
        let page = answer.text().await.unwrap();
        assert!(page.contains("<h1>Refused</h1>"), "{path} {body}: {page}");
    }

    // In a real browser: a page of another site posts the attacker's key to sign-in.
    let (evil, evil_task) = other_site(format!(
        "<!doctype html><title>Win a prize</title><form method=post action=\"{base}/sign-in\">\
         <input type=hidden name=key value=\"{attacker}\"><button id=go>Claim</button></form>"
    ))
    .await;
    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&evil).await.unwrap();
    b.click("#go").await;
    assert!(b.text("main").await.contains("another site"));
    assert_eq!(b.text("h1").await, "Refused");
    assert!(
        b.accessibility_violations().await.is_empty(),
        "refusal page"
    );
    b.client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(
        b.settled_path("/sign-in").await,
        "/sign-in",
        "no session was opened"
    );

    // Signing in on the console's own page works, and every page starts with a skip link to
    // its content.
    b.sign_in(&base, &attacker).await;
    assert_eq!(b.settled_path("/").await, "/");
    let first = b
        .client
        .execute(
            "const a = document.body.firstElementChild; return [a.tagName, a.getAttribute('href'), a.textContent];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(first, json!(["A", "#main", "Skip to the content"]));
    assert_eq!(
        b.element("main#main")
            .await
            .attr("tabindex")
            .await
            .unwrap()
            .as_deref(),
        Some("-1")
    );
    let _ = browser.client.clone().close().await;
    evil_task.abort();
    app.cleanup().await;
}

/// The files of a ZIP archive whose entries are stored (as the evidence pack's are).
fn unzip(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut at = 0;
    let u16_at = |i: usize| u16::from_le_bytes([archive[i], archive[i + 1]]) as usize;
    let u32_at = |i: usize| u32::from_le_bytes(archive[i..i + 4].try_into().unwrap()) as usize;
    while at + 30 <= archive.len() && u32_at(at) == 0x0403_4b50 {
        assert_eq!(u16_at(at + 8), 0, "stored, not compressed");
        let size = u32_at(at + 18);
        let name_len = u16_at(at + 26);
        let extra = u16_at(at + 28);
        let name = String::from_utf8(archive[at + 30..at + 30 + name_len].to_vec()).unwrap();
        let start = at + 30 + name_len + extra;
        files.insert(name, archive[start..start + size].to_vec());
        at = start + size;
    }
    files
}

/// `erasure receipt verify ...` in `dir`, with no database to reach: (exit code, stdout, stderr).
async fn verify_offline(
    app: &TestApp,
    dir: &std::path::Path,
    args: &[&str],
) -> (i32, String, String) {
    let output = app
        .command()
        .current_dir(dir)
        .env(
            "ERASURE_DATABASE_URL",
            "postgres://nobody@127.0.0.1:1/unreachable",
        )
        .env(
            "ERASURE_CONFIG_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config"),
        )
        .args(["receipt", "verify"])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_deletion_page_proves_the_erasure_with_an_evidence_pack_checked_offline_and_a_printed_certificate()
 {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_proof", "src_proof_4d1", Shape::typical())
        .await;
    let reader = erasure::keys::create(&app.pool, "auditor", true)
        .await
        .unwrap();
    let base = app.start(erasure::startup::Mode::All).await;
    let request_id = app.request_erasure("src_proof_4d1").await;
    let done = app.wait_for_final(request_id).await;
    assert_eq!(done.status, DeletionStatus::Done);
    // The check after commit has run, and every audit row of the request is sealed.
    for _ in 0..200 {
        let waiting = app
            .count(
                "SELECT (SELECT count(*) FROM erasure.verification_queue WHERE deletion_id = $1) \
                 + (SELECT count(*) FROM erasure.audit_log a WHERE a.deletion_id = $1 \
                    AND a.xid >= COALESCE((SELECT max(xid_to) FROM erasure.audit_seals), '0'::xid8))",
                &done.id,
            )
            .await;
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An open deletion, which has no proof yet.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel) \
         VALUES ('del_0penProof000000000000000', gen_random_uuid(), 'PENDING', now(), now() + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();

    let browser = Browser::start().await;
    let b = &browser;
    b.sign_in(&base, &reader).await;
    assert_eq!(b.settled_path("/").await, "/");
    b.client
        .goto(&format!("{base}/deletions/{}", done.id))
        .await
        .unwrap();
    assert_eq!(
        b.element("#verification")
            .await
            .attr("data-outcome")
            .await
            .unwrap()
            .as_deref(),
        Some("passed")
    );
    assert!(b.text("#verification").await.starts_with("Passed"));
    assert_eq!(b.text("#plan-hash").await, done.plan_hash.clone().unwrap());
    assert!(
        b.accessibility_violations().await.is_empty(),
        "deletion page"
    );
    // The page whole, for the README.
    b.client.set_window_size(1280, 1700).await.unwrap();
    b.screenshot("deletion-proof.png").await;
    b.client.set_window_size(1280, 1000).await.unwrap();
    let href = |css: &'static str| async move {
        b.element(css).await.attr("href").await.unwrap().unwrap()
    };
    assert_eq!(
        href("#receipt").await,
        format!("/deletions/{}/receipt", done.id)
    );
    let evidence_link = href("#evidence").await;

    // The session's key fetches the receipt and the evidence pack.
    let cookie = b.client.get_named_cookie("erasure_session").await.unwrap();
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{base}{path}"))
            .header("cookie", format!("erasure_session={}", cookie.value()))
            .send()
    };
    let receipt: Value = get(format!("/deletions/{}/receipt", done.id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(receipt["object"], "erasure_receipt");
    assert_eq!(receipt["verification"]["outcome"], "passed");
    let pack = get(evidence_link).await.unwrap();
    assert_eq!(pack.headers()["content-type"], "application/zip");
    let files = unzip(&pack.bytes().await.unwrap());
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        [
            "HOW-TO-CHECK.txt",
            "audit.json",
            "receipt-keys.json",
            "receipt.json"
        ]
    );
    let how = String::from_utf8(files["HOW-TO-CHECK.txt"].clone()).unwrap();
    assert!(
        how.contains(
            "erasure receipt verify receipt.json --key receipt-keys.json --audit audit.json"
        ),
        "{how}"
    );
    let audit: Value = serde_json::from_slice(&files["audit.json"]).unwrap();
    let rows = audit["rows"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["seal"].is_i64()),
        "{audit}"
    );
    for personal in ["src_proof_4d1", "Name of", "@mail.example"] {
        for (name, bytes) in &files {
            assert!(
                !String::from_utf8_lossy(bytes).contains(personal),
                "{personal} in {name}"
            );
        }
    }

    // Checked offline by the binary, as the pack's text says; a changed row or receipt fails.
    let dir = std::env::temp_dir().join(format!("erasure-test-{}-evidence", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let args = [
        "receipt.json",
        "--key",
        "receipt-keys.json",
        "--audit",
        "audit.json",
    ];
    let (code, out, err) = verify_offline(&app, &dir, &args).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("receipt checks: deletion {} DONE", done.id)),
        "{out}"
    );
    assert!(
        out.contains(&format!("audit rows check: {} rows listed by", rows.len())),
        "{out}"
    );
    let mut changed = audit.clone();
    changed["rows"][0]["row"]["channel"] = json!("http");
    std::fs::write(
        dir.join("audit.json"),
        serde_json::to_vec(&changed).unwrap(),
    )
    .unwrap();
    let (code, _, err) = verify_offline(&app, &dir, &args).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not as seal"), "{err}");
    std::fs::write(dir.join("audit.json"), &files["audit.json"]).unwrap();
    let mut forged = receipt.clone();
    forged["data_json"]["events"] = json!(0);
    std::fs::write(
        dir.join("receipt.json"),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let (code, _, err) = verify_offline(&app, &dir, &args).await;
    assert_eq!(code, 1, "{err}");

    // The certificate, printed to PDF by Chromium: the facts, without the console around them.
    b.click("#certificate").await;
    let expected = format!("/deletions/{}/certificate", done.id);
    assert_eq!(b.settled_path(&expected).await, expected);
    assert!(b.accessibility_violations().await.is_empty(), "certificate");
    b.screenshot("certificate.png").await;
    let pdf = b
        .client
        .print(fantoccini::wd::PrintConfiguration::default())
        .await
        .unwrap();
    assert!(pdf.starts_with(b"%PDF"));
    std::fs::write(dir.join("certificate.pdf"), &pdf).unwrap();
    let text = Command::new("pdftotext")
        .args(["-layout", "certificate.pdf", "-"])
        .current_dir(&dir)
        .output()
        .await
        .expect("pdftotext runs (apt-get install poppler-utils)");
    let text = String::from_utf8_lossy(&text.stdout).replace('\n', " ");
    // Long values (the plan hash, the key id) may break across lines on paper.
    let unbroken: String = text.split_whitespace().collect();
    for fact in [
        "Certificate of erasure",
        done.id.as_str(),
        "cust_proof",
        &request_id.to_string(),
        "passed",
        done.plan_hash.as_deref().unwrap(),
        receipt["key_id"].as_str().unwrap(),
    ] {
        let fact_unbroken: String = fact.split_whitespace().collect();
        assert!(
            unbroken.contains(&fact_unbroken),
            "{fact} not in the printed certificate: {text}"
        );
    }
    for left_out in [
        "Sign out",
        "Find a request",
        "Back to the deletion",
        "src_proof_4d1",
    ] {
        assert!(!text.contains(left_out), "{left_out} printed: {text}");
    }

    // An open deletion has none of it yet.
    b.client
        .goto(&format!("{base}/deletions/del_0penProof000000000000000"))
        .await
        .unwrap();
    assert!(
        b.text("#no-proof-yet")
            .await
            .contains("once the request has ended")
    );
    for what in ["receipt", "evidence", "certificate"] {
        let answer = get(format!("/deletions/del_0penProof000000000000000/{what}"))
            .await
            .unwrap();
        assert_eq!(answer.status(), 409, "{what}");
        assert!(answer.text().await.unwrap().contains("<h1>"), "{what}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = browser.client.clone().close().await;
    app.cleanup().await;
}

/// The id part of a key `erk_<id>_<secret>`.
fn key_id(key: &str) -> String {
    key.trim_start_matches("erk_")
        .split('_')
        .next()
        .unwrap()
        .to_owned()
}

/// Waits until every audit row is sealed.
async fn wait_until_sealed(app: &TestApp) {
    for _ in 0..200 {
        let unsealed = app
            .count_of(
                "SELECT count(*) FROM erasure.audit_log a \
                 WHERE a.xid >= COALESCE((SELECT max(xid_to) FROM erasure.audit_seals), '0'::xid8)",
            )
            .await;
        if unsealed == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the audit rows were not sealed in 20 s");
}

#[tokio::test]
async fn every_deletion_and_audit_row_names_the_key_that_submitted_or_acted_on_it() {
    use crate::http_api::Api;
    let mut app = TestApp::new().await;
    for (id, source) in [
        ("cust_api", "src_api"),
        ("cust_queue", "src_queue"),
        ("cust_page", "src_page"),
    ] {
        app.seed_customer(id, source, Shape::typical()).await;
    }
    let base = app.start(erasure::startup::Mode::All).await;
    let writer = Api::new(&app, base.clone(), false).await;
    let canceller = Api::new(&app, base.clone(), false).await;
    let writer_key = json!({"id": key_id(&writer.key), "name": writer.name});
    let audit_keys = |deletion: String| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
                "SELECT action, key_id, key_name FROM erasure.audit_log WHERE deletion_id = $1 ORDER BY id",
            )
            .bind(deletion)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };

    // Over the API: the deletion and its outcome's audit row name the submitting key.
    let answer = writer
        .post("src_api", None, Some(json!({"requested_by": "crm"})))
        .await;
    assert_eq!(answer.status(), 202);
    let accepted: Value = answer.json().await.unwrap();
    assert_eq!(accepted["requested_by_key"], writer_key, "{accepted}");
    assert_eq!(accepted["requested_by"], "crm");
    let id = accepted["id"].as_str().unwrap().to_owned();
    let done = writer.wait_for_final(&id).await;
    assert_eq!(done["requested_by_key"], writer_key, "{done}");
    let rows = audit_keys(id.clone()).await;
    assert!(!rows.is_empty());
    for (action, key, name) in &rows {
        assert_eq!(
            key.as_deref(),
            Some(key_id(&writer.key).as_str()),
            "{action}"
        );
        assert_eq!(name.as_deref(), Some(writer.name.as_str()), "{action}");
    }

    // Over the queue: no key.
    let queued = app.request_erasure("src_queue").await;
    let queued = app.wait_for_final(queued).await;
    let (_, object) = writer
        .get(&format!("/v1/permanent-deletions/{}", queued.id))
        .await;
    assert_eq!(object["requested_by_key"], Value::Null, "{object}");
    assert!(
        audit_keys(queued.id.clone())
            .await
            .iter()
            .all(|(_, k, n)| k.is_none() && n.is_none())
    );

    // A cancel names the key that canceled, not the one that submitted.
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, status, requested_at, due_at, channel, \
           requested_by, requested_by_key_id, requested_by_key_name) \
         VALUES ('del_heldForCancel00000000000', gen_random_uuid(), 'PENDING', now(), now() + interval '1 month', \
           'http', 'crm', $1, $2)",
    )
    .bind(key_id(&writer.key))
    .bind(&writer.name)
    .execute(&app.pool)
    .await
    .unwrap();
    let canceled = canceller
        .request(
            reqwest::Method::DELETE,
            "/v1/permanent-deletions/del_heldForCancel00000000000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(canceled.status(), 200);
    let canceled: Value = canceled.json().await.unwrap();
    assert_eq!(
        canceled["requested_by_key"], writer_key,
        "the submitter stays"
    );
    let rows = audit_keys("del_heldForCancel00000000000".into()).await;
    assert_eq!(
        rows,
        [(
            "erasure.canceled".to_string(),
            Some(key_id(&canceller.key)),
            Some(canceller.name.clone())
        )]
    );

    // In the console: a request submitted there names the session's key, on its page, in its
    // audit trail and in the CSV.
    let browser = Browser::start().await;
    let b = &browser;
    b.sign_in(&base, &writer.key).await;
    assert_eq!(b.settled_path("/").await, "/");
    b.click("a[href='/submit']").await;
    b.fill("#customer_id", "src_page").await;
    b.fill("#requested_by", "letter from the data subject")
        .await;
    b.click("form.stack button").await;
    assert!(b.text("#preview").await.contains("events"));
    b.click("form.stack button").await;
    let mut status = String::new();
    for _ in 0..100 {
        if b.path().await.starts_with("/deletions/del_") {
            b.client.refresh().await.unwrap();
            status = b.text("#status").await;
            if status == "DONE" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "DONE");
    let shown = b.text("#requested-by-key").await;
    assert!(
        shown.contains(&writer.name) && shown.contains(&key_id(&writer.key)),
        "{shown}"
    );
    let keys_shown = {
        let mut texts = Vec::new();
        for cell in b
            .client
            .find_all(Locator::Css("#audit td.key"))
            .await
            .unwrap()
        {
            texts.push(cell.text().await.unwrap());
        }
        texts
    };
    assert!(!keys_shown.is_empty());
    assert!(
        keys_shown.iter().all(|k| k.contains(&writer.name)),
        "{keys_shown:?}"
    );
    assert!(
        b.accessibility_violations().await.is_empty(),
        "deletion page"
    );
    let page_id = b.path().await.trim_start_matches("/deletions/").to_owned();
    let cookie = b.client.get_named_cookie("erasure_session").await.unwrap();
    let csv = reqwest::Client::new()
        .get(format!("{base}/deletions.csv"))
        .header("cookie", format!("erasure_session={}", cookie.value()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let line = csv.lines().find(|l| l.starts_with(&page_id)).unwrap();
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields[column("requested_by_key_id")], key_id(&writer.key));
    assert_eq!(fields[column("requested_by_key_name")], writer.name);
    let queue_line = csv.lines().find(|l| l.starts_with(&queued.id)).unwrap();
    assert_eq!(
        queue_line.split(',').nth(column("requested_by_key_id")),
        Some("")
    );
    let _ = browser.client.clone().close().await;

    // The seals hash the key a row names, and the log still checks (rows without a key keep
    // the hash they always had).
    wait_until_sealed(&app).await;
    let output = app
        .command()
        .args(["audit", "verify"])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(3),
        "{said}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(said.contains("audit log checks"), "{said}");
    app.cleanup().await;
}

/// Seeds a deletion `id` due in `due_days` (past when negative; asked a month before), in
/// `status`, ended `ended_days` ago where final, for customer `customer`.
async fn seed_deletion(
    app: &TestApp,
    id: &str,
    status: &str,
    customer: &str,
    due_days: i64,
    ended_days: Option<i64>,
) {
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel, \
           created_at, completed_at, error_key, error_message, data_json) \
         SELECT $1, gen_random_uuid(), $3, $2, now() + $4 * interval '1 day' - interval '1 month', \
           now() + $4 * interval '1 day', 'amqp', now() + $4 * interval '1 day' - interval '1 month', \
           now() - $5 * interval '1 day', \
           CASE WHEN $2 = 'FAILED' THEN 'conflict' END, CASE WHEN $2 = 'FAILED' THEN 'an open order' END, \
           CASE WHEN $2 = 'DONE' THEN '{\"events\": 3}'::jsonb ELSE '{}'::jsonb END",
    )
    .bind(id)
    .bind(status)
    .bind(customer)
    .bind(due_days as f64)
    .bind(ended_days.map(|d| d as f64))
    .execute(&app.pool)
    .await
    .unwrap();
}

/// The deletion ids a page lists.
async fn listed(b: &Browser) -> std::collections::BTreeSet<String> {
    let mut ids = std::collections::BTreeSet::new();
    for cell in b
        .client
        .find_all(Locator::Css("#deletions tbody tr td:first-child a"))
        .await
        .unwrap()
    {
        ids.insert(cell.text().await.unwrap());
    }
    ids
}

#[tokio::test]
async fn deadlines_show_what_is_overdue_due_soon_or_late_and_a_write_key_extends_one_with_a_reason()
{
    use crate::http_api::Api;
    let mut app = TestApp::new().await;
    let ids = |names: &[&str]| -> std::collections::BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    };
    // Owed: a FAILED request 40 days old nobody retried, a PENDING one 9 days overdue, one due
    // in 5 days. Not owed: a FAILED one retried, a FAILED one whose customer a later request
    // erased, a canceled one. Done: 9 days late, and in time.
    seed_deletion(
        &app,
        "del_failedForty0000000000000",
        "FAILED",
        "cust_f40",
        -10,
        Some(39),
    )
    .await;
    seed_deletion(
        &app,
        "del_pendingLate0000000000000",
        "PENDING",
        "cust_pl",
        -9,
        None,
    )
    .await;
    seed_deletion(
        &app,
        "del_dueInFive000000000000000",
        "PENDING",
        "cust_d5",
        5,
        None,
    )
    .await;
    seed_deletion(
        &app,
        "del_failedRetried00000000000",
        "FAILED",
        "cust_fr",
        -10,
        Some(30),
    )
    .await;
    seed_deletion(
        &app,
        "del_theRetry0000000000000000",
        "DONE",
        "cust_fr",
        10,
        Some(2),
    )
    .await;
    sqlx::query("UPDATE erasure.deletions SET retry_of = 'del_failedRetried00000000000' WHERE id = 'del_theRetry0000000000000000'")
        .execute(&app.pool)
        .await
        .unwrap();
    seed_deletion(
        &app,
        "del_failedThenDone0000000000",
        "FAILED",
        "cust_ftd",
        -10,
        Some(30),
    )
    .await;
    seed_deletion(
        &app,
        "del_laterDone000000000000000",
        "DONE",
        "cust_ftd",
        10,
        Some(19),
    )
    .await;
    seed_deletion(
        &app,
        "del_canceled0000000000000000",
        "CANCELED",
        "cust_c",
        20,
        Some(9),
    )
    .await;
    seed_deletion(
        &app,
        "del_doneLate0000000000000000",
        "DONE",
        "cust_dl",
        -9,
        Some(0),
    )
    .await;
    let base = app.start(erasure::startup::Mode::Api).await;
    let writer = Api::new(&app, base.clone(), false).await;
    let reader = erasure::keys::create(&app.pool, "reader", true)
        .await
        .unwrap();

    let browser = Browser::start().await;
    let b = &browser;
    b.sign_in(&base, &reader).await;
    assert_eq!(b.settled_path("/").await, "/");
    let count = |deadline: &'static str| async move {
        b.text(&format!(
            "#deadline-counts tr[data-deadline='{deadline}'] td"
        ))
        .await
    };
    assert_eq!(count("overdue").await, "2");
    assert_eq!(count("due_soon").await, "1");
    assert_eq!(count("late").await, "1");
    // Each named as the people who follow requests say it.
    for (deadline, label) in [
        ("overdue", "Overdue"),
        ("due_soon", "Due within 7 days"),
        ("late", "Completed late"),
    ] {
        let link = format!("#deadline-counts tr[data-deadline='{deadline}'] a");
        assert_eq!(b.text(&link).await, label);
    }
    let overdue_rows = b
        .client
        .find_all(Locator::Css("#overdue-list tbody tr"))
        .await
        .unwrap();
    assert_eq!(overdue_rows.len(), 2);
    assert!(b.accessibility_violations().await.is_empty(), "overview");
    for (deadline, expected) in [
        (
            "overdue",
            ids(&[
                "del_failedForty0000000000000",
                "del_pendingLate0000000000000",
            ]),
        ),
        ("due_soon", ids(&["del_dueInFive000000000000000"])),
        ("late", ids(&["del_doneLate0000000000000000"])),
    ] {
        b.click(&format!(
            "#deadline-counts tr[data-deadline='{deadline}'] a"
        ))
        .await;
        let path = format!("/deletions?deadline={deadline}");
        assert_eq!(b.settled_path(&path).await, path);
        assert_eq!(listed(b).await, expected, "{deadline}");
        assert!(
            b.accessibility_violations().await.is_empty(),
            "{deadline} list"
        );
        b.client.goto(&format!("{base}/")).await.unwrap();
    }

    // The words of each deadline; a canceled request ends "Canceled", with no table of zeros.
    let page = |id: &'static str| {
        let url = format!("{base}/deletions/{id}");
        async move { b.client.goto(&url).await.unwrap() }
    };
    page("del_pendingLate0000000000000").await;
    assert_eq!(b.text("#deadline").await, "9 days overdue");
    assert_eq!(b.text("#ended").await, "Not ended yet");
    assert!(b.text("#no-counts").await.contains("not been carried out"));
    assert!(
        b.client
            .find_all(Locator::Css("#counts"))
            .await
            .unwrap()
            .is_empty(),
        "no table of zeros for an open request"
    );
    page("del_failedForty0000000000000").await;
    assert_eq!(b.text("#deadline").await, "10 days overdue");
    page("del_dueInFive000000000000000").await;
    assert!(
        b.text("#deadline").await.ends_with("days left"),
        "{}",
        b.text("#deadline").await
    );
    page("del_doneLate0000000000000000").await;
    assert_eq!(b.text("#deadline").await, "completed 9 days late");
    page("del_canceled0000000000000000").await;
    assert!(b.text("#ended").await.starts_with("Canceled "));
    assert!(b.text("#no-counts").await.contains("canceled"));
    assert!(
        b.client
            .find_all(Locator::Css("#extend"))
            .await
            .unwrap()
            .is_empty()
    );
    page("del_failedRetried00000000000").await;
    assert_eq!(b.text("#retried-by").await, "del_theRetry0000000000000000");
    assert!(
        b.accessibility_violations().await.is_empty(),
        "deletion page"
    );

    // A write key extends the one due in 5 days, giving the reason; a read-only key cannot.
    page("del_dueInFive000000000000000").await;
    assert!(
        b.client
            .find_all(Locator::Css("#extend"))
            .await
            .unwrap()
            .is_empty()
    );
    b.click("form.signout button").await;
    b.sign_in(&base, &writer.key).await;
    assert_eq!(b.settled_path("/").await, "/");
    page("del_dueInFive000000000000000").await;
    b.click("#extend").await;
    assert_eq!(
        b.settled_path("/deletions/del_dueInFive000000000000000/extend")
            .await,
        "/deletions/del_dueInFive000000000000000/extend"
    );
    assert!(b.accessibility_violations().await.is_empty(), "extend form");
    let latest: String = b.element("#to").await.attr("max").await.unwrap().unwrap();
    // Past the latest date the form says why, and keeps the reason.
    let too_late =
        chrono::NaiveDate::parse_from_str(&latest, "%Y-%m-%d").unwrap() + chrono::Days::new(3);
    b.client
        .execute("document.getElementById('to').value = arguments[0]; document.getElementById('to').removeAttribute('max');", vec![json!(too_late.to_string())])
        .await
        .unwrap();
    b.fill(
        "#reason",
        "Records in three systems; the person was told on the phone",
    )
    .await;
    b.click("form.stack button").await;
    assert!(b.text("#refused").await.contains("at most three months"));
    b.client
        .execute(
            "document.getElementById('to').value = arguments[0];",
            vec![json!(latest)],
        )
        .await
        .unwrap();
    b.click("form.stack button").await;
    assert_eq!(
        b.settled_path("/deletions/del_dueInFive000000000000000")
            .await,
        "/deletions/del_dueInFive000000000000000"
    );
    assert!(b.text("#extended").await.starts_with("Extended from"));
    assert!(b.text("#deadline").await.ends_with("days left"));
    let note = b
        .text("#timeline li.note[data-action='erasure.extended']")
        .await;
    assert!(
        note.contains("Records in three systems") && note.contains(&writer.name),
        "{note}"
    );
    let (_, object) = writer
        .get("/v1/permanent-deletions/del_dueInFive000000000000000")
        .await;
    assert!(
        object["extended_due_at"]
            .as_str()
            .unwrap()
            .starts_with(&latest),
        "{object}"
    );
    let audit: (Option<String>, Value) = sqlx::query_as(
        "SELECT key_name, detail FROM erasure.audit_log WHERE deletion_id = 'del_dueInFive000000000000000' AND action = 'erasure.extended'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audit.0.as_deref(), Some(writer.name.as_str()));
    assert!(
        audit.1["reason_sha256"].is_string() && audit.1["note"].is_i64(),
        "{}",
        audit.1
    );
    assert!(
        !audit.1.to_string().contains("three systems"),
        "the reason is kept apart"
    );
    // No longer due soon; the 40-day FAILED one cannot be extended any more.
    b.client.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(count("due_soon").await, "0");
    page("del_failedForty0000000000000").await;
    assert!(
        b.client
            .find_all(Locator::Css("#extend"))
            .await
            .unwrap()
            .is_empty()
    );
    let refused = writer
        .request(reqwest::Method::POST, "/v1/permanent-deletions/del_failedForty0000000000000/extension")
        .json(&json!({"extended_due_at": (chrono::Utc::now() + chrono::Duration::days(20)).to_rfc3339(), "reason": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
    let _ = browser.client.clone().close().await;
    app.cleanup().await;
}

/// Waits until the page at `path` shows `status`, reloading it.
async fn wait_for_status(b: &Browser, base: &str, path: &str, status: &str) {
    let mut shown = String::new();
    for _ in 0..150 {
        b.client.goto(&format!("{base}{path}")).await.unwrap();
        shown = b.text("#status").await;
        if shown == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} shows {shown}, not {status}");
}

#[tokio::test]
async fn a_held_request_is_canceled_and_a_failed_one_retried_each_after_a_confirmation_with_a_reason()
 {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_retry", "src_retry", Shape::typical())
        .await;
    app.add_open_order("cust_retry").await;
    let writer = erasure::keys::create(&app.pool, "dpo-desk", false)
        .await
        .unwrap();
    let base = app.start(erasure::startup::Mode::All).await;
    let blocked = app.request_erasure("src_retry").await;
    let blocked = app.wait_for_final(blocked).await;
    assert_eq!(blocked.status, DeletionStatus::Failed);
    let ghost = app.request_erasure("ghost_7").await;
    let ghost = app.wait_for_final(ghost).await;
    assert_eq!(ghost.error_key, Some(erasure::deletion::ErrorKey::NotFound));
    // The guard no longer holds: the order was completed.
    sqlx::query("UPDATE orders SET status = 'COMPLETED' WHERE customer_id = 'cust_retry'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel) \
         VALUES ('del_heldRequest0000000000000', gen_random_uuid(), 'cust_held', 'PENDING', now(), now() + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let audit_of = |deletion: String, action: &'static str| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Value)>(
                "SELECT key_name, detail FROM erasure.audit_log WHERE deletion_id = $1 AND action = $2",
            )
            .bind(deletion)
            .bind(action)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };

    let browser = Browser::start().await;
    let b = &browser;
    b.sign_in(&base, &writer).await;
    assert_eq!(b.settled_path("/").await, "/");

    // Cancel: a confirmation page that requires a reason.
    b.client
        .goto(&format!("{base}/deletions/del_heldRequest0000000000000"))
        .await
        .unwrap();
    assert!(
        b.client
            .find_all(Locator::Css("#retry"))
            .await
            .unwrap()
            .is_empty()
    );
    b.click("#cancel").await;
    assert!(
        b.text("#consequence")
            .await
            .contains("will not be carried out")
    );
    assert!(
        b.accessibility_violations().await.is_empty(),
        "cancel confirmation"
    );
    b.client
        .execute(
            "document.getElementById('reason').removeAttribute('required');",
            vec![],
        )
        .await
        .unwrap();
    b.click("form.stack button").await;
    assert!(b.text("#refused").await.contains("reason"));
    b.fill("#reason", "The data subject withdrew the request by e-mail")
        .await;
    b.click("form.stack button").await;
    let held = "/deletions/del_heldRequest0000000000000";
    assert_eq!(b.settled_path(held).await, held);
    assert_eq!(b.text("#status").await, "CANCELED");
    let note = b
        .text("#timeline li.note[data-action='erasure.canceled']")
        .await;
    assert!(
        note.contains("withdrew the request") && note.contains("dpo-desk"),
        "{note}"
    );
    let (key, detail) = audit_of("del_heldRequest0000000000000".into(), "erasure.canceled").await;
    assert_eq!(key.as_deref(), Some("dpo-desk"));
    assert!(detail["reason_sha256"].is_string(), "{detail}");

    // Retry: a new request linked to the FAILED one, asked when it was, carried out.
    let failed_page = format!("/deletions/{}", blocked.id);
    b.client
        .goto(&format!("{base}{failed_page}"))
        .await
        .unwrap();
    assert!(
        b.client
            .find_all(Locator::Css("#cancel"))
            .await
            .unwrap()
            .is_empty()
    );
    b.click("#retry").await;
    assert!(
        b.client
            .find_all(Locator::Css("#identifier"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        b.accessibility_violations().await.is_empty(),
        "retry confirmation"
    );
    b.fill("#reason", "The open order was completed").await;
    b.click("form.stack button").await;
    let mut path = b.path().await;
    for _ in 0..100 {
        if path.starts_with("/deletions/del_") && !path.contains(&blocked.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        path = b.path().await;
    }
    let retry_id = path.trim_start_matches("/deletions/").to_owned();
    assert_ne!(retry_id, blocked.id);
    wait_for_status(b, &base, &path, "DONE").await;
    assert_eq!(b.text("#retry-of").await, blocked.id);
    assert!(b.text("#requested-by-key").await.contains("dpo-desk"));
    let retry = erasure::deletion::find(&app.pool, &retry_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retry.retry_of.as_deref(), Some(blocked.id.as_str()));
    assert_eq!(
        retry.requested_at, blocked.requested_at,
        "the deadline stays"
    );
    assert_eq!(retry.requested_by, blocked.requested_by);
    assert_eq!(
        app.count("SELECT count(*) FROM customers WHERE id = $1", "cust_retry")
            .await,
        0
    );
    b.client
        .goto(&format!("{base}{failed_page}"))
        .await
        .unwrap();
    assert_eq!(b.text("#retried-by").await, retry_id);
    assert!(
        b.client
            .find_all(Locator::Css("#retry"))
            .await
            .unwrap()
            .is_empty()
    );
    let (key, detail) = audit_of(blocked.id.clone(), "erasure.retried").await;
    assert_eq!(key.as_deref(), Some("dpo-desk"));
    assert_eq!(detail["retry"], json!(retry_id), "{detail}");
    let note = b
        .text("#timeline li.note[data-action='erasure.retried']")
        .await;
    assert!(note.contains("open order was completed"), "{note}");

    // A request that named nobody known is retried by the identifier it named, given again.
    b.client
        .goto(&format!("{base}/deletions/{}/retry", ghost.id))
        .await
        .unwrap();
    b.fill("#identifier", "ghost_8").await;
    b.fill("#reason", "Typo in the first request?").await;
    b.click("form.stack button").await;
    assert!(b.text("#refused").await.contains("not the identifier"));
    b.fill("#identifier", "ghost_7").await;
    b.click("form.stack button").await;
    let mut path = b.path().await;
    for _ in 0..100 {
        if path.starts_with("/deletions/del_") && !path.contains(&ghost.id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        path = b.path().await;
    }
    assert!(
        path.starts_with("/deletions/del_") && !path.contains(&ghost.id),
        "{path}"
    );
    wait_for_status(b, &base, &path, "FAILED").await;
    assert_eq!(b.text("#retry-of").await, ghost.id);
    for personal in ["ghost_7", "ghost_8"] {
        assert_eq!(
            app.rows_containing(personal).await,
            Vec::<String>::new(),
            "{personal}"
        );
    }
    let _ = browser.client.clone().close().await;
    app.cleanup().await;
}

/// Searches the console for `q` as `kind` (the header's search box), from the current page.
async fn search(b: &Browser, q: &str, kind: &str) {
    b.fill("#find-q", q).await;
    b.element(&format!("#find-kind option[value='{kind}']"))
        .await
        .click()
        .await
        .unwrap();
    b.click("form.find button").await;
}

#[tokio::test]
async fn the_search_finds_requests_by_any_lookup_the_plan_declares_and_says_what_it_cannot_search_by()
 {
    use crate::http_api::Api;
    let mut app = TestApp::with_schema(crate::shared_rows::SCHEMA, crate::shared_rows::PLAN).await;
    sqlx::raw_sql(
        "INSERT INTO store.address (address_id, address, postal_code, phone) VALUES \
           (1, '1 Storefront Way', 'SF1', '+1-555-0001'), (2, '2 Staff Street', 'SS2', '+1-555-0002'); \
         INSERT INTO store.store (store_id, address_id) VALUES (1, 1); \
         INSERT INTO store.customer (customer_id, store_id, first_name, last_name, email, address_id) VALUES \
           (1, 1, 'Stella', 'Storeside', 'stella@storeside.example', 1), \
           (2, 1, 'Stan', 'Staffside', 'stan@staffside.example', 2);",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    // Stella erased by her key; Stan's request waits (no worker runs).
    let eraser = app.eraser();
    let stella = match eraser
        .erase(
            &eraser
                .receive(
                    erasure::request::ErasureRequest {
                        request_id: Uuid::new_v4(),
                        customer_id: "1".into(),
                        requested_by: "dpo".into(),
                        reason: None,
                        requested_at: None,
                        identifier_type: None,
                    },
                    erasure::request::Channel::Cli,
                    chrono::Utc::now(),
                )
                .unwrap(),
        )
        .await
        .unwrap()
    {
        erasure::erase::Outcome::Recorded(row) => row,
        other => panic!("{other:?}"),
    };
    assert_eq!(stella.status, DeletionStatus::Done);
    let base = app.start(erasure::startup::Mode::Api).await;
    let writer = Api::new(&app, base.clone(), false).await;
    let answer = writer.post("2", None, None).await;
    assert_eq!(answer.status(), 202);
    let stan: Value = answer.json().await.unwrap();
    let reader = erasure::keys::create(&app.pool, "reader", true)
        .await
        .unwrap();

    let browser = Browser::start().await;
    let b = &browser;
    b.sign_in(&base, &reader).await;
    assert_eq!(b.settled_path("/").await, "/");
    // The search box says what it accepts.
    let placeholder = b
        .element("#find-q")
        .await
        .attr("placeholder")
        .await
        .unwrap()
        .unwrap();
    assert!(placeholder.contains("email"), "{placeholder}");
    // The erased customer by her e-mail (compared in any case, as the plan declares), through
    // the keyed hash her deletion kept; the live one's request through the customer it names.
    let stella_page = format!("/deletions/{}", stella.id);
    for (q, kind) in [
        ("STELLA@Storeside.example", "any"),
        ("stella@storeside.example", "email"),
        ("1", "key"),
    ] {
        search(b, q, kind).await;
        assert_eq!(
            b.settled_path(&stella_page).await,
            stella_page,
            "{q} as {kind}"
        );
    }
    let stan_page = format!("/deletions/{}", stan["id"].as_str().unwrap());
    search(b, "stan@staffside.example", "email").await;
    assert_eq!(b.settled_path(&stan_page).await, stan_page);
    assert_eq!(b.text("#status").await, "PENDING");
    // As the wrong kind, or nobody's: nothing found, saying what can be searched.
    search(b, "stella@storeside.example", "key").await;
    assert!(
        b.text("#nothing-found")
            .await
            .contains("lookup value (email)")
    );
    search(b, "nobody@nowhere.example", "any").await;
    assert!(
        b.text("#nothing-found")
            .await
            .contains("lookup value (email)")
    );
    assert!(b.accessibility_violations().await.is_empty(), "found page");
    let _ = browser.client.clone().close().await;
    app.cleanup().await;

    // A plan without an e-mail lookup says so, instead of "nothing found".
    let mut app = TestApp::new().await;
    app.seed_customer("cust_mail", "src_mail", Shape::typical())
        .await;
    let base = app.start(erasure::startup::Mode::All).await;
    let done = app.request_erasure("src_mail").await;
    app.wait_for_final(done).await;
    let reader = erasure::keys::create(&app.pool, "reader", true)
        .await
        .unwrap();
    let browser = Browser::start().await;
    let b = &browser;
    b.sign_in(&base, &reader).await;
    assert_eq!(b.settled_path("/").await, "/");
    search(b, "cust_mail@mail.example", "any").await;
    let said = b.text("#not-a-lookup").await;
    assert!(
        said.contains("e-mail address") && said.contains("source_id"),
        "{said}"
    );
    assert!(
        b.accessibility_violations().await.is_empty(),
        "not a lookup"
    );
    let _ = browser.client.clone().close().await;
    app.cleanup().await;
}

/// How the page fits a phone: the document's width against the viewport's, and any element of
/// the header that reaches past the viewport's right edge.
async fn fit(b: &Browser) -> Value {
    b.client
        .execute(
            "const vw = window.innerWidth; \
             const cut = [...document.querySelectorAll('header *')] \
               .filter(e => e.getClientRects().length && e.getBoundingClientRect().right > vw + 0.5) \
               .map(e => e.tagName + (e.id ? '#' + e.id : '')); \
             return {doc: document.documentElement.scrollWidth, body: document.body.scrollWidth, vw, cut};",
            vec![],
        )
        .await
        .unwrap()
}

/// Checks the page fits a 390 px wide phone (no sideways scroll, nothing of the header cut off)
/// and has no serious accessibility violation there.
async fn fits_a_phone(b: &Browser, what: &str) {
    // The page may still be loading after a click.
    for _ in 0..40 {
        let ready = b
            .client
            .execute("return document.readyState;", vec![])
            .await
            .unwrap();
        if ready == "complete" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fit = fit(b).await;
    assert_eq!(fit["vw"], 390, "{what}: {fit}");
    assert!(
        fit["doc"].as_i64().unwrap() <= 390 && fit["body"].as_i64().unwrap() <= 390,
        "{what} scrolls sideways on a phone: {fit}"
    );
    assert_eq!(
        fit["cut"],
        json!([]),
        "{what}: the header is cut off: {fit}"
    );
    let violations = b.accessibility_violations().await;
    assert!(violations.is_empty(), "{what} on a phone: {violations:?}");
}

#[tokio::test]
async fn every_page_fits_a_phone_without_sideways_scroll_and_its_charts_stay_readable() {
    let mut app = TestApp::new().await;
    app.seed_customer("cust_phone", "src_phone", Shape::typical())
        .await;
    app.seed_customer("cust_blocked", "src_blocked", Shape::typical())
        .await;
    app.seed_customer("cust_next", "src_next", Shape::typical())
        .await;
    app.add_open_order("cust_blocked").await;
    seed_statuses(&app).await;
    let writer = erasure::keys::create(&app.pool, "a-rather-long-key-name-for-the-dpo-desk", false)
        .await
        .unwrap();
    let base = app.start(erasure::startup::Mode::All).await;
    let done = app.request_erasure("src_phone").await;
    let done = app.wait_for_final(done).await;
    let failed = app.request_erasure("src_blocked").await;
    let failed = app.wait_for_final(failed).await;
    assert_eq!(failed.status, DeletionStatus::Failed);
    sqlx::query(
        "INSERT INTO erasure.deletions (id, request_id, related_object_id, status, requested_at, due_at, channel) \
         VALUES ('del_phonePending000000000000', gen_random_uuid(), 'cust_gone', 'PENDING', now(), now() + interval '1 month', 'http')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let canceled: String =
        sqlx::query_scalar("SELECT id FROM erasure.deletions WHERE status = 'CANCELED' LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .unwrap();

    let browser = Browser::start().await;
    let b = &browser;
    b.client.set_window_size(390, 844).await.unwrap();
    // The window's size is its outer size: make the viewport itself 390 px wide.
    let inner: i64 = b
        .client
        .execute("return window.innerWidth;", vec![])
        .await
        .unwrap()
        .as_i64()
        .unwrap();
    if inner != 390 {
        b.client
            .set_window_size((390 + (390 - inner)) as u32, 844)
            .await
            .unwrap();
    }
    b.client.goto(&format!("{base}/sign-in")).await.unwrap();
    fits_a_phone(b, "sign-in").await;
    b.sign_in(&base, "erk_wrong_key").await;
    assert!(b.text("p.error").await.contains("unknown"));
    fits_a_phone(b, "sign-in refused").await;
    b.sign_in(&base, &writer).await;
    assert_eq!(b.settled_path("/").await, "/");
    fits_a_phone(b, "overview").await;
    // Chart labels are readable: at least 10 px tall on the screen.
    let smallest = b
        .client
        .execute(
            "return Math.min(...[...document.querySelectorAll('svg.chart text')].map(t => t.getBoundingClientRect().height));",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        smallest.as_f64().unwrap() >= 10.0,
        "chart labels {smallest} px tall"
    );
    b.screenshot("phone-overview.png").await;
    let pages = [
        "/deletions".to_string(),
        "/deletions?deadline=overdue".into(),
        "/deletions?status=FAILED".into(),
        format!("/deletions/{}", done.id),
        format!("/deletions/{}", failed.id),
        "/deletions/del_phonePending000000000000".into(),
        format!("/deletions/{canceled}"),
        format!("/deletions/{}/certificate", done.id),
        "/deletions/del_phonePending000000000000/extend".into(),
        "/deletions/del_phonePending000000000000/cancel".into(),
        format!("/deletions/{}/retry", failed.id),
        "/deletions/del_phonePending000000000000/certificate".into(),
        "/deletions/del_nothing".into(),
        "/deletions?status=nothing".into(),
        "/submit".into(),
    ];
    for path in &pages {
        b.client.goto(&format!("{base}{path}")).await.unwrap();
        fits_a_phone(b, path).await;
    }
    b.client
        .goto(&format!("{base}/deletions/{}", done.id))
        .await
        .unwrap();
    b.screenshot("phone-deletion.png").await;
    // The pages a form answers with.
    search(b, "nobody-at-all", "any").await;
    assert!(b.text("#nothing-found").await.contains("lookup value"));
    fits_a_phone(b, "nothing found").await;
    search(b, "jane.doe@example.com", "any").await;
    assert!(b.text("#not-a-lookup").await.contains("e-mail"));
    fits_a_phone(b, "not a lookup").await;
    b.client.goto(&format!("{base}/submit")).await.unwrap();
    b.fill("#customer_id", "src_next").await;
    b.click("form.stack button").await;
    assert!(b.text("#preview").await.contains("events"));
    fits_a_phone(b, "submission preview").await;
    b.client.goto(&format!("{base}/submit")).await.unwrap();
    b.fill("#customer_id", "nobody-here").await;
    b.click("form.stack button").await;
    assert!(b.text("p.error").await.contains("No customer"));
    fits_a_phone(b, "submission refused").await;
    let _ = browser.client.clone().close().await;
    app.cleanup().await;
}

/// Whether the browser refused because the element belonged to a page since replaced.
fn stale(e: &fantoccini::error::CmdError) -> bool {
    matches!(e, fantoccini::error::CmdError::Standard(w)
        if w.error == fantoccini::error::ErrorStatus::StaleElementReference)
}
