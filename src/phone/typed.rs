//! A phone as people type or paste it into a web form, made into what
//! [`super::normalize`] reads (SPEC T-5: one normalisation for every phone
//! that enters the lead pipeline). Copied from a web page, a number
//! carries non-breaking spaces and typographic dashes; typed on a phone
//! keyboard in East Asia, full-width digits; written by a CRM-savvy
//! visitor, `tel:` and an extension. `normalize` takes none of those for
//! a number (the SIP path hands it bare user parts), so such a lead got a
//! deal of its own and the CRM the text unformatted (trial, 2026-12-03).

use super::{normalize, Normalized, PhoneRules};

/// A typed phone, cleaned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Typed {
    /// The number's text with Unicode spaces, dashes and full-width
    /// characters made ASCII, `tel:` and URI parameters and an extension
    /// cut off. Not necessarily a number: `normalize` decides.
    pub number: String,
    /// The extension's digits (`доб. 5`, `ext. 5`, `x5`, `;ext=5`): not
    /// part of the number a client is matched by, but worth telling.
    pub extension: Option<String>,
}

/// Cleans a typed phone (see the module).
pub fn typed_phone(raw: &str) -> Typed {
    let ascii: String = raw.trim().chars().map(ascii_look_alike).collect();
    let text = ascii.trim();
    let text = strip_prefix_ignore_case(text, "tel:").unwrap_or(text);
    // RFC 3966 parameters: `;ext=` is the extension, the rest (e.g.
    // `phone-context`) says nothing a lead needs.
    let (text, params) = text.split_once(';').unwrap_or((text, ""));
    let uri_extension = params
        .split(';')
        .find_map(|p| strip_prefix_ignore_case(p.trim(), "ext="))
        .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()));
    let (number, extension) = match uri_extension {
        Some(e) => (text.trim(), Some(e)),
        None => split_extension(text.trim()),
    };
    Typed {
        number: number.to_string(),
        extension: extension.map(str::to_string),
    }
}

/// The ASCII character a typed one stands for in a phone number.
fn ascii_look_alike(c: char) -> char {
    match c {
        // Full-width digits and signs (U+FF10 … U+FF19, ＋ （ ） － ．).
        '\u{FF10}'..='\u{FF19}' => char::from(b'0' + (c as u32 - 0xFF10) as u8),
        '\u{FF0B}' => '+',
        '\u{FF08}' => '(',
        '\u{FF09}' => ')',
        '\u{FF0D}' => '-',
        '\u{FF0E}' => '.',
        // Hyphens and dashes (‐ ‑ ‒ – — ―), minus signs (− ﹣).
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE63}' => '-',
        // No-break, thin, figure, ideographic … spaces; tabs.
        c if c.is_whitespace() => ' ',
        // Zero-width characters web pages put inside numbers.
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => ' ',
        c => c,
    }
}

/// Markers of an extension after a number, longest first (compared
/// without case).
const EXTENSION_MARKERS: &[&str] = &["добавочный", "доб", "extension", "ext", "x", "#"];

/// The number and its extension when `text` ends with a marker and the
/// extension's digits (`… доб. 5`, `… (ext. 12)`, `…x5`); else `text`
/// alone. The part before must hold a digit and must not end in a letter
/// glued to the marker ("box 5" is no extension).
fn split_extension(text: &str) -> (&str, Option<&str>) {
    let body = text.strip_suffix(')').map(str::trim_end).unwrap_or(text);
    let head = body.trim_end_matches(|c: char| c.is_ascii_digit());
    let extension = &body[head.len()..];
    if extension.is_empty() {
        return (text, None);
    }
    let before = head.trim_end_matches([' ', '.', ':', '=', '-']);
    for marker in EXTENSION_MARKERS {
        let Some(number) = strip_suffix_ignore_case(before, marker) else {
            continue;
        };
        if number.chars().next_back().is_some_and(char::is_alphabetic) {
            continue;
        }
        let number = number.trim_end();
        // "(доб. 5)": the opening parenthesis goes with the marker.
        let number = match text.ends_with(')') {
            true => match number.strip_suffix('(') {
                Some(n) => n.trim_end(),
                None => continue,
            },
            false => number,
        };
        if number.bytes().any(|b| b.is_ascii_digit()) {
            return (number, Some(extension));
        }
    }
    (text, None)
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// `s` without `suffix` at its end, letters compared without case
/// (Cyrillic too).
fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let mut chars = s.char_indices().rev();
    let mut cut = s.len();
    for want in suffix.chars().rev() {
        let (i, got) = chars.next()?;
        if !got.to_lowercase().eq(want.to_lowercase()) {
            return None;
        }
        cut = i;
    }
    s.get(..cut)
}

/// What a form's phone field makes of a lead.
#[derive(Debug, PartialEq, Eq)]
pub struct FormPhone {
    /// Normalised (SPEC T-5), or empty: never the field as typed, which
    /// no other lead of the client would match and no CRM could dial.
    pub phone: String,
    pub extension: Option<String>,
    /// The field said more than the number (`тел. 8916…`, a name after
    /// it, a second number) or no number at all (`не звонить`): the
    /// lead's text keeps it, so nothing typed is lost.
    pub as_typed: bool,
}

