//! The web console end to end (issue 17): a running siptrack fed by SIPp
//! calls and form leads, a test CRM, and Debian's headless Chromium over
//! WebDriver. Sign-in, the lead list against the API's outcomes, filters
//! and search, live rows, a deal status change that changes the next
//! call (L-3), a retry from the outbox page, hostile names rendered as
//! text; sessions and CSRF over plain HTTP; a real recorded call (SIPp
//! with RTP through siptrack's relay) played by the calls page's player.
//! Screenshots of every page go to target/ui-screenshots/.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::browser::{http, Browser};
use common::checks::{get, post_json};
use common::crm::{Crm, Mode};
use common::rtp::{sdp_media_addr, RtpEndpoint};
use common::{free_port, Db, Dir, SipTrace, Sipp, SippProcess, Siptrack};
use serde_json::{json, Value};

const TOKEN: &str = "ui-token-7f3a";
const SECRET: &str = "ui-crm-secret";
const SCRIPT: &str = "<script>alert(1)</script>";

/// `store`: `storage.url`.
fn config(uas_port: u16, store: &str, crm: Option<&Crm>, ui: &str) -> String {
    let crm = crm.map_or(String::new(), |c| {
        format!(
            "kind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 400\n\n[crm.retry]\ninitial_ms = 100\nmax_ms = 500\nmax_age_hours = 1\n",
            c.url("/hook")
        )
    });
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-ui"

[sip.timers]
t1_ms = 100
t2_ms = 400

[tracking]
default_destination = "sip:pbx@127.0.0.1:{uas_port}"

[[tracking.numbers]]
number = "74951110001"
destination = "sip:pbx@127.0.0.1:{uas_port}"
marker = "google"

[[tracking.pools]]
name = "site"
numbers = ["74951230001"]
destination = "sip:pbx@127.0.0.1:{uas_port}"
hold_seconds = 600

[status_groups]
"New" = "not_counted"
"Won" = "paid"

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "{store}"

{ui}

[crm]
new_deal_status = "New"
phone_format = "+X XXX XXX-XX-XX"
timezone = "UTC+3"
{crm}
"#
    )
}

/// One SIPp call from `caller` to `number`, answered by a SIPp UAS.
fn call(p: &Siptrack, uas_port: u16, caller: &str, number: &str) {
    let uas = Sipp::uas("uas.xml")
        .port(uas_port)
        .calls(1)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac_tracking.xml", p.sip_addr())
        .calls(1)
        .time_limit(Duration::from_secs(25))
        .arg("-s")
        .arg(number)
        .arg("-key")
        .arg("caller")
        .arg(caller)
        .run();
    let uas = uas.wait_at_most(Duration::from_secs(10));
    assert_eq!(uac.successful(), 1, "{}\n{}", uac.summary(), uas.summary());
}

fn api_list(p: &Siptrack, what: &str) -> Vec<Value> {
    p.list(what, TOKEN)
}

fn post(p: &Siptrack, path: &str, body: Value) -> Value {
    let (status, reply) = post_json(p.api(), path, Some(TOKEN), &body.to_string());
    assert_eq!(status, 200, "{path}: {reply}");
    serde_json::from_str(&reply).expect("JSON")
}

/// Where a run's screenshots go: the PostgreSQL run's apart, since both
/// runs take the same pictures at the same time.
fn shots(db: Db) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    match db {
        Db::Sqlite => dir,
        Db::Postgres => dir.join("postgres"),
    }
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rows of a table body as the browser renders them: [[cell text]].
fn rows(b: &Browser, table: &str) -> Vec<Vec<String>> {
    let v = b.run(
        "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr'))
            .map(r => Array.from(r.cells).map(c => c.innerText));",
        json!([table]),
    );
    serde_json::from_value(v).unwrap_or_default()
}

