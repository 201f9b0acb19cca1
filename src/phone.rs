//! Phone numbers: the one normalisation of SPEC T-5, used wherever a phone
//! enters siptrack (SIP user parts, API JSON, CRM status updates), so that
//! lookups match across formats; and the CRM phone formatter of SPEC C-3.
//! Pure functions.

use smol_str::SmolStr;
use std::borrow::Cow;

mod typed;
pub use typed::{form_phone, typed_phone, FormPhone, Typed};

/// The numbering plan the operator configures (`[phone]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhoneRules {
    /// Digits of the country calling code, e.g. "7".
    pub country_code: String,
    /// The national trunk prefix, e.g. "8" in Russia, "0" in most of
    /// Europe; empty where there is none.
    pub trunk_prefix: String,
    /// Digits of a national significant number; 0 when it varies, in
    /// which case only the trunk-prefix rule applies.
    pub national_length: usize,
    /// Callers dial abroad with `810` (trunk 8, then 10) besides `00`
    /// (Russia, Belarus).
    pub international_810: bool,
}

impl Default for PhoneRules {
    fn default() -> Self {
        PhoneRules::new("7", "8")
    }
}

impl PhoneRules {
    /// Russia's and Kazakhstan's plan (+7, trunk 8, ten digits), where
    /// "+8 9…" is a slip for "8 9…" (see `Plan::of`).
    fn plus_8_is_trunk(&self) -> bool {
        self.country_code == "7" && self.trunk_prefix == "8" && self.national_length == 10
    }

    /// Rules for a country, with its usual national number length.
    pub fn new(country_code: &str, trunk_prefix: &str) -> PhoneRules {
        PhoneRules {
            country_code: country_code.to_string(),
            trunk_prefix: trunk_prefix.to_string(),
            national_length: national_length(country_code),
            international_810: matches!(country_code, "7" | "375") && trunk_prefix == "8",
        }
    }
}

/// National significant number lengths where they are fixed; 0 where they
/// vary (Germany, Austria …) or are unknown here.
fn national_length(country_code: &str) -> usize {
    match country_code {
        "7" | "1" | "44" | "39" | "91" | "61" | "81" | "55" | "52" | "90" => 10,
        "33" | "34" | "48" | "375" | "380" | "420" | "421" | "351" | "46" | "31" | "32" | "998"
        | "995" | "374" | "994" | "996" | "992" | "373" => 9,
        "45" | "47" | "372" | "371" | "370" | "65" | "852" => 8,
        "86" => 11,
        _ => 0,
    }
}

/// The outcome of normalising one phone field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalized {
    /// Digits only, international form without `+`.
    Number(String),
    /// Not a phone number (`anonymous`, a SIP login, empty): the input,
    /// unchanged.
    NotANumber(String),
}

/// SPEC T-5.
///
/// - Formatting (space, `-`, `(`, `)`, `.`, a leading `+`) is dropped.
/// - Anything else that is not a digit makes it not a number.
/// - `+…` or `00…` is already international: kept as dialed.
/// - trunk prefix + national number → country code + national number.
/// - a national number alone → country code prepended.
/// - anything else (extensions like `101`, numbers already starting with
///   the country code, lengths that fit no rule) keeps its digits.
///
/// The input is a bare user part: `tel:` and `;param` are the SIP parser's
/// to strip, and here they make the value not a number.
pub fn normalize(raw: &str, rules: &PhoneRules) -> Normalized {
    owned(raw, rules, normalize_into)
}

/// An `…_into` form's answer as a [`Normalized`] of its own.
fn owned(
    raw: &str,
    rules: &PhoneRules,
    into: fn(&str, &PhoneRules, &mut String) -> bool,
) -> Normalized {
    let mut digits = String::with_capacity(raw.len() + rules.country_code.len());
    if into(raw, rules, &mut digits) {
        Normalized::Number(digits)
    } else {
        Normalized::NotANumber(raw.to_string())
    }
}

/// [`normalize`] into `out` (cleared first): true and the number's digits
/// in `out` when `raw` is a number, false (and `out` unspecified) when it
/// is not. Every INVITE normalises its dialed number and its caller's in
/// From, P-Asserted-Identity and Remote-Party-ID: with a reused buffer that
/// is no allocation at all, where `normalize` needs two or three.
pub fn normalize_into(raw: &str, rules: &PhoneRules, out: &mut String) -> bool {
    out.clear();
    let Some(n) = Plan::of(raw, rules) else {
        return false;
    };
    n.write(out);
    true
}

/// [`normalize_into`] as a [`SmolStr`]: a number (at most 23 bytes, as
/// every E.164 number is) is kept inline, where a `String` per number was
/// an allocation for every call's dialed and caller numbers (issue 15).
pub fn normalize_smol(raw: &str, rules: &PhoneRules) -> Option<SmolStr> {
    let n = Plan::of(raw, rules)?;
    // Written on the stack and made a SmolStr once (a `SmolStrBuilder`'s
    // `push` cost ~40 instructions a digit).
    let mut buf = [0u8; INLINE];
    let Some(out) = buf.get_mut(..n.len()) else {
        // Longer than a SmolStr holds inline (no E.164 number is).
        let mut out = String::new();
        n.write(&mut out);
        return Some(SmolStr::from(out));
    };
    let (head, tail) = out.split_at_mut(n.prefix.len());
    head.copy_from_slice(n.prefix.as_bytes());
    match n.plain() {
        Some(digits) => tail.copy_from_slice(digits.as_bytes()),
        None => n.copy_digits(tail),
    }
    // The prefix is a str and the digits ASCII: always UTF-8, but
    // `from_utf8` spent ~95 instructions a number proving it (issue 15);
    // `utf8` checks an ASCII number a word at a time.
    crate::sip::chars::utf8(out).ok().map(SmolStr::new)
}

