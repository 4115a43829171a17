//! The seed's schedules (hourly and at 02:00 on the whole pipeline) and its Slack alert on
//! failure, when `SLACK_WEBHOOK_URL` (or `SLACK_BOT_TOKEN` and `SLACK_CHANNEL`) is set.

use dagrs_core::{slack_on_failure, AssetJob, DefinitionsBuilder, Schedule, SlackResource};

/// Adds the job `ecoanp_pipeline` (every asset), the seed's schedules `ecoanp_hourly` and
/// `ecoanp_daily` (running), a stopped `ecoanp_every_minute` to try the daemon with — each
/// filling the hour that just closed — and the Slack failure hook when Slack is configured.
pub fn automation(defs: DefinitionsBuilder) -> DefinitionsBuilder {
    let job = "ecoanp_pipeline";
    // Each tick fills the hour that just closed.
    let schedule = |name, cron, text| {
        Schedule::new(name, job, cron)
            .description(text)
            .last_partition()
    };
    let defs = defs
        .job(AssetJob::new(job, "*").description("the whole EcoAnP pipeline"))
        .schedule(schedule("ecoanp_hourly", "0 * * * *", "EcoAnP, hourly").running())
        .schedule(schedule("ecoanp_daily", "0 2 * * *", "EcoAnP, daily at 02:00").running())
        .schedule(schedule(
            "ecoanp_every_minute",
            "* * * * *",
            "for trying the daemon",
        ));
    match SlackResource::from_env() {
        Some(slack) => defs.resource(slack).hook(slack_on_failure()),
        None => defs,
    }
}