/// The whole console on each database: its pages read the store's
/// console queries (keyset pages, filters, counts), which each store
/// answers with its own SQL.
fn the_console_in_a_real_browser(db: Db) {
    let uas_port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let store_url = db.fresh_url(dir.path());
    let crm = Crm::start(0, SECRET, Mode::Status(500));
    let p = Siptrack::start(&config(
        uas_port,
        &store_url,
        Some(&crm),
        "[ui]\nsip_trace_minutes = 10",
    ));
    let base = format!("http://{}", p.api());

    // A form lead while the CRM fails; aged past crm.retry.max_age_hours,
    // its next failure parks it (the outbox page's retry button).
    let form_lead = post(
        &p,
        "/api/v1/leads",
        json!({"name": SCRIPT, "phone": "8 916 111-22-33", "form": "order",
               "visit_id": "v-\"form\"", "text": "call me\n<b>soon</b>"}),
    );
    let form_lead_id = form_lead["lead_id"].as_i64().expect("lead id");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(siptrack::store::Store::open(&store_url))
        .expect("the same database");
    rt.block_on(store.execute_raw("UPDATE outbox SET created_at = created_at - 7200000"))
        .expect("age the outbox");
    wait_until(Duration::from_secs(15), "the lead's request parked", || {
        let (_, body) = get(p.api(), "/api/v1/outbox?state=failed", Some(TOKEN));
        body.contains("HTTP 500")
    });
    crm.set_mode(Mode::Ok);

    // Calls: a caller through the static number twice (a deal, then a
    // duplicate), and a visit with quotes and HTML in its fields calling
    // its pool number, from a caller whose "number" is a script.
    call(&p, uas_port, "89165554433", "74951110001");
    call(&p, uas_port, "89165554433", "74951110001");
    let visit_id = "v-\"quoted\" <i>it</i>";
    let utm = "\"src\" <b>bold</b> & co";
    let number = post(
        &p,
        "/api/v1/visits",
        json!({"visit_id": visit_id, "utm_source": utm}),
    );
    assert_eq!(number["number"], "74951230001");
    call(
        &p,
        uas_port,
        "%3Cscript%3Ealert(1)%3C/script%3E",
        "74951230001",
    );
    let api_leads = p.wait_for("leads", 4, TOKEN);
    let api_calls = p.wait_for("calls", 3, TOKEN);

    let b = Browser::start();
    // No session: the page sends the browser to sign in, then back.
    b.go(&format!("{base}/ui/leads"));
    assert!(b.url().contains("/ui/login"), "{}", b.url());
    assert_eq!(
        b.run("return document.getElementById('password').type", json!([])),
        "password"
    );
    b.screenshot(&shots(db).join("login.png"));
    b.type_into("#password", "wrong");
    b.click("#sign-in");
    b.wait_url("/ui/login?failed&next=%2Fui%2Fleads");
    assert!(
        b.try_find("#login-error").is_some(),
        "a wrong password is said"
    );
    b.type_into("#password", TOKEN);
    b.click("#sign-in");
    b.wait_url("/ui/leads");

    // The lead list: every lead of the API, newest first, same outcomes.
    let shown = rows(&b, "#leads");
    assert_eq!(shown.len(), api_leads.len(), "{shown:?}");
    for (row, lead) in shown.iter().zip(&api_leads) {
        assert_eq!(row[0], lead["id"].to_string(), "{row:?}");
        assert_eq!(
            row[8],
            lead["outcome"].as_str().unwrap_or(""),
            "{row:?} {lead}"
        );
    }
    let outcomes: Vec<&str> = shown.iter().map(|r| r[8].as_str()).collect();
    assert!(
        outcomes.iter().any(|o| o.starts_with("duplicate of")),
        "{outcomes:?}"
    );
    // Hostile text is text: no alert, the characters visible.
    assert_eq!(b.alert(), None, "a script ran");
    let form_row = shown
        .iter()
        .find(|r| r[0] == form_lead_id.to_string())
        .expect("the form lead");
    assert_eq!(form_row[4], SCRIPT);
    assert_eq!(form_row[5], "+7 916 111-22-33", "crm.phone_format");
    assert_eq!(form_row[6], "v-\"form\"");
    assert!(form_row[7].contains("<b>soon</b>"), "{form_row:?}");
    // A duplicate links to its original.
    let dup_link = b.run(
        "const a = document.querySelector('#leads td.outcome a'); return a ? a.getAttribute('href') : '';",
        json!([]),
    );
    assert!(
        dup_link.as_str().unwrap_or("").starts_with("/ui/"),
        "{dup_link}"
    );
    b.screenshot(&shots(db).join("leads.png"));

    // Filters and search narrow the list (through the page's form).
    b.type_into("input[name=q]", "8 (916) 555-44-33");
    b.click("form.filters button");
    b.wait_url("/ui/leads?from=&to=&type=&outcome=&channel=&q=8+%28916%29+555-44-33");
    let found = rows(&b, "#leads");
    assert_eq!(found.len(), 2, "the two calls of 79165554433: {found:?}");
    assert!(found.iter().all(|r| r[5] == "+7 916 555-44-33"));
    b.go(&format!("{base}/ui/leads?type=form"));
    assert_eq!(rows(&b, "#leads").len(), 1);
    b.go(&format!("{base}/ui/leads?channel=google&outcome=duplicate"));
    let dups = rows(&b, "#leads");
    assert_eq!(dups.len(), 1, "{dups:?}");
    b.go(&format!("{base}/ui/leads?q=%3Cscr"));
    assert_eq!(rows(&b, "#leads").len(), 1, "a name search");
    b.go(&format!("{base}/ui/leads?q=%3CSCRIPT"));
    assert_eq!(rows(&b, "#leads").len(), 1, "a name search in another case");
    b.go(&format!("{base}/ui/leads?from=2000-01-01&to=2000-01-02"));
    assert!(rows(&b, "#leads").is_empty());
    b.go(&format!("{base}/ui/leads?type=fax"));
    assert!(b
        .text("p.err")
        .contains("type: \"fax\" is not call or form"));

    // Calls: each call, the script-named caller as text.
    b.go(&format!("{base}/ui/calls"));
    let calls = rows(&b, "#calls");
    assert_eq!(calls.len(), api_calls.len(), "{calls:?}");
    assert!(calls.iter().all(|r| r[1] == "answered"), "{calls:?}");
    // A SIP user part cannot carry `<` itself; its escaped form is shown
    // as it came, and the visit's id with quotes and tags as text.
    assert!(
        calls
            .iter()
            .any(|r| r[4] == "%3Cscript%3Ealert(1)%3C/script%3E" && r[6] == visit_id),
        "{calls:?}"
    );
    assert!(calls.iter().any(|r| r[6] == "google"));
    assert_eq!(b.alert(), None);
    b.screenshot(&shots(db).join("calls.png"));

    // A call's SIP ladder: what siptrack received and sent, both legs.
    b.click("#calls tbody tr:last-child a.ladder");
    b.wait_url(&format!(
        "/ui/ladder?call={}",
        api_calls
            .last()
            .and_then(|c| c["id"].as_str())
            .expect("the first call's id")
            .replace('@', "%40")
    ));
    let labels = b.run(
        "return Array.from(document.querySelectorAll('#ladder a')).map(a => a.textContent);",
        json!([]),
    );
    let labels: Vec<String> = serde_json::from_value(labels).unwrap_or_default();
    for step in ["INVITE", "180 Ringing", "200 OK", "ACK", "BYE"] {
        // Each on both legs: from the caller and on to the PBX, or back.
        assert!(
            labels.iter().filter(|l| l.as_str() == step).count() >= 2,
            "{step} twice in {labels:?}"
        );
    }
    let columns = b.run(
        "return document.querySelectorAll('#ladder text.peer').length;",
        json!([]),
    );
    assert_eq!(columns, 3, "caller, siptrack, PBX");
    assert!(b.text("details").contains("INVITE"));
    b.screenshot(&shots(db).join("ladder.png"));

    // Pools: the visit's id and fields as they came, quotes and tags.
    b.go(&format!("{base}/ui/pools"));
    let numbers = rows(&b, "#numbers");
    assert_eq!(numbers.len(), 1);
    assert_eq!(numbers[0][2], visit_id);
    assert_eq!(numbers[0][3], utm);
    assert_eq!(b.alert(), None);
    assert!(b.try_find("#exhaustions").is_none(), "no pool ran out yet");
    // A second visit while the pool's one number is held: exhaustion.
    post(&p, "/api/v1/visits", json!({"visit_id": "v-second"}));
    b.go(&format!("{base}/ui/pools"));
    assert_eq!(rows(&b, "#numbers")[0][2], "v-second");
    let events = rows(&b, "#exhaustions");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0][1..], ["site", "+7 495 123-00-01", visit_id]);
    b.screenshot(&shots(db).join("pools.png"));

    // A deal marked won from the deals page: the caller's next call makes
    // a new deal (L-3) — and shows up on the open lead list by itself.
    b.go(&format!("{base}/ui/deals"));
    let deal = api_list(&p, "deals")
        .into_iter()
        .find(|d| d["phone"] == "79165554433")
        .expect("the caller's deal");
    let deal_row = format!("#deal-{}", deal["id"]);
    b.run(
        "document.querySelector(arguments[0] + ' select[name=status]').value = 'Won';",
        json!([deal_row]),
    );
    b.screenshot(&shots(db).join("deals.png"));
    b.click_and_load(&format!("{deal_row} button"));
    b.wait_url("/ui/deals");
    assert_eq!(
        b.text(&format!("{deal_row} td.group")),
        "paid",
        "changed through the page"
    );
    assert_eq!(
        api_list(&p, "deals")
            .iter()
            .find(|d| d["id"] == deal["id"])
            .map(|d| d["status"].clone()),
        Some(json!("Won"))
    );
    b.go(&format!("{base}/ui/leads"));
    b.run("window.notReloaded = true;", json!([]));
    let before = rows(&b, "#leads").len();
    call(&p, uas_port, "89165554433", "74951110001");
    b.wait(
        Duration::from_secs(15),
        "the new lead, live",
        &format!("return document.querySelectorAll('#leads tbody tr').length > {before};"),
    );
    assert_eq!(
        b.run("return window.notReloaded === true;", json!([])),
        true
    );
    let newest = rows(&b, "#leads").remove(0);
    let api_newest = api_list(&p, "leads").remove(0);
    assert_eq!(newest[0], api_newest["id"].to_string());
    assert!(
        newest[8].starts_with("deal ") && newest[8].ends_with(" created"),
        "a won deal's client gets a new deal: {newest:?}"
    );
    assert_eq!(newest[8], api_newest["outcome"].as_str().unwrap_or(""));

    // A new call appears on the open calls page without a reload.
    b.go(&format!("{base}/ui/calls"));
    b.run("window.notReloaded = true;", json!([]));
    let before = rows(&b, "#calls").len();
    call(&p, uas_port, "89031234567", "74951110001");
    b.wait(
        Duration::from_secs(15),
        "the new call, live",
        &format!("return document.querySelectorAll('#calls tbody tr').length > {before};"),
    );
    assert_eq!(
        b.run("return window.notReloaded === true;", json!([])),
        true
    );
    assert_eq!(rows(&b, "#calls")[0][4], "+7 903 123-45-67");

    // The outbox: the parked request with the CRM's error; retry delivers.
    b.go(&format!("{base}/ui/outbox"));
    let parked = rows(&b, "#outbox");
    let row = parked
        .iter()
        .find(|r| r[3] == form_lead_id.to_string())
        .unwrap_or_else(|| panic!("the parked request: {parked:?}"));
    assert!(row[6].contains("HTTP 500"), "{row:?}");
    b.screenshot(&shots(db).join("outbox.png"));
    let item = &row[0];
    b.click_and_load(&format!("#outbox-{item} button"));
    b.wait_url("/ui/outbox");
    crm.wait_until(Duration::from_secs(15), "the retried deal.create", |c| {
        c.requests.iter().any(|r| {
            r.answered == 200 && r.json["event"] == "deal.create" && r.body.contains("111")
        })
    });
    wait_until(Duration::from_secs(15), "the item done", || {
        let (_, body) = get(p.api(), "/api/v1/outbox?state=failed", Some(TOKEN));
        !body.contains("HTTP 500")
    });

    // The overview: charts drawn server-side.
    b.go(&format!("{base}/ui/"));
    let bars = b.run(
        "return document.querySelectorAll('#calls-chart rect').length;",
        json!([]),
    );
    assert!(bars.as_i64().unwrap_or(0) >= 2, "bars and legend: {bars}");
    assert!(b.text("#channels-chart").contains("google"));
    assert!(b.text("#sip").contains("received"));
    b.screenshot(&shots(db).join("overview.png"));
    b.go(&format!("{base}/ui/?range=7d"));
    b.screenshot(&shots(db).join("overview-7d.png"));

    // Signed out elsewhere (another tab) while the leads page is open:
    // at the next news the page goes to the sign-in, not stale.
    b.go(&format!("{base}/ui/leads"));
    b.run(
        "var f = document.querySelector('form.out');
         fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f))})
           .then(function () { window.signedOut = true; });
         return true;",
        json!([]),
    );
    // News of the earlier steps (the outbox's retries) may reach the
    // page's stream before the call below does; the page then goes to the
    // sign-in at once, which is as right (CI of d523a9c: it had left
    // before this wait read `signedOut`). Either way the call is news.
    b.wait(
        Duration::from_secs(5),
        "signed out in the background",
        "return window.signedOut === true || location.pathname === '/ui/login';",
    );
    call(&p, uas_port, "89165550000", "74951110001");
    b.wait_url("/ui/login?next=%2Fui%2Fleads");
    b.go(&format!("{base}/ui/calls"));
    assert!(b.url().contains("/ui/login"), "{}", b.url());
    assert_eq!(b.alert(), None);
}

