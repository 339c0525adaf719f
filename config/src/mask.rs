//! Masking secrets for display: `config check`, logs.

use toml::Value;

use crate::settings::Settings;

pub const MASK: &str = "********";

/// Whether a settings key names a secret: a segment that mentions a secret, a password or
/// credentials, or that is a token or a key (`admin.token`, `brokers.zerodha.kite.api_secret`,
/// `…kite.api_key`), but not an instrument token.
pub fn looks_secret(key: &str) -> bool {
    key.to_ascii_lowercase().split(['.', '[', ']']).any(|seg| {
        ["secret", "pass", "pwd", "cred", "auth"]
            .iter()
            .any(|w| seg.contains(w))
            || ((seg.ends_with("token") || seg.ends_with("key")) && !seg.contains("instrument"))
    })
}

/// A URL with its password, if any, replaced by the mask. The user information ends at the
/// last `@`, so a password may contain `/`, `:` or `@` and is still masked whole.
pub fn url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{MASK}@{host}"),
            None if userinfo.contains('/') => format!("{scheme}://{MASK}@{host}"),
            None => u.to_owned(),
        },
        None => u.to_owned(),
    }
}

/// `text` with the password of every URL in it masked (a URL runs from its scheme to the
/// next white space or quote).
pub fn urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains("://") {
            out.push_str(&url(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '`') {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The effective settings as TOML, with tokens, secrets and URL passwords masked.
pub fn effective_toml(s: &Settings) -> String {
    let mut s = s.clone();
    if s.admin.token.is_some() {
        s.admin.token = Some(MASK.to_owned());
    }
    for b in s.brokers.values_mut() {
        for secret in [&mut b.kite.api_secret, &mut b.kite.access_token] {
            if secret.is_some() {
                *secret = Some(MASK.to_owned());
            }
        }
    }
    s.redis.url = s.redis.url.as_deref().map(url);
    s.database.url = s.database.url.as_deref().map(url);
    match Value::try_from(&s)
        .and_then(|v| toml::to_string_pretty(&v).map_err(serde::ser::Error::custom))
    {
        Ok(text) => text,
        Err(e) => format!("# settings could not be shown as TOML: {e}\n"),
    }
}
