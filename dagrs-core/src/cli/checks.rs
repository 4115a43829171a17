//! `asset checks` and `asset automation`: what an asset's checks found, and why automation
//! requested it or not.

use std::process::ExitCode;

use super::show::{self, say, TIME};
use crate::definitions::Definitions;
use crate::error::Error;
use crate::instance::Instance;

/// `asset checks NAME`: each check with its latest result, then the latest evaluations.
pub(super) async fn checks(
    defs: &Definitions,
    instance: &Instance,
    asset: &str,
    limit: usize,
    json: bool,
) -> Result<ExitCode, Error> {
    let records = instance.check_records(defs, asset, limit).await?;
    if json {
        show::print_json(&records);
        return Ok(ExitCode::SUCCESS);
    }
    let checks = crate::check::summaries(defs.checks_of(asset), &records);
    if checks.is_empty() {
        say!("{asset} has no checks; add one with `#[asset_check(asset = {asset})]`");
        return Ok(ExitCode::SUCCESS);
    }
    show::rows(
        &["CHECK", "BLOCKING", "LATEST", "WHEN", "RUN", "DESCRIPTION"],
        checks.iter().map(|check| {
            let latest = check.latest;
            vec![
                check.name.to_owned(),
                check.blocking_text().to_owned(),
                latest.map_or("never run".into(), verdict),
                latest.map_or("-".into(), |r| r.timestamp.format(TIME).to_string()),
                latest.map_or("-".into(), |r| r.run_id.to_string()),
                latest
                    .and_then(|r| r.description.clone())
                    .or_else(|| {
                        let spec = check.spec?;
                        spec.description_text().map(first_sentence)
                    })
                    .unwrap_or_default(),
            ]
        }),
    );
    if records.len() > 1 {
        say!("");
        say!("latest evaluations:");
        show::rows(
            &["WHEN", "CHECK", "RESULT", "RUN", "METADATA"],
            records.iter().map(|r| {
                vec![
                    r.timestamp.format(TIME).to_string(),
                    r.check.clone(),
                    verdict(r),
                    r.run_id.to_string(),
                    r.metadata
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The first sentence of a doc comment: what a table has room for.
fn first_sentence(text: &str) -> String {
    let text = text.replace('\n', " ");
    match text.find(". ") {
        Some(end) => text[..=end].to_owned(),
        None => text,
    }
}

fn verdict(record: &crate::storage::CheckRecord) -> String {
    if record.passed {
        "passed".into()
    } else {
        format!("failed ({})", record.severity)
    }
}

/// `asset automation NAME`: the asset's condition and the daemon's latest evaluations.
pub(super) async fn automation(
    defs: &Definitions,
    instance: &Instance,
    asset: &str,
    limit: usize,
    json: bool,
) -> Result<ExitCode, Error> {
    let records = instance.automation_records(defs, asset, limit).await?;
    let condition = defs
        .asset(asset)
        .and_then(|spec| spec.automation_condition())
        .map(ToString::to_string);
    if json {
        show::print_json(&serde_json::json!({
            "asset": asset,
            "condition": condition,
            "evaluations": records,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    match &condition {
        Some(condition) => say!("{asset}: automation condition {condition}"),
        None => say!(
            "{asset} has no automation condition; add one with `#[asset(automation = eager())]`"
        ),
    }
    if records.is_empty() {
        say!("no evaluation recorded yet (the daemon records them: `daemon`, or `dev`)");
        return Ok(ExitCode::SUCCESS);
    }
    show::rows(
        &["EVALUATED", "RESULT", "RUNS", "REASON"],
        records.iter().map(|r| {
            vec![
                r.evaluated_at.format(TIME).to_string(),
                if r.requested { "requested" } else { "skipped" }.to_owned(),
                r.run_ids
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
                r.reason.clone(),
            ]
        }),
    );
    Ok(ExitCode::SUCCESS)
}