/// Signs in over plain HTTP; (session cookie, the page's CSRF token).
fn sign_in(api: SocketAddr, user: &str, password: &str) -> Option<(String, String)> {
    let (status, head, page) = http(api, "GET", "/ui/login", &[], "");
    assert_eq!(status, 200);
    let login = cookie_of(&head, "siptrack_login").expect("the login form's cookie");
    let token = hidden(&page, "csrf").expect("the login form's token");
    let body = format!("csrf={token}&user={user}&password={password}&next=/ui/deals");
    let (status, head, _) = http(
        api,
        "POST",
        "/ui/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", &format!("siptrack_login={login}")),
        ],
        &body,
    );
    assert_eq!(status, 303, "{head}");
    let session = cookie_of(&head, "siptrack_session").filter(|s| !s.is_empty())?;
    assert!(head.contains("location: /ui/deals"), "{head}");
    let cookie = format!("siptrack_session={session}");
    let (status, _, page) = http(api, "GET", "/ui/deals", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    Some((cookie, hidden(&page, "csrf").expect("a CSRF token")))
}

fn cookie_of(head: &str, name: &str) -> Option<String> {
    head.lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .find_map(|l| {
            let v = l.split_once(':')?.1.trim();
            let (k, rest) = v.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or("").to_string())
        })
}

fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page.find(&marker)? + marker.len();
    Some(page[start..].split('"').next()?.to_string())
}

#[test]
fn sessions_csrf_users_and_language() {
    // A user's hash from the command an operator runs.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siptrack"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(b"anna's pass\n")?;
            c.wait_with_output()
        })
        .expect("siptrack hash-password");
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite:{}", dir.path().join("s.db").display());
    let ui = format!(
        "[ui]\nlanguage = \"ru\"\nsession_minutes = 5\n[[ui.users]]\nname = \"anna\"\npassword_hash = \"{hash}\"\n"
    );
    let p = Siptrack::start(&config(free_port(), &db, None, &ui));
    let api = p.api();
    post(
        &p,
        "/api/v1/leads",
        json!({"name": "Анна", "phone": "89161112233"}),
    );

    // Without a session: pages redirect, the event stream and forms 401.
    for page in [
        "/ui/",
        "/ui/leads",
        "/ui/calls",
        "/ui/deals",
        "/ui/pools",
        "/ui/outbox",
    ] {
        let (status, head, _) = http(api, "GET", page, &[], "");
        assert_eq!(status, 303, "{page}");
        assert!(
            head.to_ascii_lowercase()
                .contains("location: /ui/login?next="),
            "{head}"
        );
    }
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(http(api, "GET", "/ui/events?lead=0", &[], "").0, 401);
    assert_eq!(
        http(api, "POST", "/ui/deals/1/status", &form, "status=Won").0,
        401
    );
    assert_eq!(http(api, "POST", "/ui/outbox/1/retry", &form, "").0, 401);
    // The API's bearer token is no console session.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        http(
            api,
            "GET",
            "/ui/events?lead=0",
            &[("Authorization", &bearer)],
            ""
        )
        .0,
        401
    );
    // A sign-in without its form's token is refused.
    assert_eq!(
        http(
            api,
            "POST",
            "/ui/login",
            &form,
            &format!("user=&password={TOKEN}")
        )
        .0,
        403
    );
    // Wrong password, unknown user: no session.
    assert!(sign_in(api, "anna", "wrong").is_none());
    assert!(sign_in(api, "boris", "anna%27s+pass").is_none());

    // A user with the argon2 password.
    let (cookie, csrf) = sign_in(api, "anna", "anna%27s+pass").expect("anna signs in");
    let (status, head, page) = http(api, "GET", "/ui/leads", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200);
    // Every page says which zone its times are in (crm.timezone).
    assert!(page.contains("Время на странице: UTC+03:00"), "{page}");
    // An address with no page: the console's 404, not an empty answer;
    // the API's own is JSON.
    let (status, _, nothing) = http(api, "GET", "/ui/nonexistent", &[("Cookie", &cookie)], "");
    assert_eq!(status, 404);
    assert!(
        nothing.contains("No such page") && nothing.contains("/ui/app.css"),
        "{nothing}"
    );
    let (status, _, nothing) = http(api, "GET", "/api/v1/nope", &[], "");
    assert_eq!(status, 404);
    assert!(nothing.contains("\"error\""), "{nothing}");
    assert!(
        page.contains("Заявки") && page.contains("Анна"),
        "ui.language = ru"
    );
    let h = head.to_ascii_lowercase();
    assert!(
        h.contains("content-security-policy: default-src 'self'; script-src 'self'"),
        "{head}"
    );
    assert!(h.contains("cache-control: no-store"));
    // Forms: 403 without the session's CSRF token or with another.
    let with_cookie = [
        ("Content-Type", "application/x-www-form-urlencoded"),
        ("Cookie", cookie.as_str()),
    ];
    assert_eq!(
        http(
            api,
            "POST",
            "/ui/deals/1/status",
            &with_cookie,
            "status=Won"
        )
        .0,
        403
    );
    assert_eq!(
        http(
            api,
            "POST",
            "/ui/deals/1/status",
            &with_cookie,
            "status=Won&csrf=0000"
        )
        .0,
        403
    );
    let deals = api_list(&p, "deals");
    assert_eq!(
        deals[0]["status"], "New",
        "nothing changed by refused posts"
    );
    let (status, head, _) = http(
        api,
        "POST",
        "/ui/deals/1/status",
        &with_cookie,
        &format!("status=Won&csrf={csrf}"),
    );
    assert_eq!(status, 303, "{head}");
    assert_eq!(api_list(&p, "deals")[0]["status"], "Won");
    // An unknown status: the API's rule and words.
    let (status, _, body) = http(
        api,
        "POST",
        "/ui/deals/1/status",
        &with_cookie,
        &format!("status=Maybe&csrf={csrf}"),
    );
    assert_eq!(status, 400);
    assert!(body.contains("unknown status"), "{body}");
    // The event stream answers a signed-in browser.
    let (status, head, _) = {
        // Read just the head: the stream stays open.
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(api).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET /ui/events?lead=0 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
        )
        .expect("send");
        let mut buf = vec![0u8; 4096];
        let mut got = String::new();
        while !got.contains("event: lead") {
            let n = s.read(&mut buf).expect("read the stream");
            assert!(n > 0, "stream ended: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let status: u16 = got
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, got.clone(), ())
    };
    assert_eq!(status, 200);
    assert!(
        head.contains("text/event-stream") && head.contains("Анна"),
        "{head}"
    );

    // Cookies: HttpOnly, SameSite=Strict, Path=/ui; Secure behind TLS.
    let (_, head, _) = http(
        api,
        "GET",
        "/ui/login",
        &[("X-Forwarded-Proto", "https")],
        "",
    );
    let set = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: siptrack_login=")
        })
        .expect("cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Secure"] {
        assert!(set.contains(attr), "{set}");
    }
    let (_, head, _) = http(api, "GET", "/ui/login", &[], "");
    assert!(!head.contains("Secure"), "plain HTTP: no Secure");

    // Sign out: the session is gone (a replayed cookie gets nothing).
    let (status, _, _) = http(
        api,
        "POST",
        "/ui/logout",
        &with_cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(status, 303);
    let (status, _, _) = http(api, "GET", "/ui/leads", &[("Cookie", &cookie)], "");
    assert_eq!(status, 303);
    // The API token signs in too.
    assert!(sign_in(api, "", TOKEN).is_some());
}