/// What a [`SmolStr`] holds without allocating.
const INLINE: usize = 23;

/// [`normalize_into`] appended to a byte buffer (a message edit): true
/// and the number written, or false and `out` as it was.
pub fn normalize_append(raw: &str, rules: &PhoneRules, out: &mut Vec<u8>) -> bool {
    let Some(n) = Plan::of(raw, rules) else {
        return false;
    };
    out.reserve(n.len());
    out.extend_from_slice(n.prefix.as_bytes());
    match n.plain() {
        Some(digits) => out.extend_from_slice(digits.as_bytes()),
        None => out.extend(n.digits()),
    }
    true
}

/// What T-5 makes of a number, decided before a byte is written: the
/// digits of `raw` (formatting dropped), the first `skip` of them left
/// out and `prefix` put first. Deciding first writes each digit once,
/// where editing the digits afterwards moved them again (issue 15).
struct Plan<'a> {
    /// `raw` trimmed: digits and formatting only.
    text: &'a str,
    count: usize,
    prefix: &'a str,
    skip: usize,
}

impl<'a> Plan<'a> {
    /// - Formatting (space, `-`, `(`, `)`, `.`, a leading `+`) is dropped.
    /// - Anything else that is not a digit makes it not a number (None).
    /// - `+…` or `00…` is already international: kept as dialed.
    /// - trunk prefix + national number → country code + national number.
    /// - a national number alone → country code prepended.
    /// - anything else keeps its digits.
    fn of(raw: &'a str, rules: &'a PhoneRules) -> Option<Plan<'a>> {
        // A value that starts and ends with printable ASCII (the usual
        // number) has nothing to trim: `trim` decoded chars from both ends
        // of every number (issue 15).
        let b = raw.as_bytes();
        let text = if b.first().is_some_and(u8::is_ascii_graphic)
            && b.last().is_some_and(u8::is_ascii_graphic)
        {
            raw
        } else {
            raw.trim()
        };
        // `#` after the number is the key that ends dialing, which some
        // gateways leave in the user part (trial, 2026-12-03): no part of
        // the number.
        let text = match text.as_bytes().last() {
            Some(b'#') => text.trim_end_matches('#').trim_end(),
            _ => text,
        };
        let (mut count, mut international) = (0, false);
        // Bytes, not chars: anything outside ASCII is no digit and no
        // formatting, so the first byte of it ends the number either way.
        for &c in text.as_bytes() {
            match c {
                b'0'..=b'9' => count += 1,
                b' ' | b'-' | b'(' | b')' | b'.' => {}
                // "Leading" means before any digit, so "(+7) 499 …" from a
                // web form counts; a second '+' or one between digits is no
                // number.
                b'+' if count == 0 && !international => international = true,
                _ => return None,
            }
        }
        if count == 0 {
            return None;
        }
        let mut plan = Plan {
            text,
            count,
            prefix: "",
            skip: 0,
        };
        if international {
            // "+8 9xx …": Russia's trunk prefix written as a country code,
            // a common slip on web forms; no country code begins 89, so
            // it is a national mobile number (it was kept as a foreign
            // one, and the client's lead missed their earlier deal).
            if rules.plus_8_is_trunk() && count == 11 && plan.starts_with(b"89") {
                plan.prefix = &rules.country_code;
                plan.skip = 1;
            }
            return Some(plan);
        }
        // 00 is the international call prefix almost everywhere (ITU
        // E.164). A bare "00" has no number behind it: its digits are kept
        // rather than fed to the trunk rule (which would make it "490" in
        // Germany).
        if plan.starts_with(b"00") {
            if count > 2 {
                plan.skip = 2;
            }
            return Some(plan);
        }
        // `8 10` is how callers in Russia and Belarus dial abroad (trial,
        // 2026-12-02: `810442079460922` became `+810…`, a Japanese
        // number). No national number starts with it, and the shortest
        // number abroad (a country code and 7 digits) makes 12 with it.
        if rules.international_810 && count >= 12 && plan.starts_with(b"810") {
            plan.skip = 3;
            return Some(plan);
        }
        let n = rules.national_length;
        let trunk = rules.trunk_prefix.as_bytes();
        if !trunk.is_empty() && plan.starts_with(trunk) {
            let national = count - trunk.len();
            // With the length unknown a lone trunk digit ("0", an operator
            // code) must not become the bare country code.
            if national > 0 && (n == 0 || national == n) {
                plan.prefix = &rules.country_code;
                plan.skip = trunk.len();
                return Some(plan);
            }
        }
        if n > 0 && count == n {
            plan.prefix = &rules.country_code;
        }
        Some(plan)
    }

    /// The digits of `text`, in order.
    fn all_digits(&self) -> impl Iterator<Item = u8> + 'a {
        self.text.bytes().filter(u8::is_ascii_digit)
    }

    /// The digits written after the prefix as one slice, when `text` is
    /// digits only (the usual user part): one copy, not a byte at a time.
    fn plain(&self) -> Option<&'a str> {
        // Only ASCII digits (one byte each) when the count is the length.
        (self.count == self.text.len()).then(|| self.text.get(self.skip..))?
    }

    /// The digits written after the prefix.
    fn digits(&self) -> impl Iterator<Item = u8> + 'a {
        self.all_digits().skip(self.skip)
    }

    fn starts_with(&self, head: &[u8]) -> bool {
        if head.len() > self.count {
            return false;
        }
        // Digits only (the usual user part): a slice compare, where the
        // filtered iterator cost ~15 instructions a digit (issue 15).
        if self.count == self.text.len() {
            return self.text.as_bytes().starts_with(head);
        }
        self.all_digits().zip(head).all(|(d, &h)| d == h)
    }

    /// The digits after the first `skip` written into `out`, which is
    /// `count - skip` long: one loop over `text`, where zipping `out` with
    /// the filtered, skipping iterator cost ~25 instructions a digit of a
    /// formatted number (`8-916-123-45-67`, issue 15).
    fn copy_digits(&self, out: &mut [u8]) {
        let mut slots = out.iter_mut();
        let mut skip = self.skip;
        for &c in self.text.as_bytes() {
            if !c.is_ascii_digit() {
                continue;
            }
            if skip > 0 {
                skip -= 1;
            } else if let Some(slot) = slots.next() {
                *slot = c;
            }
        }
    }

    /// The number appended to `out`.
    fn write(&self, out: &mut String) {
        out.reserve(self.len());
        out.push_str(self.prefix);
        match self.plain() {
            Some(digits) => out.push_str(digits),
            None => out.extend(self.digits().map(char::from)),
        }
    }

    /// Bytes written.
    fn len(&self) -> usize {
        self.prefix.len() + self.count - self.skip
    }
}

