//! Slack (feature `slack`): a resource that posts messages through an incoming webhook or with
//! a bot token (`chat.postMessage`), and a ready-made failure hook — the seed's
//! `SlackResource.send_message` and `slack_notification` hook.

use std::fmt;
use std::time::Duration;

use serde_json::json;

use crate::hook::{Hook, HookContext};
use crate::param::Res;

/// Where messages go. The webhook URL and the token are secrets: never shown.
#[derive(Clone)]
enum Target {
    Webhook {
        url: String,
    },
    Bot {
        token: String,
        channel: String,
        api: String,
    },
}

/// Posts messages to Slack. Its webhook URL and bot token are secrets: `Debug`, errors, logs
/// and events never show them.
///
/// ```no_run
/// # async fn demo() -> Result<(), dagrs_core::SlackError> {
/// use dagrs_core::SlackResource;
/// let slack = SlackResource::webhook("https://hooks.slack.com/services/T000/B000/XXXX");
/// slack.send_message("EcoAnP: influx_data failed").await?;
/// let bot = SlackResource::bot("xoxb-…", "#data-alerts");
/// bot.send_message("EcoAnP: the nightly run succeeded").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SlackResource {
    target: Target,
    timeout: Duration,
}

/// Why a message did not reach Slack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlackError {
    /// Slack could not be reached.
    #[error("cannot reach Slack ({target}): {reason}")]
    Unreachable {
        /// Where the message went, secrets left out.
        target: String,
        /// What failed.
        reason: String,
    },
    /// Slack answered with an error.
    #[error("Slack refused the message ({target}): {reason}")]
    Refused {
        /// Where the message went, secrets left out.
        target: String,
        /// Its answer (HTTP status, or the API's `error`).
        reason: String,
    },
}

/// The default base of Slack's Web API.
pub const SLACK_API: &str = "https://slack.com/api";

impl SlackResource {
    /// Posts to an incoming webhook (`https://hooks.slack.com/services/…`).
    pub fn webhook(url: impl Into<String>) -> Self {
        SlackResource {
            target: Target::Webhook { url: url.into() },
            timeout: Duration::from_secs(10),
        }
    }

    /// Posts to `channel` with a bot token (`xoxb-…`), through `chat.postMessage`.
    pub fn bot(token: impl Into<String>, channel: impl Into<String>) -> Self {
        SlackResource {
            target: Target::Bot {
                token: token.into(),
                channel: channel.into(),
                api: SLACK_API.into(),
            },
            timeout: Duration::from_secs(10),
        }
    }

    /// For a bot: the base URL of the Web API (default [`SLACK_API`]), e.g. a proxy.
    pub fn api_base(mut self, base: impl Into<String>) -> Self {
        if let Target::Bot { api, .. } = &mut self.target {
            *api = base.into().trim_end_matches('/').to_owned();
        }
        self
    }

