//! Masking secrets for display: `config check`, logs.

use toml::Value;

use crate::settings::Settings;

pub const MASK: &str = "********";

/// A URL with its password, if any, replaced by the mask.
pub fn url(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else {
        return u.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') {
                format!("{user}:{MASK}")
            } else {
                user.to_owned()
            };
            format!("{scheme}://{masked}@{host}{tail}")
        }
        None => u.to_owned(),
    }
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