/// RFC 3261 25.1 escapes of a SIP user part decoded (`8%20916` → `8 916`).
/// None when an escape is malformed (`%2`, `%zz`) or the bytes it makes are
/// not UTF-8: such a user part is no phone number and stays as it came.
pub fn unescape_user(user: &str) -> Option<String> {
    unescaped(user).map(Cow::into_owned)
}

/// [`unescape_user`] without a copy when there is nothing to decode (the
/// usual user part: digits).
fn unescaped(user: &str) -> Option<Cow<'_, str>> {
    if !user.contains('%') {
        return Some(Cow::Borrowed(user));
    }
    let b = user.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// [`normalize`] for a SIP user part: escapes decoded first (SPEC T-5).
/// `NotANumber` carries the user part as it came, escapes and all.
pub fn normalize_user(user: &str, rules: &PhoneRules) -> Normalized {
    owned(user, rules, normalize_user_into)
}

/// [`normalize_user`] into a reused buffer, as [`normalize_into`].
///
/// A user part that is a number as it came has no escape (`%` is neither
/// digit nor formatting, so it makes [`normalize_into`] say no): the
/// usual user part is normalised at once, and only one it rejects is
/// searched for escapes, where every user part was searched first.
pub fn normalize_user_into(user: &str, rules: &PhoneRules, out: &mut String) -> bool {
    if normalize_into(user, rules, out) {
        return true;
    }
    let user = subscriber(user);
    normalize_into(user, rules, out)
        || (user.contains('%')
            && unescaped(user).is_some_and(|u| normalize_into(subscriber(&u), rules, out)))
}

/// [`normalize_user`] as a [`SmolStr`], as [`normalize_smol`] (escapes
/// looked for only when the user part as it came is no number).
pub fn normalize_user_smol(user: &str, rules: &PhoneRules) -> Option<SmolStr> {
    normalize_smol(user, rules).or_else(|| {
        let user = subscriber(user);
        normalize_smol(user, rules).or_else(|| {
            if user.contains('%') {
                unescaped(user).and_then(|u| normalize_smol(subscriber(&u), rules))
            } else {
                None
            }
        })
    })
}

/// A user part's number without its parameters: a `user=phone` URI
/// carries a telephone-subscriber with them (RFC 3966, RFC 4694:
/// `+79161230004;npdi;rn=+79160000000`). They are no part of the caller's
/// number (trial, 2026-12-02: `+79161230004;npdi` reached the CRM as the
/// phone).
fn subscriber(user: &str) -> &str {
    user.split_once(';').map_or(user, |(number, _)| number)
}

/// [`normalize_user`] appended to a byte buffer, as [`normalize_append`]
/// (escapes looked for only when the user part as it came is no number,
/// as in [`normalize_user_into`]).
pub fn normalize_user_append(user: &str, rules: &PhoneRules, out: &mut Vec<u8>) -> bool {
    if normalize_append(user, rules, out) {
        return true;
    }
    let user = subscriber(user);
    normalize_append(user, rules, out)
        || (user.contains('%')
            && unescaped(user).is_some_and(|u| normalize_append(subscriber(&u), rules, out)))
}

