//! The console's page, style sheet and script, embedded in the binary (no network, no
//! build step): plain HTML, CSS and JavaScript in `assets/`.

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const CONSOLE_CSS: &str = include_str!("assets/console.css");
pub const CONSOLE_JS: &str = include_str!("assets/console.js");
pub const FAVICON_SVG: &str = include_str!("assets/favicon.svg");

/// The Content-Security-Policy of every answer: only this origin's script, style and
/// fetches; no inline script or style, no frames, no forms posted elsewhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