    /// Gives up on a message after `timeout` (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The resource the environment describes: `SLACK_WEBHOOK_URL`, or `SLACK_BOT_TOKEN`
    /// with `SLACK_CHANNEL` (and `SLACK_API_BASE`); `None` when neither is set.
    pub fn from_env() -> Option<Self> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if let Some(url) = var("SLACK_WEBHOOK_URL") {
            return Some(Self::webhook(url));
        }
        let bot = Self::bot(var("SLACK_BOT_TOKEN")?, var("SLACK_CHANNEL")?);
        Some(match var("SLACK_API_BASE") {
            Some(base) => bot.api_base(base),
            None => bot,
        })
    }

    /// Where messages go, with nothing secret: the webhook's host, or the bot's channel.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Webhook { url } => {
                let host = url
                    .split_once("://")
                    .map_or(url.as_str(), |(_, rest)| rest)
                    .split(['/', '?', '#'])
                    .next()
                    .unwrap_or_default();
                let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
                format!("the incoming webhook at {host}")
            }
            Target::Bot { channel, .. } => format!("channel {channel} (bot token)"),
        }
    }

    /// Posts `text` (Slack's `mrkdwn`), waiting for Slack's answer.
    pub async fn send_message(&self, text: &str) -> Result<(), SlackError> {
        let this = self.clone();
        let text = text.to_owned();
        tokio::task::spawn_blocking(move || this.post(&text))
            .await
            .map_err(|e| SlackError::Unreachable {
                target: self.describe(),
                reason: format!("the sending task failed: {e}"),
            })?
    }

    fn post(&self, text: &str) -> Result<(), SlackError> {
        let target = self.describe();
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(self.timeout))
            .http_status_as_error(false)
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let (request, body) = match &self.target {
            Target::Webhook { url } => (agent.post(url.as_str()), json!({ "text": text })),
            Target::Bot {
                token,
                channel,
                api,
            } => (
                agent
                    .post(format!("{api}/chat.postMessage"))
                    .header("Authorization", format!("Bearer {token}")),
                json!({ "channel": channel, "text": text }),
            ),
        };
        // ureq's errors may quote the URL: whatever it says is masked and path-free.
        let unreachable = |e: ureq::Error| SlackError::Unreachable {
            target: target.clone(),
            reason: without_secrets(&e.to_string(), &self.target),
        };
        let mut response = request
            .header("Content-Type", "application/json; charset=utf-8")
            .send(body.to_string())
            .map_err(unreachable)?;
        let status = response.status();
        let answer = response.body_mut().read_to_string().unwrap_or_default();
        let refused = |reason: String| SlackError::Refused {
            target: target.clone(),
            reason: crate::text::bounded(&without_secrets(&reason, &self.target), 200).into_owned(),
        };
        if !status.is_success() {
            return Err(refused(format!(
                "HTTP {}: {}",
                status.as_u16(),
                answer.trim()
            )));
        }
        if let Target::Bot { .. } = self.target {
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
            if answer["ok"] != json!(true) {
                let error = answer["error"].as_str().unwrap_or("no `ok` in the answer");
                return Err(refused(error.to_owned()));
            }
        }
        Ok(())
    }
}

/// `text` with the webhook URL (or its path) and the token cut out.
fn without_secrets(text: &str, target: &Target) -> String {
    let mut text = crate::text::mask_secrets(text);
    let secrets: Vec<&str> = match target {
        Target::Webhook { url } => {
            let path = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
            let path = path.find('/').map_or("", |at| &path[at..]);
            vec![url.as_str(), path]
        }
        Target::Bot { token, .. } => vec![token.as_str()],
    };
    for secret in secrets.into_iter().filter(|s| s.len() > 1) {
        text = text.replace(secret, "***");
    }
    text
}

impl fmt::Debug for SlackResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackResource")
            .field("target", &self.describe())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A failure hook that posts to the [`SlackResource`] of the definitions: the asset, the run,
/// the attempt and the error — the seed's `slack_notification`.
pub fn slack_on_failure() -> Hook {
    Hook::on_failure(
        "slack_on_failure",
        |ctx: HookContext, slack: Res<SlackResource>| async move {
            let error = ctx.error.map(|e| e.to_string()).unwrap_or_default();
            let job = ctx
                .job
                .map(|job| format!(" (job `{job}`)"))
                .unwrap_or_default();
            let text = format!(
                ":red_circle: asset `{}` failed in run `{}`{job}, attempt {}: {}",
                ctx.asset,
                ctx.run_id,
                ctx.attempt,
                crate::text::bounded(&error, 1000)
            );
            slack.send_message(&text).await?;
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        let hook = SlackResource::webhook("https://hooks.slack.com/services/T0/B0/s3cret");
        let shown = format!("{hook:?} {}", hook.describe());
        assert!(
            shown.contains("hooks.slack.com") && !shown.contains("s3cret"),
            "{shown}"
        );
        let bot = SlackResource::bot("xoxb-s3cret", "#alerts");
        let shown = format!("{bot:?}");
        assert!(
            shown.contains("#alerts") && !shown.contains("s3cret"),
            "{shown}"
        );
        let text = without_secrets(
            "error posting to https://hooks.slack.com/services/T0/B0/s3cret: refused",
            &hook.target,
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
