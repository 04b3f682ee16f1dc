//! The relay (`RELAY_*`), the projectors (`PROJECTOR_*`), the mailer (`SMTP_URL`,
//! `MAIL_FROM`), the assistant (`LLM_*`, `ASSISTANT_*`), plans (`PLANS`, `PLANS_FILE`) and
//! meters (`METER_SNAPSHOT_EVERY`).

use aggregates::plan::Plans;
use anyhow::bail;
use api::state::ApiConfig;
use workers::mailer::MailerConfig;
use workers::projector::ProjectorConfig;
use workers::relay::RelayConfig;

use super::web::HttpSettings;
use super::{Env, Vars};

pub(super) fn relay<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> anyhow::Result<RelayConfig> {
    Ok(RelayConfig {
        batch_size: v.positive("RELAY_BATCH_SIZE", 500)? as i64,
        poll_interval: v.millis("RELAY_POLL_INTERVAL_MS", 500)?,
        ack_timeout: v.millis("RELAY_ACK_TIMEOUT_MS", 1000)?,
        ..RelayConfig::default()
    })
}

pub(super) fn projector<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> anyhow::Result<ProjectorConfig> {
    Ok(ProjectorConfig {
        batch_size: v.positive("PROJECTOR_BATCH_SIZE", 200)? as usize,
        max_attempts: v.positive("PROJECTOR_MAX_ATTEMPTS", 5)? as u32,
        ..ProjectorConfig::default()
    })
}

/// The mailer's settings; its links point at the API (`PUBLIC_URL`) and the front end
/// (`FRONTEND_URL`), as the API's own pages do.
pub(super) fn mailer<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
    env: &mut Env,
    http: &HttpSettings,
    api: &ApiConfig,
) -> anyhow::Result<MailerConfig> {
    let smtp_url = v.get("SMTP_URL");
    if let Some(u) = &smtp_url {
        if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
            bail!("SMTP_URL is invalid: use smtp://[user:pass@]host[:port] or smtps://...");
        }
        // Mails carry sign-in links and codes (and the URL may carry the SMTP password):
        // production sends them over TLS only, unless the relay is one of the
        // deployment's own (a sidecar on loopback) and the opt-in says so.
        if env.production() && !smtp_tls_required(u) {
            if !v.flag("ALLOW_INSECURE_SMTP", false)? {
                bail!("SMTP_URL must use TLS in production: smtps://... or smtp://...?tls=required (set ALLOW_INSECURE_SMTP=true only for a relay of your own on a trusted network)");
            }
            env.warn(
                "SMTP_URL does not require TLS: mails may travel in the clear (ALLOW_INSECURE_SMTP=true)",
            );
        }
    } else if env.production() {
        bail!("SMTP_URL is required in production");
    }
    Ok(MailerConfig {
        smtp_url,
        from: v.string("MAIL_FROM", "Chronicle <no-reply@chronicle.local>"),
        public_url: http.public_url.clone(),
        frontend_url: api.frontend_url.clone(),
        data_dir: env.data_dir.clone(),
    })
}

/// The assistant: on when its model is configured.
#[derive(Debug, Clone)]
pub struct AssistantSettings {
    /// The model (`LLM_BASE_URL`, `LLM_API_KEY`, `LLM_MODEL`, `LLM_TIMEOUT_SECS`); None
    /// when the base URL and key are unset: the assistant is off.
    pub llm: Option<llm::LlmConfig>,
    /// Deliveries of a user message before a transient model failure is final.
    pub max_attempts: u32,
}

pub(super) fn assistant<F: Fn(&str) -> Option<String>>(
    v: &Vars<F>,
) -> anyhow::Result<AssistantSettings> {
    let timeout = v.secs("LLM_TIMEOUT_SECS", 30)?;
    let llm = match (
        v.get("LLM_BASE_URL").map(|u| u.trim_end_matches('/').to_owned()),
        v.get("LLM_API_KEY"),
    ) {
        (None, None) => None,
        (Some(base_url), Some(key)) => {
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                bail!("LLM_BASE_URL={base_url:?} is invalid: use an OpenAI-compatible base URL such as https://api.openai.com/v1");
            }
            Some(llm::LlmConfig {
                base_url,
                api_key: llm::ApiKey::new(key),
                model: v.string("LLM_MODEL", "gpt-4o-mini"),
                timeout,
            })
        }
        (Some(_), None) => bail!("LLM_API_KEY is missing: LLM_BASE_URL and LLM_API_KEY go together (set both to enable the assistant, or neither)"),
        (None, Some(_)) => bail!("LLM_BASE_URL is missing: LLM_BASE_URL and LLM_API_KEY go together (set both to enable the assistant, or neither)"),
    };
    Ok(AssistantSettings {
        llm,
        max_attempts: v.positive("ASSISTANT_MAX_ATTEMPTS", 3)? as u32,
    })
}

/// Plans and meters: what the API, the CLI and the assistant charge against.
#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// Plans and their daily limits, from `PLANS` (JSON) or the file `PLANS_FILE`
    /// (default: the repository's `plans.json`, built into the binary).
    pub plans: Plans,
    /// Meters (a user's day of usage) are snapshotted every this many events.
    pub meter_snapshot_every: u64,
}

pub(super) fn usage<F: Fn(&str) -> Option<String>>(v: &Vars<F>) -> anyhow::Result<UsageSettings> {
    let plans = match (v.get("PLANS"), v.get("PLANS_FILE")) {
        (Some(json), _) => {
            Plans::parse(&json).map_err(|e| anyhow::anyhow!("PLANS is invalid: {e}"))?
        }
        // An explicit file that cannot be read is a mistake to report, never a reason to
        // fall back to the built-in plans.
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!("PLANS_FILE={path}: cannot read it ({e}); set PLANS_FILE or PLANS")
            })?;
            Plans::parse(&text).map_err(|e| anyhow::anyhow!("PLANS_FILE={path} is invalid: {e}"))?
        }
        (None, None) => Plans::parse(DEFAULT_PLANS)
            .map_err(|e| anyhow::anyhow!("the built-in plans.json is invalid: {e}"))?,
    };
    Ok(UsageSettings {
        plans,
        meter_snapshot_every: v.positive("METER_SNAPSHOT_EVERY", 100)?,
    })
}

/// The plans used when neither `PLANS` nor `PLANS_FILE` is set, built in so that the binary
/// runs from any directory.
pub(super) const DEFAULT_PLANS: &str = include_str!("../../plans.json");

/// Whether an `SMTP_URL` can only be used over TLS (implicit TLS, or STARTTLS required);
/// the forms are those of `workers::mailer::transport`.
fn smtp_tls_required(url: &str) -> bool {
    if url.starts_with("smtps://") {
        return true;
    }
    url.split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|p| p == "tls=required"))
}
