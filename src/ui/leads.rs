//! `/ui/leads`: the lead log (SPEC L-7's columns), newest first, a page
//! at a time by keyset, narrowed by date range, type, outcome, channel
//! and a search by phone or the start of a name.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{FixedOffset, NaiveDate, TimeZone};

use super::{esc, head, layout, url_value, Ctx, Nav, Texts};
use crate::phone::{normalize_str, typed_phone, PhoneRules};
use crate::store::query::{LeadQuery, OutcomeKind, Search};
use crate::store::rows::LeadRow;

/// Leads a page.
pub const PAGE: i64 = 50;

/// How many ids back one page reads at most when no index narrows its
/// filters (type, outcome, dates alone): a filter that matches nothing
/// would otherwise read the whole table. The page then offers to go on.
pub const SCAN: i64 = 100_000;

/// Bounds `q` to [`SCAN`] ids below where it starts (`before`, or past
/// the newest lead) when only unindexed filters narrow it. A search is an
/// index probe and needs no bound; no filter fills a page from the first
/// rows read. A channel is the overview's (worked out per lead from its
/// call), so it is read like the type or the outcome.
pub fn bound_scan(q: &mut LeadQuery, newest: i64) {
    let indexed = q.search.is_some();
    let unindexed = q.kind.is_some()
        || q.outcome.is_some()
        || q.from.is_some()
        || q.to.is_some()
        || q.channel.is_some();
    if unindexed && !indexed {
        let start = q.before.unwrap_or(newest.saturating_add(1));
        q.floor = Some(start.saturating_sub(SCAN).max(0));
    }
}

/// The query parameters the page reads, in the order the form has them.
const PARAMS: &[&str] = &["from", "to", "type", "outcome", "channel", "q"];

/// The page's query string read into a store query (one more row than a
/// page, to know whether an older page exists). The error names the
/// parameter.
pub fn parse_filter(
    q: &HashMap<String, String>,
    tz: FixedOffset,
    phone: &PhoneRules,
) -> Result<LeadQuery, String> {
    let get = |k: &str| q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let day = |k: &str| -> Result<Option<i64>, String> {
        let Some(v) = get(k) else { return Ok(None) };
        let d = NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| format!("{k}: \"{v}\" is not a date like 2026-11-29"))?;
        let start = d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| tz.from_local_datetime(&t).single())
            .ok_or_else(|| format!("{k}: \"{v}\" is out of range"))?;
        Ok(Some(start.timestamp()))
    };
    let from = day("from")?;
    // `to` is inclusive: up to the end of that day.
    let to = day("to")?.map(|t| t + 86_400);
    // Swapped dates would show "Nothing here." with no hint why.
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            return Err(format!(
                "to: {} is before from: {}",
                get("to").unwrap_or_default(),
                get("from").unwrap_or_default()
            ));
        }
    }
    let kind = match get("type") {
        None => None,
        Some(k @ ("call" | "form")) => Some(k.to_string()),
        Some(k) => return Err(format!("type: \"{k}\" is not call or form")),
    };
    let outcome = match get("outcome") {
        None => None,
        Some(o) => Some(
            OutcomeKind::parse(o)
                .ok_or_else(|| format!("outcome: \"{o}\" is not created, duplicate or no_deal"))?,
        ),
    };
    let before = match get("before") {
        None => None,
        Some(b) => Some(
            b.parse::<i64>()
                .map_err(|_| format!("before: \"{b}\" is not a lead id"))?,
        ),
    };
    let search = get("q").map(|s| search_of(s, phone));
    Ok(LeadQuery {
        before,
        after: None,
        floor: None,
        from,
        appeared_since: None,
        to,
        kind,
        outcome,
        channel: get("channel").map(str::to_string),
        search,
        limit: PAGE + 1,
    })
}