/// SPEC T-5: a caller who withheld the number. The words networks and
/// phones put in the From user part when there is no number to show (any
/// case, escapes decoded), or nothing at all.
pub fn is_withheld(user: &str) -> bool {
    // The usual caller: a number. Its first byte stays first whatever
    // escapes follow and is no white space, so the decoded, trimmed form
    // is not empty and starts with a digit or '+': none of the words.
    if matches!(user.as_bytes().first(), Some(b'0'..=b'9' | b'+')) {
        return false;
    }
    let decoded = unescaped(user).unwrap_or(Cow::Borrowed(user));
    let u = decoded.trim();
    u.is_empty()
        || [
            "anonymous",
            "unknown",
            "restricted",
            "private",
            "unavailable",
        ]
        .iter()
        .any(|w| u.eq_ignore_ascii_case(w))
}

/// [`normalize`] as a string: the digits of a number, or the input.
pub fn normalize_str(raw: &str, rules: &PhoneRules) -> String {
    match normalize(raw, rules) {
        Normalized::Number(d) => d,
        Normalized::NotANumber(s) => s,
    }
}

/// SPEC C-3: the `X`s of `pattern` take the last digits of the number,
/// left to right (`"8 (XXX) XXX-XX-XX"`, `"+7XXXXXXXXXX"`). A number with
/// fewer digits than the pattern has `X`s (an extension), a pattern
/// without `X`, or a value that is not a number: the value as it is.
///
/// The pattern is written for the numbers of the configured country
/// (`[phone]`): it cuts the country code off. A longer number of another
/// country (`442079460958` under `"+7XXXXXXXXXX"`) would lose its own
/// code and become a wrong domestic number, one that may even be another
/// client's; it goes as `+` and its digits instead (E.164), which every
/// CRM reads.
pub fn format_for_crm(value: &str, pattern: &str, rules: &PhoneRules) -> String {
    let slots = pattern.chars().filter(|&c| c == 'X').count();
    if slots == 0 || value.len() < slots || !value.bytes().all(|b| b.is_ascii_digit()) {
        return value.to_string();
    }
    // A normalised number is in international form: one of the pattern's
    // length that is not domestic is foreign too (`+4930123456`, 10
    // digits, went as `8 (493) 012-34-56`; trial, 2026-12-02).
    if !is_domestic(value, rules) {
        return format!("+{value}");
    }
    let mut digits = value[value.len() - slots..].chars();
    pattern
        .chars()
        .map(|c| match c {
            'X' => digits.next().unwrap_or('X'),
            other => other,
        })
        .collect()
}

