//! Who may use the UI, and protection of state-changing requests against other sites.
//!
//! One middleware, [`guard`], in front of every route:
//! - with a token, a request must carry it (all but the script and the style sheet): `Authorization: Bearer <token>`, or the cookie
//!   [`COOKIE`], which opening any page with `?token=<token>` sets (`HttpOnly`,
//!   `SameSite=Strict`) before redirecting to the page without the token in its address;
//! - a `POST` must not come from another site (`Sec-Fetch-Site` other than `same-origin` or
//!   `none`, or an `Origin` whose host is not the `Host` asked for) and must carry the form
//!   field `csrf` equal to the router's secret; any other method than `GET`, `HEAD` and
//!   `POST` is refused;
//! - every response gets a content security policy without inline script, and is not to be
//!   framed or sniffed.

use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;

use super::app::App;
use super::page;

/// The cookie that carries the token after `?token=` was given once.
pub const COOKIE: &str = "dagrs_ui_token";

/// The largest form the UI accepts (run config included).
pub(crate) const MAX_FORM_BYTES: usize = 1 << 20;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The middleware: authentication, cross-site checks, security headers.
pub(crate) async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let mut response = match check(&app, request).await {
        Ok(request) => next.run(request).await,
        Err(response) => *response,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A request let through, or the response that refuses it (boxed: a response is large).
type Checked = Result<Request, Box<Response>>;

async fn check(app: &App, request: Request) -> Checked {
    // The script and the style sheet hold nothing secret, and the sign-in page uses them.
    let public = request.uri().path().starts_with("/static/");
    if let (Some(token), false) = (&app.token, public) {
        if let Some(response) = authenticate(token, &request) {
            return Err(Box::new(response));
        }
    }
    match *request.method() {
        Method::GET | Method::HEAD => Ok(request),
        Method::POST => check_post(app, request).await,
        _ => Err(Box::new(
            (StatusCode::METHOD_NOT_ALLOWED, "only GET and POST").into_response(),
        )),
    }
}

/// `None` when the request carries the token; else the response: a redirect that sets the
/// cookie (for `?token=` with the right token), or 401 with a form to give the token.
fn authenticate(token: &str, request: &Request) -> Option<Response> {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|b| same(b, token))
        || cookie(headers, COOKIE).is_some_and(|c| same(c, token))
    {
        return None;
    }
    let uri = request.uri();
    let given = uri.query().and_then(|q| query_value(q, "token"));
    if given.as_deref().is_some_and(|g| same(g, token)) && request.method() == Method::GET {
        let rest: Vec<&str> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.starts_with("token=") && !pair.is_empty())
            .collect();
        let target = if rest.is_empty() {
            uri.path().to_owned()
        } else {
            format!("{}?{}", uri.path(), rest.join("&"))
        };
        let mut response = Redirect::to(&target).into_response();
        let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        return Some(response);
    }
    let body = page::bare(
        "Sign in",
        html! {
            h1 { "This dagrs UI needs its token" }
            @if given.is_some() { p.error { "That token is not the right one." } }
            p { "The token was given to " code { "ui --token" } " (or " code { "DAGRS_UI_TOKEN" } ")." }
            form method="get" action=(uri.path()) {
                input type="password" name="token" placeholder="token" autofocus;
                button type="submit" { "Open" }
            }
        },
    );
    Some((StatusCode::UNAUTHORIZED, Html(body.into_string())).into_response())
}

/// Checks a `POST`: same site, and the CSRF secret in its form; gives the request back with
/// its body read.
async fn check_post(app: &App, request: Request) -> Checked {
    let forbidden = |why: &str| {
        let body = page::bare(
            "Forbidden",
            html! { h1 { "Refused" } p.error { (why) } p { a href="/" { "Back to the UI" } } },
        );
        Err(Box::new(
            (StatusCode::FORBIDDEN, Html(body.into_string())).into_response(),
        ))
    };
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return forbidden("a request from another site cannot change anything here");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://"))
            .map(|(_, rest)| rest);
        if host.is_none() || origin_host != host {
            return forbidden("a request from another origin cannot change anything here");
        }
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_FORM_BYTES).await else {
        return forbidden("the form is larger than 1 MiB");
    };
    let given = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| query_value(text, "csrf"));
    if !given.is_some_and(|g| same(&g, &app.csrf)) {
        return forbidden(
            "the form lacks this page's security token (csrf); reload the page and try again",
        );
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// The value of cookie `name`, if sent.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The decoded value of `name` in an `application/x-www-form-urlencoded` text.
fn query_value(text: &str, name: &str) -> Option<String> {
    text.split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(v))
}

/// Percent-decodes a form component (`+` is a space); bad escapes stay as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && text.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                    Ok(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares secrets in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_decode_and_secrets_compare() {
        assert_eq!(
            query_value("a=1&csrf=x%2By+z&b=2", "csrf").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_value("a=1", "csrf"), None);
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab"));
    }
}