/// A search that looks like a phone (digits and the usual punctuation,
/// at least five digits) is a phone, normalised as stored; a few digits
/// alone are an extension (`101`, a caller behind a PBX), stored as they
/// are; anything else the start of a name. (Trial, 2026-12-03: the lead
/// list showed the phone `101` and a search for it found nothing.)
pub fn search_of(s: &str, phone: &PhoneRules) -> Search {
    // A number pasted from a web page (no-break spaces, dashes); a name
    // is searched as typed.
    let typed = typed_phone(s);
    let t = typed.number.as_str();
    let digits = t.chars().filter(char::is_ascii_digit).count();
    let phone_like = t.chars().all(|c| c.is_ascii_digit() || " +-()".contains(c));
    let extension = digits > 0 && digits == t.len();
    if (phone_like && digits >= 5) || extension {
        Search::Phone(normalize_str(t, phone))
    } else {
        Search::NamePrefix(s.to_string())
    }
}

/// The outcome cell: a duplicate links to its original.
fn outcome_cell(t: &Texts, l: &LeadRow) -> String {
    let (stored, _) = l.outcome();
    let outcome = t.outcome(&stored);
    let link = |prefix: &str| -> Option<i64> {
        l.decision
            .strip_prefix(prefix)
            .and_then(|n| n.parse::<i64>().ok())
    };
    if stored == l.decision {
        if let Some(n) = link("duplicate of lead ") {
            return format!(
                "<a href=\"/ui/leads?before={}#lead-{n}\">{}</a>",
                n + 1,
                esc(&outcome)
            );
        }
        if let Some(n) = link("duplicate of deal ") {
            return format!("<a href=\"/ui/deals#deal-{n}\">{}</a>", esc(&outcome));
        }
    }
    let class = if stored.starts_with("crm error") {
        " class=\"err\""
    } else {
        ""
    };
    format!("<span{class}>{}</span>", esc(&outcome))
}

/// One lead as a table row (also what the live updates insert).
pub fn row(ctx: &Ctx, l: &LeadRow) -> String {
    let kind = if l.kind == "call" {
        ctx.t.call
    } else {
        ctx.t.form
    };
    let form_or_number = if l.kind == "call" {
        ctx.phone(&l.dialed)
    } else {
        esc(&l.form)
    };
    format!(
        "<tr id=\"lead-{id}\"><td>{id}</td><td>{date}</td><td>{kind}</td><td>{form_or_number}</td>\
         <td class=\"name\">{name}</td><td>{phone}</td><td>{visit}</td><td class=\"text\">{text}</td>\
         <td class=\"outcome\">{outcome}</td></tr>",
        id = l.id,
        date = esc(&ctx.date(l.created_at)),
        kind = esc(kind),
        name = esc(&l.name),
        // A call's lead without a phone: the caller withheld the number
        // (SPEC T-5), said so rather than an empty cell.
        phone = if l.phone.is_empty() && l.kind == "call" {
            format!("<span class=\"muted\">{}</span>", esc(ctx.t.withheld))
        } else {
            ctx.phone(&l.phone)
        },
        visit = channel_cell(l),
        text = esc(&ctx.stored(&l.text)),
        outcome = outcome_cell(ctx.t, l),
    )
}

/// The channel the overview counts the lead for (what the channel filter
/// finds it by), and under it the visit when that is something else (a
/// pool call's visit id).
fn channel_cell(l: &LeadRow) -> String {
    let channel = esc(&l.channel);
    if l.visit_id.is_empty() || l.visit_id == l.channel {
        return channel;
    }
    format!(
        "{channel}<br><span class=\"muted\">{}</span>",
        esc(&l.visit_id)
    )
}