crate::on_each_db!(the_console_in_a_real_browser);

/// A siptrack that relays and records media, with recording links that
/// need the token or a console session.
fn media_config(uas_port: u16, ports: (u16, u16), dir: &std::path::Path) -> String {
    format!(
        r#"[sip]
listen = ["udp:127.0.0.1:{{SIP_PORT}}"]
trusted_sources = ["127.0.0.0/8"]
route_secret = "e2e-ui-media"

[tracking]
default_destination = "sip:127.0.0.1:{uas_port}"
record_calls = true
recording_links_require_auth = true

[media]
port_min = {min}
port_max = {max}
advertised_ip = "127.0.0.1"
recordings_dir = "{rec}"

[http]
listen = "127.0.0.1:{{HTTP_PORT}}"
token = "{TOKEN}"

[storage]
url = "sqlite:{db}"
"#,
        min = ports.0,
        max = ports.1,
        rec = dir.join("recordings").display(),
        db = dir.join("s.db").display(),
    )
}

/// RFC 4733 packets of one key press (event `code`) from `ep`: five
/// packets 20 ms apart, the last with the end bit sent three times, as
/// phones send them; one timestamp (the press's start), sequence numbers
/// going on from `seq`.
fn press(ep: &RtpEndpoint, to: SocketAddr, code: u8, seq: u16, ts: u32, ssrc: u32) {
    for k in 0..7u16 {
        let end = k >= 4;
        let duration = 160 * (k.min(4) + 1);
        let payload = [code, if end { 0x80 } else { 0 } | 10, 0, 0];
        let mut p = vec![0x80, 101 | if k == 0 { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.wrapping_add(k).to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&payload[..2]);
        p.extend_from_slice(&duration.to_be_bytes());
        ep.send_raw(to, &p);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIPp's call with RTP from test endpoints (440 Hz caller, 1000 Hz
/// callee, relayed and recorded by siptrack), the caller pressing 5 after
/// its tone: the call's Call-ID.
fn recorded_call(p: &Siptrack, uas_port: u16) -> String {
    const PACKETS: u32 = 100;
    let caller = RtpEndpoint::bind(free_port());
    let callee = RtpEndpoint::bind(free_port());
    let uas = Sipp::uas("uas_media.xml")
        .port(uas_port)
        .arg("-key")
        .arg("rtp_port")
        .arg(callee.port().to_string())
        .pause_ms(500)
        .time_limit(Duration::from_secs(30))
        .spawn();
    let uac = Sipp::uac("uac_media.xml", p.sip_addr())
        .calls(1)
        .arg("-key")
        .arg("rtp_port")
        .arg(caller.port().to_string())
        .pause_ms(3000)
        .time_limit(Duration::from_secs(25))
        .spawn();
    let body = |m: &SipTrace| m.text.split_once("\n\n").map_or("", |(_, b)| b).to_string();
    let wait_for = |sipp: &SippProcess, want: &dyn Fn(&SipTrace) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(m) = sipp.messages().into_iter().find(|m| want(m)) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "SIPp did not get the call set up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let invite = wait_for(&uas, &|m| m.dir == Dir::Received && m.is_request("INVITE"));
    let ok = wait_for(&uac, &|m| {
        m.dir == Dir::Received && m.is_response(200) && m.cseq_method().as_deref() == Some("INVITE")
    });
    let callee_to = sdp_media_addr(&body(&invite)).expect("SDP in the INVITE");
    let caller_to = sdp_media_addr(&body(&ok)).expect("SDP in the 200");
    let a = caller.send_tone(caller_to, 440.0, PACKETS, 0x1111);
    let b = callee.send_tone(callee_to, 1000.0, PACKETS, 0x2222);
    a.join().expect("caller tone");
    press(&caller, caller_to, 5, PACKETS as u16, PACKETS * 160, 0x1111);
    b.join().expect("callee tone");
    let uac_run = uac.wait();
    let uas_run = uas.wait_at_most(Duration::from_secs(5));
    assert_eq!(
        uac_run.successful(),
        1,
        "{}\n{}",
        uac_run.summary(),
        uas_run.summary()
    );
    invite.call_id().expect("Call-ID")
}

#[test]
fn a_recorded_call_plays_in_the_console_and_its_link_needs_a_session_or_the_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = common::free_ports(8);
    let uas_port = free_port();
    let p = Siptrack::start(&media_config(uas_port, (base, base + 7), dir.path()));
    let api = p.api();
    let call_id = recorded_call(&p, uas_port);

    // The WAV siptrack wrote, finalised: how long it plays.
    let file = dir
        .path()
        .join("recordings")
        .join(siptrack::media::link::file_name(call_id.as_bytes()));
    let mut wav_seconds = 0.0;
    wait_until(Duration::from_secs(10), "the finished WAV", || {
        let samples = std::fs::read(&file)
            .ok()
            .and_then(|b| siptrack::media::wav::samples(&b));
        if let Some(s) = &samples {
            wav_seconds = s.len() as f64 / 2.0 / 8000.0;
        }
        samples.is_some()
    });
    assert!(wav_seconds > 1.5, "{wav_seconds} s recorded");

    // The calls API's link (the record waits for its WAV, so it is there).
    let calls = p.wait_for("calls", 1, TOKEN);
    assert_eq!(calls[0]["recording"], "recorded", "{:?}", calls[0]);
    let link = calls[0]["link"].as_str().expect("a link").to_string();
    let path = link
        .strip_prefix(&format!("http://{api}"))
        .expect("the link's base is the API's address")
        .to_string();
    let console_path = format!("/ui{path}");

    // recording_links_require_auth: the signature alone is not enough;
    // the token on /recordings, a session on the console's path.
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(http(api, "GET", &path, &[], "").0, 401);
    assert_eq!(http(api, "GET", &console_path, &[], "").0, 401);
    let (status, head, body) = http(api, "GET", &path, &[("Authorization", &bearer)], "");
    assert_eq!(status, 200, "{head}");
    assert!(body.starts_with("RIFF"), "a WAV");
    let (cookie, _) = sign_in(api, "", TOKEN).expect("the token signs in");
    let with_session = [("Cookie", cookie.as_str())];
    let (status, head, _) = http(api, "GET", &console_path, &with_session, "");
    assert_eq!(status, 200, "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: audio/wav"));
    let (status, head, _) = http(
        api,
        "GET",
        &console_path,
        &[("Cookie", cookie.as_str()), ("Range", "bytes=0-99")],
        "",
    );
    assert_eq!(status, 206, "seekable: {head}");
    // The session never stands in for the signature.
    let tampered = format!("{}0", &console_path[..console_path.len() - 1]);
    let tampered = if tampered == console_path {
        format!("{}1", &console_path[..console_path.len() - 1])
    } else {
        tampered
    };
    assert_eq!(http(api, "GET", &tampered, &with_session, "").0, 403);
    assert_eq!(
        http(
            api,
            "GET",
            &console_path,
            &[("Cookie", "siptrack_session=00")],
            ""
        )
        .0,
        401,
        "a made-up session is none"
    );

    // The browser: the calls page has the player, and it plays.
    let b = Browser::start();
    let site = format!("http://{api}");
    b.go(&format!("{site}/ui/calls"));
    b.type_into("#password", TOKEN);
    b.click("#sign-in");
    b.wait_url("/ui/calls");
    let shown = rows(&b, "#calls");
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(
        shown[0][7].contains("recorded") && shown[0][7].contains("keys: 5"),
        "the state and the key press: {shown:?}"
    );
    assert_eq!(
        b.run(
            "const a = document.querySelector('#calls audio');
             return [a.getAttribute('src'), a.getAttribute('preload'), a.controls];",
            json!([])
        ),
        json!([console_path, "none", true])
    );
    b.run(
        "const a = document.querySelector('#calls audio');
         a.muted = true;
         a.play().catch(e => { window.playError = String(e); });
         return true;",
        json!([]),
    );
    let duration = b.wait(
        Duration::from_secs(10),
        "the player's duration",
        "const a = document.querySelector('#calls audio');
         return window.playError || (a.readyState >= 1 && isFinite(a.duration) ? a.duration : 0);",
    );
    let duration = duration
        .as_f64()
        .unwrap_or_else(|| panic!("the player failed: {duration}"));
    assert!(
        (duration - wav_seconds).abs() <= 0.1,
        "the player says {duration} s, the WAV is {wav_seconds} s"
    );
    b.screenshot(&shots(Db::Sqlite).join("calls-player.png"));
    let ended = b.wait(
        Duration::from_secs(20),
        "the recording to play to its end",
        "const a = document.querySelector('#calls audio');
         return window.playError || (a.ended && a.currentTime > 0 ? a.currentTime : 0);",
    );
    let played = ended
        .as_f64()
        .unwrap_or_else(|| panic!("the player failed: {ended}"));
    assert!(
        (played - wav_seconds).abs() <= 0.1,
        "played to {played} s of {wav_seconds} s"
    );
    eprintln!("player: duration {duration:.3} s, played to {played:.3} s; WAV {wav_seconds:.3} s");
    assert_eq!(b.alert(), None);
}

/// Opens `/ui/events?lead=0` with `cookie` and returns the connection
/// (kept open) and the status line's code.
fn open_stream(api: SocketAddr, cookie: &str) -> (std::net::TcpStream, u16) {
    use std::io::{Read as _, Write as _};
    let mut s =
        std::net::TcpStream::connect_timeout(&api, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /ui/events?lead=0 HTTP/1.1\r\nHost: {api}\r\nCookie: {cookie}\r\n\r\n"
    )
    .expect("request");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        got.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&got).into_owned();
    let code = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (s, code)
}

