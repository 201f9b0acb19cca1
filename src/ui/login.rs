//! `/ui/login`: the sign-in form (a user and a password, or the API token
//! with the user left empty), and the rule that checks what was typed.

use super::{esc, Texts};
use crate::config::UiUser;
use crate::ui::session::same_secret;

/// Who signs in with `user` / `password`: `token` for the API token
/// (user left empty), the user's name when an argon2 hash matches, None
/// otherwise.
pub fn check(users: &[UiUser], token: Option<&str>, user: &str, password: &str) -> Option<String> {
    let user = user.trim();
    if password.is_empty() {
        return None;
    }
    if user.is_empty() {
        return token
            .filter(|t| same_secret(t, password))
            .map(|_| "token".to_string());
    }
    use argon2::PasswordVerifier as _;
    let Some(u) = users.iter().find(|u| u.name == user) else {
        // As long as a wrong password of a real user takes: an unknown
        // name answered in 1.5 ms against 95 ms, so names could be
        // listed by timing (trial, 2026-12-02).
        if let Ok(hash) = argon2::PasswordHash::new(&UNKNOWN_USER_HASH) {
            let _ = argon2::Argon2::default().verify_password(password.as_bytes(), &hash);
        }
        return None;
    };
    let hash = argon2::PasswordHash::new(&u.password_hash).ok()?;
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .ok()
        .map(|_| u.name.clone())
}

/// What an unknown user's password is checked against: a hash with the
/// default parameters (those `hash-password` writes), made once.
static UNKNOWN_USER_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    hash_password("no such user", b"siptrack-unknown").unwrap_or_default()
});

/// A PHC argon2id hash of `password` with `salt` (16 random bytes from
/// the caller): what `siptrack hash-password` prints.
pub fn hash_password(password: &str, salt: &[u8]) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    let salt = argon2::password_hash::SaltString::encode_b64(salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of `password` with a fresh salt from the kernel's CSPRNG.
pub fn new_password_hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut salt))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    hash_password(password, &salt)
}

/// The form; `failed` after a wrong password; `next` the page to return to.
pub fn page(t: &Texts, failed: bool, next: &str) -> String {
    let error = if failed {
        format!(
            "<p class=\"err\" id=\"login-error\">{}</p>",
            esc(t.bad_sign_in)
        )
    } else {
        String::new()
    };
    format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><title>{title} · siptrack</title>\
         <link rel=\"stylesheet\" href=\"/ui/app.css\"></head><body class=\"login\"><main>\
         <h1>siptrack</h1>{error}<form method=\"post\" action=\"/ui/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <label>{user}<br><input name=\"user\" id=\"user\" autocomplete=\"username\" placeholder=\"{hint}\"></label>\
         <label>{password}<br><input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label>\
         <button id=\"sign-in\">{title}</button></form></main></body></html>",
        lang = t.lang,
        title = esc(t.sign_in),
        user = esc(t.user),
        hint = esc(t.user_hint),
        password = esc(t.password),
        next = esc(next),
    )
}

/// Where to go after signing in: a console path only (no other site),
/// in printable ASCII (it becomes a Location header; the console's own
/// links are percent-encoded).
pub fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui/")
        && !next.starts_with("/ui//")
        && !next.contains('\\')
        && next.bytes().all(|b| b.is_ascii_graphic())
    {
        next
    } else {
        "/ui/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_table() {
        let hash = hash_password("s3cret", b"0123456789abcdef").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        crate::config::check_password_hash(&hash).expect("accepted by the config check");
        let users = vec![UiUser {
            name: "anna".into(),
            password_hash: hash,
        }];
        for (user, password, who) in [
            ("anna", "s3cret", Some("anna")),
            (" anna ", "s3cret", Some("anna")),
            ("anna", "s3cret ", None),
            ("anna", "", None),
            ("boris", "s3cret", None),
            ("", "api-token", Some("token")),
            ("", "api-tokem", None),
            ("", "", None),
            ("anna", "api-token", None),
        ] {
            assert_eq!(
                check(&users, Some("api-token"), user, password).as_deref(),
                who,
                "{user}/{password}"
            );
        }
        assert_eq!(
            check(&users, None, "", "api-token"),
            None,
            "no token: no token sign-in"
        );
    }

    /// An unknown name is checked against a hash made as real ones are
    /// (algorithm and cost parameters), so it takes as long as a wrong
    /// password of a real user.
    #[test]
    fn an_unknown_user_costs_a_real_password_check() {
        let real = hash_password("s3cret", b"0123456789abcdef").expect("hash");
        let params = |h: &str| {
            let p = argon2::PasswordHash::new(h).expect("a PHC string");
            (p.algorithm.to_string(), p.version, p.params.to_string())
        };
        assert_eq!(params(&UNKNOWN_USER_HASH), params(&real));
    }

    #[test]
    fn next_stays_in_the_console() {
        for (next, go) in [
            ("/ui/leads?type=call", "/ui/leads?type=call"),
            ("https://evil.example/", "/ui/"),
            ("//evil.example/ui/", "/ui/"),
            ("/ui//evil.example", "/ui/"),
            ("/api/v1/leads", "/ui/"),
            ("", "/ui/"),
            ("/ui/\r\nSet-Cookie: a=b", "/ui/"),
            ("/ui/leads?q=Иван", "/ui/"),
            ("/ui/ladder?call=1-2%40h", "/ui/ladder?call=1-2%40h"),
        ] {
            assert_eq!(safe_next(next), go, "{next}");
        }
    }
}
