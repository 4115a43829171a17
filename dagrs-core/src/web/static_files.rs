//! The script and the style sheet, compiled into the binary (no build step, works offline).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The UI's script: live run pages (server-sent events), the lineage graph's selection,
/// zoom and live colours. Plain JavaScript, no dependencies.
pub(crate) const SCRIPT: &str = include_str!("static/dagrs.js");
/// The UI's style sheet.
pub(crate) const STYLE: &str = include_str!("static/dagrs.css");

/// `GET /static/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "dagrs.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "dagrs.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}
