//! The live event log of a run page: server-sent events, read from storage every
//! `UiOptions::poll` (100 ms by default), so an event written by any process reaches an
//! open page within a poll and a render.
//!
//! Messages: `events` (rendered, escaped `<tr>` rows; its id is the last seq, so a browser
//! that reconnects resumes after it), `status` (the run's status when it changes) with
//! `facts` (its facts: end time, failure), `gantt`
//! (the timeline, after step events), and `end` once the run has ended and its log was sent.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query};
use axum::http::HeaderMap;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response, Sse as SseResponse};
use chrono::Utc;
use futures_util::stream;

use super::app::{App, PageError, State};
use super::pages::run::{facts, gantt, log_row, step_events, LogQuery};
use crate::event::{EventKind, RunStatus};
use crate::key::RunId;
use crate::storage::EventFilter;

/// Events sent in one message at most.
const BATCH: usize = 500;

struct Follow {
    app: Arc<App>,
    run_id: RunId,
    filter: EventFilter,
    status: Option<RunStatus>,
    pending: VecDeque<Sse>,
    ended: bool,
    /// Whether the last read saw the run ended: one more read then, for the last events.
    closing: bool,
}

/// `GET /runs/{id}/stream?after=SEQ&level=..&step=..`.
pub(crate) async fn stream(
    state: State,
    Path(id): Path<String>,
    Query(query): Query<LogQuery>,
    headers: HeaderMap,
) -> Response {
    let app = Arc::clone(&state.0);
    let mut filter = match query.filter() {
        Ok(filter) => filter,
        Err(e) => return app.fail(PageError::BadRequest(e)).into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    filter.after = resume.or(query.after);
    let follow = Follow {
        app,
        run_id: RunId::from(id),
        filter,
        status: None,
        pending: VecDeque::new(),
        ended: false,
        closing: false,
    };
    let events = stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(next) = follow.pending.pop_front() {
                return Some((Ok::<_, Infallible>(next), follow));
            }
            if follow.ended {
                return None;
            }
            follow.poll().await;
        }
    });
    SseResponse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl Follow {
    /// Reads what is new (waiting a poll first when nothing was), and queues messages.
    async fn poll(&mut self) {
        let storage = self.app.instance.storage();
        let events = match storage.events_page(&self.run_id, &self.filter, BATCH).await {
            Ok(events) => events,
            Err(e) => return self.fail(&e.to_string()),
        };
        if let Some(last) = events.last() {
            self.filter.after = Some(last.seq);
            let rows: String = events.iter().map(|e| log_row(e).into_string()).collect();
            self.pending.push_back(
                Sse::default()
                    .event("events")
                    .id(last.seq.to_string())
                    .data(rows),
            );
            let steps = events
                .iter()
                .any(|e| !matches!(e.kind, EventKind::Log { .. }));
            if steps {
                if let (Ok(Some(run)), Ok(steps)) = (
                    storage.run(&self.run_id).await,
                    step_events(&self.app, &self.run_id).await,
                ) {
                    let svg = gantt(&run, &steps, Utc::now()).into_string();
                    self.pending
                        .push_back(Sse::default().event("gantt").data(svg));
                }
            }
        }
        let run = match storage.run(&self.run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => return self.fail(&format!("run {} is gone", self.run_id)),
            Err(e) => return self.fail(&e.to_string()),
        };
        if self.status != Some(run.status) {
            self.status = Some(run.status);
            self.pending
                .push_back(Sse::default().event("status").data(run.status.as_str()));
            self.pending.push_back(
                Sse::default()
                    .event("facts")
                    .data(facts(&run).into_string()),
            );
        }
        if run.status.is_final() && events.len() < BATCH {
            if self.closing {
                self.pending
                    .push_back(Sse::default().event("end").data(run.status.as_str()));
                self.ended = true;
            }
            // Read once more: events written just before the run ended.
            self.closing = true;
        }
        if self.pending.is_empty() {
            tokio::time::sleep(self.app.poll).await;
        }
    }

    fn fail(&mut self, message: &str) {
        self.pending.push_back(
            Sse::default()
                .event("failure")
                .data(crate::bounded(message, 400)),
        );
        self.pending
            .push_back(Sse::default().event("end").data("failure"));
        self.ended = true;
    }
}
