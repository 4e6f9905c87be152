//! Comm100's REST API (v4): authentication, `siteId`, retries, and staying within its rate
//! limit (300 calls per 5 minutes; a 429 waits for its `Retry-After`). Shapes and ids:
//! Comm100's developer documentation, as summarized in docs/comm100-setup.md.

pub mod webhooks;

use std::collections::VecDeque;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::{self, JsonClient, Reply, SetupError};
use crate::config::Comm100Config;

/// Calls Comm100 allows per client address in [`RATE_PERIOD`].
pub const RATE_LIMIT: usize = 300;
/// The period of [`RATE_LIMIT`].
pub const RATE_PERIOD: Duration = Duration::from_secs(300);
/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of one call that meets 429 or a 5xx.
const ATTEMPTS: u32 = 6;
/// Attempts of one call that gets no answer (a wrong base URL should not take minutes).
const UNANSWERED_ATTEMPTS: u32 = 3;
/// The longest wait before another attempt.
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Why a call to Comm100 failed; each says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0} is not set: {1}")]
    Missing(&'static str, &'static str),
    #[error("comm100.api_base {0}")]
    Setup(SetupError),
    #[error(
        "cannot reach Comm100's API at {base}: {reason}; check comm100.api_base (your \
         platform's apiNN.comm100.io/v4)"
    )]
    Unreachable { base: String, reason: String },
    #[error(
        "Comm100 refused the credentials ({status}) for {what}: check comm100.api_email and \
         comm100.api_key (or comm100.api_token), and that the agent has the Manage \
         Integration permission"
    )]
    Unauthorized { status: StatusCode, what: String },
    #[error(
        "Comm100 answered {status} to {what}: {message}; check comm100.site_id and \
         comm100.api_base"
    )]
    NotFound {
        status: StatusCode,
        what: String,
        message: String,
    },
    #[error("Comm100 answered {status} to {what}: {message}")]
    Refused {
        status: StatusCode,
        what: String,
        message: String,
    },
    #[error("Comm100's answer to {what} is not what its documentation shows: {detail}")]
    Malformed { what: String, detail: String },
}

/// A client of one Comm100 site's API.
pub struct Api {
    client: JsonClient,
    site_id: Option<u64>,
    pace: Pace,
    backoff: Duration,
}

