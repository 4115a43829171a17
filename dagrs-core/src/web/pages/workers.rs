//! The workers of the instance's step queue: id, host, pid, claimed steps, last heartbeat.

use chrono::Utc;
use maud::html;

use crate::web::app::{ok, PageResult, State};
use crate::web::page::{self, layout};

/// `GET /workers`.
pub(crate) async fn page(state: State) -> PageResult {
    let app = &*state.0;
    let markup = match app.instance.step_queue() {
        None => html! {
            h1 { "Workers" }
            p.muted {
                "This instance has no step queue: workers run the steps of queued runs on an "
                "instance on PostgreSQL (" code { "PgStorage::instance" } ", "
                code { "worker" } ", " code { "asset materialize --launcher queue" } ")."
            }
        },
        Some(queue) => {
            let workers = queue.workers().await.map_err(|e| app.fail(e))?;
            let now = Utc::now();
            html! {
                h1 { "Workers" }
                p.muted { "Workers claim the steps of queued runs; a worker whose heartbeat stops loses its steps to the others when their leases expire." }
                @if workers.is_empty() { p.muted { "No worker is running." } }
                @else {
                    table #workers {
                        thead { tr { th { "Worker" } th { "Host" } th { "PID" } th { "Claimed steps" } th { "Started" } th { "Last heartbeat" } } }
                        tbody {
                            @for w in &workers {
                                tr data-worker=(w.id) {
                                    td.mono { (w.id) }
                                    td { (w.host) }
                                    td.mono { (w.pid) }
                                    td { (w.claimed) }
                                    td { (page::time(w.started_at)) }
                                    td {
                                        (page::time(w.heartbeat_at))
                                        " " span.muted { ((now - w.heartbeat_at).num_seconds().max(0)) " s ago" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    ok(layout("Workers", "/workers", &app.csrf, markup))
}