/// A normalised number (digits, international form) of the configured
/// country: its country code, then a national number of the country's
/// length (any length where it varies).
fn is_domestic(digits: &str, rules: &PhoneRules) -> bool {
    let cc = rules.country_code.as_str();
    !cc.is_empty()
        && digits.starts_with(cc)
        && (rules.national_length == 0 || digits.len() == cc.len() + rules.national_length)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The form `normalize_into` had before it decided first and wrote
    /// once (issue 15): the reference the table below compares with.
    /// [`normalize`] into `out` (cleared first): true and the number's digits
    /// in `out` when `raw` is a number, false (and `out` unspecified) when it
    /// is not. Every INVITE normalises its dialed number and its caller's in
    /// From, P-Asserted-Identity and Remote-Party-ID: with a reused buffer that
    /// is no allocation at all, where `normalize` needs two or three.
    fn old_normalize_into(raw: &str, rules: &PhoneRules, out: &mut String) -> bool {
        out.clear();
        // Room for every digit and the country code at once: growing from
        // empty a push at a time took two reallocations per number.
        out.reserve(raw.len() + rules.country_code.len());
        let mut international = false;
        // Bytes, not chars: anything outside ASCII is no digit and no
        // formatting, so the first byte of it ends the number either way.
        for &c in raw.trim().as_bytes() {
            match c {
                b'0'..=b'9' => out.push(char::from(c)),
                b' ' | b'-' | b'(' | b')' | b'.' => {}
                // "Leading" means before any digit, so "(+7) 499 …" from a web
                // form counts; a second '+' or one between digits is no number.
                b'+' if out.is_empty() && !international => international = true,
                _ => return false,
            }
        }
        if out.is_empty() {
            return false;
        }
        if international {
            if rules.plus_8_is_trunk() && out.len() == 11 && out.starts_with("89") {
                out.replace_range(..1, &rules.country_code);
            }
            return true;
        }
        // 00 is the international call prefix almost everywhere (ITU E.164).
        // A bare "00" has no number behind it: its digits are kept rather than
        // fed to the trunk rule (which would make it "490" in Germany).
        if out.starts_with("00") {
            if out.len() > 2 {
                out.drain(..2);
            }
            return true;
        }
        let n = rules.national_length;
        let cc = rules.country_code.as_str();
        let trunk = rules.trunk_prefix.as_str();
        if !trunk.is_empty() && out.starts_with(trunk) {
            let national = out.len() - trunk.len();
            // With the length unknown a lone trunk digit ("0", an operator
            // code) must not become the bare country code.
            if national > 0 && (n == 0 || national == n) {
                out.replace_range(..trunk.len(), cc);
                return true;
            }
        }
        if n > 0 && out.len() == n {
            out.insert_str(0, cc);
        }
        true
    }

    /// The decide-then-write normalisation against the edit-afterwards one
    /// it replaced, over every shape the rules tell apart, under several
    /// numbering plans; and the byte-buffer form appends the same.
    #[test]
    fn one_write_normalisation_matches_the_old_form() {
        let plans = [
            PhoneRules::new("7", "8"),
            PhoneRules::new("49", "0"),
            PhoneRules::new("45", "0"),
            PhoneRules::new("1", "1"),
            PhoneRules::new("44", ""),
            PhoneRules::new("380", "0"),
            PhoneRules::new("7", "89"),
        ];
        let inputs = [
            "",
            " ",
            "+",
            "++7",
            "+7+",
            "7+",
            "0",
            "00",
            "000",
            "0049301234",
            "8",
            "80",
            "88",
            "8 800 555 35 35",
            "+7 (499) 123-45-67",
            "(+7) 499 123 45 67",
            "84991234567",
            "4991234567",
            "74991234567",
            "06 001 60 90",
            "0301234567",
            "030 1234567",
            "101",
            "1 800 555 0100",
            "18005550100",
            "8005550100",
            "891612345678",
            "anonymous",
            "8-916-123-45-67x",
            "８９１６",
            " 89161234567 ",
            "8.916.123.45.67",
            "0 ",
            "89",
            "890",
            "8912345678",
            "899161234567",
            "+74991234567",
            "00 49 30 1234",
            "0049",
            "1234567890",
            "(8)9161234567",
            "89161234567\u{a0}",
            "\u{2003}89161234567",
            "\t8916123456\r",
            "8916123456\x0b",
            "\x1c89161234567",
            // Formatted numbers whose leading digits are dropped (trunk,
            // 00, "+8 9…"): the digits are copied one by one.
            "8-916-123-45-67",
            "00-49-30-1234",
            "+8 (916) 123-45-67",
        ];
        for rules in &plans {
            for raw in inputs {
                let mut old = String::new();
                let old_ok = old_normalize_into(raw, rules, &mut old);
                let mut new = String::from("stale");
                let new_ok = normalize_into(raw, rules, &mut new);
                assert_eq!(new_ok, old_ok, "{raw:?} {rules:?}");
                let mut bytes = b"head".to_vec();
                assert_eq!(normalize_append(raw, rules, &mut bytes), old_ok);
                let smol = normalize_smol(raw, rules);
                assert_eq!(smol.as_deref(), new_ok.then_some(new.as_str()), "{raw:?}");
                if old_ok {
                    assert_eq!(new, old, "{raw:?} {rules:?}");
                    assert_eq!(bytes, [b"head", old.as_bytes()].concat());
                } else {
                    assert_eq!(bytes, b"head", "{raw:?}: nothing appended");
                }
            }
        }
    }

    fn rules(cc: &str, trunk: &str) -> PhoneRules {
        PhoneRules::new(cc, trunk)
    }

    #[test]
    fn normalisation_table() {
        let n = |s: &str| Normalized::Number(s.to_string());
        let not = |s: &str| Normalized::NotANumber(s.to_string());
        for (input, cc, trunk, expected) in [
            // SPEC T-5, word for word.
            ("74991234567", "7", "8", n("74991234567")),
            ("84991234567", "7", "8", n("74991234567")),
            ("4991234567", "7", "8", n("74991234567")),
            ("+7 (499) 123-45-67", "7", "8", n("74991234567")),
            ("06 001 60 90", "45", "0", n("4560016090")),
            // Russia, more shapes.
            ("+74991234567", "7", "8", n("74991234567")),
            ("8-800-555-35-35", "7", "8", n("78005553535")),
            ("8 800 555 35 35", "7", "8", n("78005553535")),
            ("8(800)5553535", "7", "8", n("78005553535")),
            ("7.499.123.45.67", "7", "8", n("74991234567")),
            ("(499) 123-45-67", "7", "8", n("74991234567")),
            ("9161234567", "7", "8", n("79161234567")),
            ("9161234567#", "7", "8", n("79161234567")),
            ("8 916 123-45-67 #", "7", "8", n("79161234567")),
            ("#", "7", "8", not("#")),
            ("*21#", "7", "8", not("*21#")),
            ("89161234567", "7", "8", n("79161234567")),
            ("+7 916 123 45 67", "7", "8", n("79161234567")),
            (" 79161234567 ", "7", "8", n("79161234567")),
            ("8800", "7", "8", n("8800")),
            ("101", "7", "8", n("101")),
            ("123456789012345", "7", "8", n("123456789012345")),
            // Other countries, with '+', '00' and trunk prefix 0.
            ("+44 20 7946 0958", "7", "8", n("442079460958")),
            ("020 7946 0958", "44", "0", n("442079460958")),
            ("2079460958", "44", "0", n("442079460958")),
            ("00442079460958", "7", "8", n("442079460958")),
            ("0030 210 1234567", "49", "0", n("302101234567")),
            ("+49 30 12345678", "49", "0", n("493012345678")),
            ("+1 (650) 555-2222", "7", "8", n("16505552222")),
            ("6505552222", "1", "1", n("16505552222")),
            ("16505552222", "1", "1", n("16505552222")),
            ("+380 44 123 4567", "7", "8", n("380441234567")),
            ("044 123 4567", "380", "0", n("380441234567")),
            ("60016090", "45", "", n("4560016090")),
            ("+45 60 01 60 90", "45", "", n("4560016090")),
            // Not numbers: passed through exactly.
            ("anonymous", "7", "8", not("anonymous")),
            ("Anonymous", "7", "8", not("Anonymous")),
            ("roistat123_1", "7", "8", not("roistat123_1")),
            ("user.name", "7", "8", not("user.name")),
            ("", "7", "8", not("")),
            ("+", "7", "8", not("+")),
            ("()- ", "7", "8", not("()- ")),
            ("7499+1234567", "7", "8", not("7499+1234567")),
            ("*21#", "7", "8", not("*21#")),
            ("8%20916", "7", "8", not("8%20916")),
            ("++74991234567", "7", "8", not("++74991234567")),
            ("tel:+74991234567", "7", "8", not("tel:+74991234567")),
            ("74991234567;ext=1", "7", "8", not("74991234567;ext=1")),
            ("user@example.com", "7", "8", not("user@example.com")),
            // Leading '+' after brackets, and bare prefixes.
            ("(+7) 499 123-45-67", "7", "8", n("74991234567")),
            ("+ 44 20 7946 0958", "7", "8", n("442079460958")),
            ("00", "7", "8", n("00")),
            ("00", "49", "0", n("00")),
            ("0", "49", "0", n("0")),
            ("8", "7", "8", n("8")),
            ("0 30 12345678", "49", "0", n("493012345678")),
            ("0612 345 67", "45", "0", n("4561234567")),
            // "+8 9…" written for "+7 9…" or "8 9…": no country code
            // begins 89. Other "+8…" numbers are foreign (Vietnam's +84
            // shares 11 digits with Moscow's 8 495 …).
            ("+89161234567", "7", "8", n("79161234567")),
            ("+8 (916) 123-45-67", "7", "8", n("79161234567")),
            ("+84912345678", "7", "8", n("84912345678")),
            ("+891612345678", "7", "8", n("891612345678")),
            ("+89161234567", "49", "0", n("89161234567")),
            ("+89161234567", "375", "8", n("89161234567")),
            // 8 10: Russia's and Belarus's own way abroad.
            ("810442079460922", "7", "8", n("442079460922")),
            ("8 10 44 20 7946 0922", "7", "8", n("442079460922")),
            ("8 10 1 650 555 2222", "7", "8", n("16505552222")),
            ("810 375 17 123 45 67", "375", "8", n("375171234567")),
            ("81012345", "7", "8", n("81012345")),
            ("810442079460922", "49", "0", n("810442079460922")),
        ] {
            assert_eq!(
                normalize(input, &rules(cc, trunk)),
                expected,
                "{input:?} with country {cc}, trunk {trunk}"
            );
            // The inline form the router uses writes the same digits.
            let number = match &expected {
                Normalized::Number(d) => Some(d.as_str()),
                Normalized::NotANumber(_) => None,
            };
            let smol = normalize_smol(input, &rules(cc, trunk));
            assert_eq!(smol.as_deref(), number, "{input:?} inline");
        }
    }

    #[test]
    fn sip_user_parts_are_unescaped_before_normalising() {
        let r = PhoneRules::default();
        let n = |s: &str| Normalized::Number(s.to_string());
        let not = |s: &str| Normalized::NotANumber(s.to_string());
        for (user, expected) in [
            ("8%20(916)%20123-45-67", n("79161234567")),
            ("%2B7%20916%201234567", n("79161234567")),
            ("%2b79161234567", n("79161234567")),
            ("89161234567", n("79161234567")),
            // A telephone-subscriber's parameters are no part of it.
            ("+79161230004;npdi", n("79161230004")),
            ("+79161230004;npdi;rn=+79160000000", n("79161230004")),
            ("8%20916%201230004;isub=12", n("79161230004")),
            // Its ';' escaped too (trial, 2026-12-02: the CRM got
            // "9161234567%3Bext%3D5" as the phone, a new deal).
            ("9161234567%3Bext%3D5", n("79161234567")),
            ("%2B79161234567%3bnpdi", n("79161234567")),
            ("anonymous;x=1", not("anonymous;x=1")),
            // Malformed escapes and non-numbers: as they came.
            ("8%2", not("8%2")),
            ("8%zz916", not("8%zz916")),
            ("%FF%FE", not("%FF%FE")),
            ("user%40host", not("user%40host")),
            ("anonymous", not("anonymous")),
        ] {
            // The three forms the SIP path uses agree.
            let number = match &expected {
                Normalized::Number(d) => Some(d.clone()),
                Normalized::NotANumber(_) => None,
            };
            let smol = normalize_user_smol(user, &r).map(|s| s.to_string());
            assert_eq!(smol, number, "{user}: smol");
            let mut appended = Vec::new();
            let ok = normalize_user_append(user, &r, &mut appended);
            assert_eq!(
                ok.then(|| String::from_utf8_lossy(&appended).into_owned()),
                number
            );
            assert_eq!(normalize_user(user, &r), expected, "{user}");
        }
        assert_eq!(unescape_user("a%25b").as_deref(), Some("a%b"));
        assert_eq!(unescape_user("%").as_deref(), None);
    }

    /// The user-part forms as they were before they tried the user part
    /// as it came first (issue 15): unescape, then normalise.
    fn old_normalize_user_into(user: &str, rules: &PhoneRules, out: &mut String) -> bool {
        unescaped(user).is_some_and(|u| normalize_into(&u, rules, out))
    }

    fn old_normalize_user_append(user: &str, rules: &PhoneRules, out: &mut Vec<u8>) -> bool {
        unescaped(user).is_some_and(|u| normalize_append(&u, rules, out))
    }

    /// [`is_withheld`] before its shortcut for numbers.
    fn old_is_withheld(user: &str) -> bool {
        let decoded = unescaped(user).unwrap_or(Cow::Borrowed(user));
        let u = decoded.trim();
        u.is_empty()
            || [
                "anonymous",
                "unknown",
                "restricted",
                "private",
                "unavailable",
            ]
            .iter()
            .any(|w| u.eq_ignore_ascii_case(w))
    }

    /// The shortcuts for user parts that are numbers as they came give
    /// what unescaping first gave, escapes, withheld words and all.
    #[test]
    fn user_part_shortcuts_match_the_old_forms() {
        let users = [
            "",
            " ",
            "%20",
            "%",
            "8%2",
            "8%zz916",
            "%FF%FE",
            "+",
            "+%37",
            "8%20(916)%20123-45-67",
            "%2B7%20916%201234567",
            "%2b79161234567",
            "89161234567",
            "8-916-123-45-67",
            " 89161234567 ",
            "\u{a0}89161234567",
            "8916123456\u{0663}",
            "0049301234",
            "101",
            "user%40host",
            "anonymous",
            "Anonymous%20",
            "%20anonymous",
            "%61nonymous",
            "1anonymous",
            "+anonymous",
            "unknown",
            "UNAVAILABLE",
            "restricted",
            "private",
            "roistat123_1",
        ];
        for rules in [PhoneRules::new("7", "8"), PhoneRules::new("49", "0")] {
            for user in users {
                let mut old = String::new();
                let old_ok = old_normalize_user_into(user, &rules, &mut old);
                let mut new = String::from("stale");
                assert_eq!(
                    normalize_user_into(user, &rules, &mut new),
                    old_ok,
                    "{user:?}"
                );
                if old_ok {
                    assert_eq!(new, old, "{user:?}");
                }
                let (mut old_b, mut new_b) = (b"head".to_vec(), b"head".to_vec());
                assert_eq!(
                    normalize_user_append(user, &rules, &mut new_b),
                    old_normalize_user_append(user, &rules, &mut old_b),
                    "{user:?}"
                );
                assert_eq!(new_b, old_b, "{user:?}");
                assert_eq!(is_withheld(user), old_is_withheld(user), "{user:?}");
            }
        }
    }

    #[test]
    fn normalising_into_a_reused_buffer_matches_the_allocating_forms() {
        // One buffer through numbers and non-numbers alike: what a previous
        // value left in it must never leak into the next.
        let mut buf = String::from("leftover 123");
        for (input, cc, trunk) in [
            ("84991234567", "7", "8"),
            ("anonymous", "7", "8"),
            ("4991234567", "7", "8"),
            ("00", "49", "0"),
            ("00442079460958", "7", "8"),
            ("+7 (499) 123-45-67", "7", "8"),
            ("0", "49", "0"),
            ("7499+1234567", "7", "8"),
            ("0 30 12345678", "49", "0"),
            ("101", "7", "8"),
            ("8%20(916)%20123-45-67", "7", "8"),
            ("8%2", "7", "8"),
            ("", "7", "8"),
            ("\u{a0}89161234567", "7", "8"),
            ("8916123456\u{0663}", "7", "8"),
        ] {
            let r = rules(cc, trunk);
            let into = normalize_into(input, &r, &mut buf).then(|| buf.clone());
            let expected = match normalize(input, &r) {
                Normalized::Number(d) => Some(d),
                Normalized::NotANumber(s) => {
                    assert_eq!(s, input);
                    None
                }
            };
            assert_eq!(into, expected, "{input:?} with country {cc}, trunk {trunk}");
            let smol = normalize_smol(input, &r);
            assert_eq!(smol.as_deref(), expected.as_deref(), "{input:?}: smol");
            // Every number here fits inline: no allocation per call.
            assert!(!smol.is_some_and(|s| s.is_heap_allocated()), "{input:?}");
            let into = normalize_user_into(input, &r, &mut buf).then(|| buf.clone());
            let expected = match normalize_user(input, &r) {
                Normalized::Number(d) => Some(d),
                Normalized::NotANumber(s) => {
                    assert_eq!(s, input);
                    None
                }
            };
            assert_eq!(
                into, expected,
                "user {input:?} with country {cc}, trunk {trunk}"
            );
            let smol = normalize_user_smol(input, &r);
            assert_eq!(smol.as_deref(), expected.as_deref(), "user {input:?}: smol");
        }
        // Longer than a SmolStr holds inline: still the same digits.
        let long = "+8".to_string() + &"9".repeat(29);
        let r = rules("7", "8");
        assert!(normalize_into(&long, &r, &mut buf));
        let smol = normalize_smol(&long, &r).expect("a number");
        assert!(smol.is_heap_allocated() && smol.len() == 30);
        assert_eq!(smol, buf);
        // The allocating form's answers for the non-ASCII cases, pinned.
        let r = PhoneRules::default();
        assert_eq!(
            normalize("\u{a0}89161234567", &r),
            Normalized::Number("79161234567".into())
        );
        assert_eq!(
            normalize("8916123456\u{0663}", &r),
            Normalized::NotANumber("8916123456\u{0663}".into())
        );
    }

    #[test]
    fn withheld_callers() {
        for (user, withheld) in [
            ("anonymous", true),
            ("Anonymous", true),
            ("ANONYMOUS", true),
            ("unknown", true),
            ("Restricted", true),
            ("private", true),
            ("unavailable", true),
            ("", true),
            (" ", true),
            ("%20", true),
            ("Anonymous%20", true),
            ("79161234567", false),
            ("anonymous1", false),
            ("roistat123_1", false),
            ("101", false),
        ] {
            assert_eq!(is_withheld(user), withheld, "{user:?}");
        }
    }

    #[test]
    fn normalize_str_gives_digits_or_the_input() {
        let r = PhoneRules::default();
        assert_eq!(normalize_str("8 (916) 123-45-67", &r), "79161234567");
        assert_eq!(normalize_str("anonymous", &r), "anonymous");
    }

    #[test]
    fn rules_defaults_and_lengths() {
        assert_eq!(
            PhoneRules::default(),
            PhoneRules {
                country_code: "7".into(),
                trunk_prefix: "8".into(),
                national_length: 10,
                international_810: true,
            }
        );
        for (cc, len) in [
            ("7", 10),
            ("1", 10),
            ("44", 10),
            ("39", 10),
            ("91", 10),
            ("45", 8),
            ("33", 9),
            ("34", 9),
            ("48", 9),
            ("375", 9),
            ("380", 9),
            ("86", 11),
            ("49", 0),
            ("999", 0),
            ("", 0),
        ] {
            assert_eq!(rules(cc, "0").national_length, len, "country {cc}");
        }
    }

    #[test]
    fn overridden_national_length_wins() {
        let mut de = rules("49", "0");
        de.national_length = 11;
        assert_eq!(normalize_str("030 123456789", &de), "4930123456789");
        assert_eq!(normalize_str("30123456789", &de), "4930123456789");
        // Why the table says 0 for Germany: with a fixed 11, a 10-digit
        // national number plus its trunk 0 is taken for a national number.
        assert_eq!(normalize_str("030 12345678", &de), "4903012345678");
    }

    #[test]
    fn national_length_can_be_unknown() {
        // Germany: lengths vary, so only the trunk prefix rule applies.
        let de = rules("49", "0");
        assert_eq!(de.national_length, 0);
        assert_eq!(normalize_str("030 12345678", &de), "493012345678");
        assert_eq!(normalize_str("0171 1234567", &de), "491711234567");
        assert_eq!(normalize_str("12345", &de), "12345");
    }

    #[test]
    fn crm_formats() {
        for (value, pattern, expected) in [
            ("74991234567", "8 (XXX) XXX-XX-XX", "8 (499) 123-45-67"),
            ("74991234567", "+7XXXXXXXXXX", "+74991234567"),
            ("74991234567", "XXXXXXXXXXX", "74991234567"),
            ("74991234567", "+X XXX XXX-XX-XX", "+7 499 123-45-67"),
            ("101", "8 (XXX) XXX-XX-XX", "101"),
            // Another country's number keeps its own code (E.164).
            ("442079460958", "+7XXXXXXXXXX", "+442079460958"),
            ("442079460958", "8 (XXX) XXX-XX-XX", "+442079460958"),
            ("380441234567", "XXXXXXXXXX", "+380441234567"),
            // The country's code with a number of the wrong length is no
            // domestic number either.
            ("749912345678", "+7XXXXXXXXXX", "+749912345678"),
            ("74991234567", "", "74991234567"),
            ("74991234567", "plain", "74991234567"),
            ("anonymous", "+7XXXXXXXXXX", "anonymous"),
            ("", "+7XXXXXXXXXX", ""),
            // Exactly as many digits as Xs, one fewer, and a longer number.
            // A normalised number is international: ten digits are no
            // domestic number but one abroad (+49 91234567; trial,
            // 2026-12-02: +4930123456 went as 8 (493) 012-34-56).
            ("4991234567", "8 (XXX) XXX-XX-XX", "+4991234567"),
            ("4930123456", "8 (XXX) XXX-XX-XX", "+4930123456"),
            ("499123456", "8 (XXX) XXX-XX-XX", "499123456"),
            ("9974991234567", "+7XXXXXXXXXX", "+9974991234567"),
            // Only a capital X is a slot.
            ("74991234567", "8 (xxx) xxx-xx-xx", "74991234567"),
            ("+74991234567", "8 (XXX) XXX-XX-XX", "+74991234567"),
            ("roistat123_1", "XXX", "roistat123_1"),
        ] {
            assert_eq!(
                format_for_crm(value, pattern, &PhoneRules::default()),
                expected,
                "{value} {pattern}"
            );
        }
        // Where national numbers vary in length, the country code decides.
        let germany = PhoneRules::new("49", "0");
        for (value, expected) in [
            ("4930123456", "0 30123456"),
            ("33123456789", "+33123456789"),
        ] {
            assert_eq!(
                format_for_crm(value, "0 XXXXXXXX", &germany),
                expected,
                "{value}"
            );
        }
    }
}