/// The whole page. `rows` is what the store gave for `parse_filter`'s
/// query (up to a page and one); `error` a filter that was not understood.
/// `floor`: the bound [`bound_scan`] set, if any.
pub fn page(
    ctx: &Ctx,
    q: &HashMap<String, String>,
    rows: &[LeadRow],
    floor: Option<i64>,
    error: Option<&str>,
) -> String {
    let t = ctx.t;
    let val = |k: &str| esc(q.get(k).map_or("", |v| v.as_str()));
    let sel = |k: &str, v: &str| {
        if q.get(k).map(String::as_str) == Some(v) {
            " selected"
        } else {
            ""
        }
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<form method=\"get\" action=\"/ui/leads\" class=\"filters\">\
         <label>{from} <input type=\"date\" name=\"from\" value=\"{vfrom}\"></label>\
         <label>{to} <input type=\"date\" name=\"to\" value=\"{vto}\"></label>\
         <label>{kind} <select name=\"type\"><option value=\"\">{any}</option>\
         <option value=\"call\"{sc}>{call}</option><option value=\"form\"{sf}>{form}</option></select></label>\
         <label>{outcome} <select name=\"outcome\"><option value=\"\">{any}</option>\
         <option value=\"created\"{s1}>{created}</option><option value=\"duplicate\"{s2}>{duplicate}</option>\
         <option value=\"no_deal\"{s3}>{no_deal}</option></select></label>\
         <label>{channel} <input name=\"channel\" value=\"{vchannel}\"></label>\
         <label>{search} <input type=\"search\" name=\"q\" value=\"{vq}\" placeholder=\"{hint}\"></label>\
         <button>{apply}</button> <a href=\"/ui/leads\">{reset}</a></form>",
        from = esc(t.from),
        to = esc(t.to),
        kind = esc(t.kind),
        any = esc(t.any),
        call = esc(t.call),
        form = esc(t.form),
        outcome = esc(t.outcome),
        created = esc(t.created),
        duplicate = esc(t.duplicate),
        no_deal = esc(t.no_deal),
        channel = esc(t.channel),
        search = esc(t.search),
        hint = esc(t.search_hint),
        apply = esc(t.apply),
        reset = esc(t.reset),
        vfrom = val("from"),
        vto = val("to"),
        vchannel = val("channel"),
        vq = val("q"),
        sc = sel("type", "call"),
        sf = sel("type", "form"),
        s1 = sel("outcome", "created"),
        s2 = sel("outcome", "duplicate"),
        s3 = sel("outcome", "no_deal"),
    );
    if let Some(e) = error {
        let _ = write!(b, "<p class=\"err\">{}: {}</p>", esc(t.bad_filter), esc(e));
    }
    let shown = &rows[..rows.len().min(PAGE as usize)];
    // Live updates only where a new lead belongs: the first page, unfiltered.
    let unfiltered = PARAMS
        .iter()
        .all(|k| q.get(*k).is_none_or(|v| v.trim().is_empty()))
        && q.get("before").is_none();
    let live = if unfiltered {
        format!(
            " data-live=\"lead\" data-after=\"{}\"",
            shown.first().map_or(0, |l| l.id)
        )
    } else {
        String::new()
    };
    let _ = write!(
        b,
        "<table id=\"leads\">{}<tbody{live}>",
        head(&[
            t.id,
            t.date,
            t.kind,
            t.form_or_number,
            t.name,
            t.phone,
            t.visit,
            t.comment,
            t.outcome
        ])
    );
    for l in shown {
        b.push_str(&row(ctx, l));
    }
    b.push_str("</tbody></table>");
    if shown.is_empty() {
        let _ = write!(b, "<p class=\"empty\">{}</p>", esc(t.nothing));
    }
    let mut keep = String::new();
    for k in PARAMS {
        if let Some(v) = q.get(*k).filter(|v| !v.trim().is_empty()) {
            let _ = write!(keep, "&{k}={}", url_value(v));
        }
    }
    b.push_str("<p class=\"pages\">");
    if q.contains_key("before") {
        let _ = write!(
            b,
            "<a href=\"/ui/leads?{}\">{}</a> ",
            esc(keep.trim_start_matches('&')),
            esc(t.newest)
        );
    }
    if rows.len() > PAGE as usize {
        if let Some(last) = shown.last() {
            let _ = write!(
                b,
                "<a id=\"older\" href=\"/ui/leads?before={}{}\">{}</a>",
                last.id,
                esc(&keep),
                esc(t.older)
            );
        }
    } else if let Some(f) = floor.filter(|f| *f > 0) {
        // The bounded read ended before the table did.
        let _ = write!(
            b,
            "<span class=\"searched\">{} {}.</span> <a id=\"older\" href=\"/ui/leads?before={}{}\">{}</a>",
            esc(t.searched_to),
            f + 1,
            f + 1,
            esc(&keep),
            esc(t.search_on)
        );
    }
    b.push_str("</p>");
    layout(ctx, Nav::Leads, &b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::texts::EN;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_are_read_or_named_wrong() {
        let tz = FixedOffset::east_opt(3 * 3600).expect("tz");
        let rules = PhoneRules::new("7", "8");
        let f = parse_filter(
            &q(&[
                ("from", "2026-11-29"),
                ("to", "2026-11-29"),
                ("type", "call"),
                ("outcome", "duplicate"),
                ("channel", "google"),
                ("q", "8 (499) 123-45-67"),
                ("before", "40"),
            ]),
            tz,
            &rules,
        )
        .expect("valid");
        // Midnight in UTC+3 is 21:00 UTC the day before.
        assert_eq!(f.from, Some(1_795_899_600));
        assert_eq!(f.to, Some(1_795_899_600 + 86_400));
        assert_eq!(f.kind.as_deref(), Some("call"));
        assert_eq!(f.outcome, Some(OutcomeKind::Duplicate));
        assert_eq!(f.channel.as_deref(), Some("google"));
        assert_eq!(f.search, Some(Search::Phone("74991234567".into())));
        assert_eq!(f.before, Some(40));
        assert_eq!(f.limit, PAGE + 1);
        let empty = parse_filter(&q(&[("q", " "), ("type", "")]), tz, &rules).expect("empty");
        assert_eq!(
            empty,
            LeadQuery {
                limit: PAGE + 1,
                ..Default::default()
            }
        );
        for (pairs, err) in [
            (
                &[("from", "29.11.2026")][..],
                "from: \"29.11.2026\" is not a date",
            ),
            (&[("type", "fax")], "type: \"fax\" is not call or form"),
            (
                &[("from", "2026-12-05"), ("to", "2026-12-01")],
                "to: 2026-12-01 is before from: 2026-12-05",
            ),
            (&[("outcome", "won")], "outcome: \"won\" is not"),
            (&[("before", "x")], "before: \"x\" is not a lead id"),
        ] {
            let e = parse_filter(&q(pairs), tz, &rules).expect_err(err);
            assert!(e.starts_with(err), "{e}");
        }
        for (s, search) in [
            ("+7 499 123-45-67", Search::Phone("74991234567".into())),
            ("Ivan", Search::NamePrefix("Ivan".into())),
            ("123", Search::Phone("123".into())),
            ("12 3", Search::NamePrefix("12 3".into())),
            ("101a", Search::NamePrefix("101a".into())),
            ("Room 12345", Search::NamePrefix("Room 12345".into())),
            // Pasted from a web page: no-break spaces and en dashes.
            (
                "+7\u{a0}499\u{a0}123\u{2013}45\u{2013}67",
                Search::Phone("74991234567".into()),
            ),
            // A name keeps its dash.
            (
                "Анна\u{2013}Мария",
                Search::NamePrefix("Анна\u{2013}Мария".into()),
            ),
        ] {
            assert_eq!(search_of(s, &rules), search, "{s}");
        }
    }

    #[test]
    fn unindexed_filters_read_a_bounded_window() {
        let base = LeadQuery {
            limit: PAGE + 1,
            ..Default::default()
        };
        for (q, floor) in [
            (
                LeadQuery {
                    kind: Some("form".into()),
                    ..base.clone()
                },
                Some(1_000_001 - SCAN),
            ),
            (
                LeadQuery {
                    outcome: Some(OutcomeKind::NoDeal),
                    before: Some(150_000),
                    ..base.clone()
                },
                Some(50_000),
            ),
            (
                LeadQuery {
                    from: Some(1),
                    before: Some(10),
                    ..base.clone()
                },
                Some(0),
            ),
            (
                LeadQuery {
                    kind: Some("form".into()),
                    channel: Some("vk".into()),
                    ..base.clone()
                },
                Some(1_000_001 - SCAN),
            ),
            // The channel alone is bounded too: the overview's channel is
            // worked out per lead, no index finds it.
            (
                LeadQuery {
                    channel: Some("vk".into()),
                    ..base.clone()
                },
                Some(1_000_001 - SCAN),
            ),
            (
                LeadQuery {
                    kind: Some("form".into()),
                    search: Some(Search::NamePrefix("I".into())),
                    ..base.clone()
                },
                None,
            ),
            (base.clone(), None),
        ] {
            let mut q2 = q.clone();
            bound_scan(&mut q2, 1_000_000);
            assert_eq!(q2.floor, floor, "{q:?}");
        }
    }

    fn lead(id: i64, name: &str, decision: &str) -> LeadRow {
        LeadRow {
            id,
            created_at: 0,
            kind: "form".into(),
            form: "order".into(),
            dialed: String::new(),
            title: String::new(),
            name: name.into(),
            phone: "74991234567".into(),
            email: String::new(),
            visit_id: "v\"1".into(),
            channel: "g<cpc>".into(),
            text: "a\nb".into(),
            decision: decision.into(),
            deal_id: None,
            pending: None,
        }
    }

    #[test]
    fn rows_escape_and_duplicates_link() {
        let ctx = Ctx {
            t: &EN,
            tz: FixedOffset::east_opt(0).expect("tz"),
            phone_format: "+X XXX XXX-XX-XX",
            phone_rules: &crate::phone::PhoneRules::default(),
            csrf: "c",
            user: "u",
        };
        let r = row(
            &ctx,
            &lead(3, "<script>alert(1)</script>", "duplicate of lead 2"),
        );
        assert!(r.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{r}");
        assert!(!r.contains("<script>"));
        // The channel, then the visit it came with.
        assert!(
            r.contains("<td>g&lt;cpc&gt;<br><span class=\"muted\">v&quot;1</span></td>"),
            "{r}"
        );
        assert!(r.contains("a&#10;b") && !r.contains('\n'));
        assert!(r.contains("+7 499 123-45-67"));
        assert!(r.contains("<a href=\"/ui/leads?before=3#lead-2\">duplicate of lead 2</a>"));
        let d = row(&ctx, &lead(4, "x", "duplicate of deal 9"));
        assert!(d.contains("<a href=\"/ui/deals#deal-9\">"));
        // In Russian the outcome reads in Russian, and links alike; a
        // call from a withheld number says so.
        let ru = Ctx {
            t: &crate::ui::texts::RU,
            ..ctx
        };
        let r = row(&ru, &lead(3, "n", "duplicate of lead 2"));
        assert!(
            r.contains("<a href=\"/ui/leads?before=3#lead-2\">дубль заявки 2</a>"),
            "{r}"
        );
        let mut withheld = lead(5, "", "deal 4 created");
        withheld.phone = String::new();
        withheld.kind = "call".into();
        let r = row(&ru, &withheld);
        assert!(
            r.contains("номер скрыт") && r.contains("сделка 4 создана"),
            "{r}"
        );
        let p = page(
            &ctx,
            &q(&[("channel", "a&b")]),
            &(1..=51)
                .rev()
                .map(|i| lead(i, "n", "deal 1 created"))
                .collect::<Vec<_>>(),
            None,
            None,
        );
        assert!(
            p.contains("<a id=\"older\" href=\"/ui/leads?before=2&amp;channel=a%26b\">"),
            "keyset link keeps filters"
        );
        assert!(!p.contains("data-live"), "filtered pages are not live");
        assert!(
            !p.contains("id=\"lead-1\""),
            "51st row only says there is more"
        );
        let first = page(&ctx, &q(&[]), &[lead(7, "n", "deal 1 created")], None, None);
        let bounded = page(
            &ctx,
            &q(&[("type", "form")]),
            &[lead(250_001, "n", "deal 1 created")],
            Some(200_000),
            None,
        );
        assert!(
            bounded.contains("<a id=\"older\" href=\"/ui/leads?before=200001&amp;type=form\">"),
            "{bounded}"
        );
        assert!(first.contains("data-live=\"lead\" data-after=\"7\""));
    }
}