impl Api {
    /// The client `config` describes; names the setting that is missing.
    pub fn from_config(config: &Comm100Config) -> Result<Self, ApiError> {
        let base = config.api_base.as_deref().ok_or(ApiError::Missing(
            "comm100.api_base",
            "your platform's API, e.g. https://api15.comm100.io/v4 for dash15.comm100.io",
        ))?;
        let authorization = match (&config.api_email, &config.api_key, &config.api_token) {
            (Some(email), Some(key), _) => {
                if config.site_id.is_none() {
                    return Err(ApiError::Missing(
                        "comm100.site_id",
                        "HTTP Basic calls name the site (the id in your control panel's URL)",
                    ));
                }
                client::basic(email, key.expose())
            }
            (_, _, Some(token)) => client::bearer(token.expose()),
            _ => {
                return Err(ApiError::Missing(
                    "comm100.api_key",
                    "set comm100.api_email with comm100.api_key (or api_key_file), or \
                     comm100.api_token",
                ))
            }
        };
        let client = JsonClient::new(base, None, Some(authorization), "application/json", TIMEOUT)
            .map_err(ApiError::Setup)?;
        Ok(Self {
            client,
            site_id: config.site_id,
            pace: Pace::new(RATE_LIMIT, RATE_PERIOD),
            backoff: Duration::from_secs(1),
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        self.client.base()
    }

    /// Calls `method path?query` (with `siteId`) and returns the JSON answer (`null` for
    /// an empty one). Waits for its turn within the rate limit; a 429 waits for its
    /// `Retry-After`; a 5xx or no answer is tried again, with growing waits, only when
    /// `idempotent` (a 429 always: the call was not made).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value, ApiError> {
        let what = format!("{method} {path}");
        let mut target = form_urlencoded::Serializer::new(String::new());
        for (key, value) in query {
            target.append_pair(key, value);
        }
        if let Some(site) = self.site_id {
            target.append_pair("siteId", &site.to_string());
        }
        let target = match target.finish() {
            q if q.is_empty() => format!("/{path}"),
            q => format!("/{path}?{q}"),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= ATTEMPTS;
            let wait = self.backoff * 2u32.pow(attempt - 1);
            self.pace.turn().await;
            let reply = match self.client.call(method.clone(), &target, body).await {
                Ok(reply) => reply,
                Err(reason) if idempotent && attempt < UNANSWERED_ATTEMPTS => {
                    tracing::warn!(call = %what, %reason, "no answer from Comm100; trying again");
                    tokio::time::sleep(wait.min(MAX_WAIT)).await;
                    continue;
                }
                Err(reason) => {
                    return Err(ApiError::Unreachable {
                        base: self.base().to_owned(),
                        reason: format!("{what}: {reason}"),
                    })
                }
            };
            let status = reply.status;
            if status == StatusCode::TOO_MANY_REQUESTS && !last {
                let wait = retry_after(&reply).unwrap_or(wait).min(MAX_WAIT);
                tracing::warn!(call = %what, wait_s = wait.as_secs_f64(), "Comm100's rate limit; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            if status.is_server_error() && idempotent && !last {
                tracing::warn!(call = %what, %status, "Comm100 failed; trying again");
                tokio::time::sleep(wait.min(MAX_WAIT)).await;
                continue;
            }
            return self.answer(what, reply);
        }
    }

    fn answer(&self, what: String, reply: Reply) -> Result<Value, ApiError> {
        let status = reply.status;
        match status {
            _ if status.is_success() && reply.parsed => Ok(reply.body),
            _ if status.is_success()
                && reply.body.as_str().is_some_and(|t| t.trim().is_empty()) =>
            {
                Ok(Value::Null)
            }
            _ if status.is_success() => Err(ApiError::Malformed {
                what,
                detail: format!("not JSON: {}", reply.message()),
            }),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(ApiError::Unauthorized { status, what })
            }
            StatusCode::NOT_FOUND => Err(ApiError::NotFound {
                status,
                what,
                message: reply.message(),
            }),
            _ => Err(ApiError::Refused {
                status,
                what,
                message: reply.message(),
            }),
        }
    }
}

/// `Retry-After` in seconds, when the answer has one.
fn retry_after(reply: &Reply) -> Option<Duration> {
    let value = reply
        .headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// At most `limit` turns in any `period`: a turn past that waits until the oldest in the
/// period is `period` old.
pub struct Pace {
    limit: usize,
    period: Duration,
    taken: Mutex<VecDeque<Instant>>,
}

impl Pace {
    pub fn new(limit: usize, period: Duration) -> Self {
        Self {
            limit,
            period,
            taken: Mutex::new(VecDeque::new()),
        }
    }

    /// Waits for a turn and takes it.
    pub async fn turn(&self) {
        loop {
            let mut taken = self.taken.lock().await;
            let now = Instant::now();
            while taken
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.period)
            {
                taken.pop_front();
            }
            if taken.len() < self.limit {
                taken.push_back(now);
                return;
            }
            let until = *taken.front().expect("full, so not empty") + self.period;
            drop(taken);
            tokio::time::sleep_until(until).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pace_never_takes_more_than_its_limit_in_any_period() {
        let pace = Pace::new(3, Duration::from_secs(10));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..7 {
            pace.turn().await;
            times.push(start.elapsed());
        }
        assert_eq!(times[..3], [Duration::ZERO; 3]);
        assert_eq!(times[3..6], [Duration::from_secs(10); 3]);
        assert_eq!(times[6], Duration::from_secs(20));
        for (i, t) in times.iter().enumerate().skip(3) {
            assert!(*t - times[i - 3] >= Duration::from_secs(10), "{times:?}");
        }
    }

    #[test]
    fn each_missing_setting_is_named() {
        let mut config = Comm100Config::default();
        let err = |c: &Comm100Config| Api::from_config(c).err().unwrap().to_string();
        assert!(err(&config).contains("comm100.api_base"));
        config.api_base = Some("https://api15.comm100.io/v4".into());
        assert!(err(&config).contains("comm100.api_key"));
        config.api_email = Some("agent@example.com".into());
        config.api_key = Some(crate::config::Secret::new("key"));
        assert!(err(&config).contains("comm100.site_id"));
        config.site_id = Some(10100000);
        assert!(Api::from_config(&config).is_ok());
    }
}