/// The form's phone field as typed or pasted (no-break spaces, dashes,
/// `tel:`, an extension): the number normalised, else the first number
/// written in it (trial, 2026-12-03: `тел. 89164000018` was stored and
/// sent to the CRMs as it came, amoCRM got a contact without a phone, and
/// the client's call made a second deal).
pub fn form_phone(raw: &str, rules: &PhoneRules) -> FormPhone {
    if raw.is_empty() {
        return FormPhone {
            phone: String::new(),
            extension: None,
            as_typed: false,
        };
    }
    let typed = typed_phone(raw);
    // T-5 keeps short digit strings (a PBX's extensions); a client typing
    // `12` into a form has given no number to call back.
    let dialable = |n: &str| match normalize(n, rules) {
        Normalized::Number(digits) if digits.len() >= MIN_FORM_PHONE_DIGITS => Some(digits),
        _ => None,
    };
    if let Some(digits) = dialable(&typed.number) {
        return FormPhone {
            phone: digits,
            extension: typed.extension,
            as_typed: false,
        };
    }
    let found = number_in(&typed.number).and_then(dialable);
    FormPhone {
        phone: found.unwrap_or_default(),
        extension: typed.extension,
        as_typed: true,
    }
}

/// The fewest digits a form's phone has (a subscriber number without its
/// area code has six or seven): fewer is no number a manager calls back.
const MIN_FORM_PHONE_DIGITS: usize = 7;

/// The first number written in `text`: a run of digits and phone
/// formatting (`+ - ( ) .` and spaces) with at least
/// [`MIN_FORM_PHONE_DIGITS`] digits, its ends trimmed to a digit, a
/// leading `+` or `(`, or a closing `)`.
fn number_in(text: &str) -> Option<&str> {
    let formatting = |c: char| c.is_ascii_digit() || matches!(c, ' ' | '+' | '-' | '(' | ')' | '.');
    text.split(|c: char| !formatting(c))
        .map(|run| {
            run.trim_start_matches(|c: char| !(c.is_ascii_digit() || c == '+' || c == '('))
                .trim_end_matches(|c: char| !(c.is_ascii_digit() || c == ')'))
        })
        .find(|run| run.bytes().filter(u8::is_ascii_digit).count() >= MIN_FORM_PHONE_DIGITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_number_written_in_a_text() {
        // (text, number found)
        let table = [
            ("тел. 89164000018", Some("89164000018")),
            (
                "Ivan +7 (916) 400-00-18, or 8 916 400 00 19",
                Some("+7 (916) 400-00-18"),
            ),
            ("(495) 111-22-33 office", Some("(495) 111-22-33")),
            ("call 12-34 or 555", None),
            ("не звонить", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(number_in(text), want, "{text:?}");
        }
    }

    #[test]
    fn typed_phones_table() {
        // raw, number, extension
        let table: &[(&str, &str, Option<&str>)] = &[
            ("+7 926 000-11-22", "+7 926 000-11-22", None),
            ("+7\u{a0}926\u{a0}000-11-22", "+7 926 000-11-22", None),
            ("+7 926 000\u{2013}11\u{2013}22", "+7 926 000-11-22", None),
            (
                "+7\u{202f}926\u{2009}000\u{2014}11\u{2212}22",
                "+7 926 000-11-22",
                None,
            ),
            ("８９２６０００１１２２", "89260001122", None),
            ("＋７（９２６）０００－１１－２２", "+7(926)000-11-22", None),
            ("\u{feff}8926\u{200b}0001122", "8926 0001122", None),
            ("tel:+79260001122", "+79260001122", None),
            ("TEL:+7-926-000-11-22", "+7-926-000-11-22", None),
            ("+79260001122;ext=5", "+79260001122", Some("5")),
            (
                "tel:+79260001122;phone-context=example.ru",
                "+79260001122",
                None,
            ),
            ("+7 926 000-11-22 доб. 5", "+7 926 000-11-22", Some("5")),
            ("+7 926 000-11-22 ДОБ 123", "+7 926 000-11-22", Some("123")),
            (
                "8 (495) 123-45-67 (доб. 12)",
                "8 (495) 123-45-67",
                Some("12"),
            ),
            ("8 495 123 45 67 добавочный 4", "8 495 123 45 67", Some("4")),
            ("+1 212 555 0100 ext. 7", "+1 212 555 0100", Some("7")),
            ("+1 212 555 0100 Ext:7", "+1 212 555 0100", Some("7")),
            ("+1 212 555 0100 x7", "+1 212 555 0100", Some("7")),
            ("+1 212 555 0100#7", "+1 212 555 0100", Some("7")),
            // No extension: no marker, or nothing before it that is a
            // number, or a word that merely ends like one.
            ("8 495 123 45 67", "8 495 123 45 67", None),
            ("box 5", "box 5", None),
            ("ext. 5", "ext. 5", None),
            ("fax 84951234567", "fax 84951234567", None),
            ("  89260001122  ", "89260001122", None),
            ("", "", None),
            ("anonymous", "anonymous", None),
        ];
        for &(raw, number, extension) in table {
            let got = typed_phone(raw);
            assert_eq!(got.number, number, "{raw:?}");
            assert_eq!(got.extension.as_deref(), extension, "{raw:?}");
        }
    }
}