/// What one browser or address may hold (trial, 2026-12-02): 40 guesses
/// of a password in 6 s went unhindered, and one signed-in user's 260
/// live-row streams held every HTTP connection, so /healthz and the
/// website's visits waited. Now five wrong passwords for a name from an
/// address make further tries wait (429, Retry-After), and a session
/// holds at most 8 streams.
#[test]
fn sign_in_guessing_and_stream_floods_are_limited() {
    let hash =
        siptrack::ui::login::hash_password("anna's pass", b"0123456789abcdef").expect("hash");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite:{}", dir.path().join("s.db").display());
    let ui = format!("[ui]\n[[ui.users]]\nname = \"anna\"\npassword_hash = \"{hash}\"\n");
    let p = Siptrack::start(&config(free_port(), &db, None, &ui));
    let api = p.api();

    for _ in 0..5 {
        assert!(sign_in(api, "anna", "guess").is_none());
    }
    let (status, head, _) = {
        let (_, head, page) = http(api, "GET", "/ui/login", &[], "");
        let login = cookie_of(&head, "siptrack_login").expect("cookie");
        let token = hidden(&page, "csrf").expect("token");
        http(
            api,
            "POST",
            "/ui/login",
            &[
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Cookie", &format!("siptrack_login={login}")),
            ],
            &format!("csrf={token}&user=anna&password=anna%27s+pass&next=/ui/"),
        )
    };
    assert_eq!(status, 429, "even the right password waits: {head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    // Another name from this address is still checked.
    let (cookie, _) = sign_in(api, "", TOKEN).expect("the token signs in");

    let mut open = Vec::new();
    for i in 0..8 {
        let (s, code) = open_stream(api, &cookie);
        assert_eq!(code, 200, "stream {i}");
        open.push(s);
    }
    let (_s, code) = open_stream(api, &cookie);
    assert_eq!(code, 429, "a ninth stream of one session");
    let (status, _) = get(api, "/healthz", None);
    assert_eq!(status, 200);
    drop(open);
    // Closed streams give their places back (once the server sees it).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, code) = open_stream(api, &cookie);
        drop(s);
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "places not given back");
        std::thread::sleep(Duration::from_millis(200));
    }
}
