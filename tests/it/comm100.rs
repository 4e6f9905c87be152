//! `comm100 webhooks` against a stand-in for Comm100's API (tests/it/common/comm100.rs):
//! idempotent registration, secrets never printed, the rate limit's 429 and 5xx retried,
//! and each bad setting or answer an error that names what to check.

use crate::common::*;

const TARGET: &str = "https://bridge.example.com/webhooks/comm100?token=s3cr3t-bridge-token";
const OLD: &str = "https://old.example.com/hook?token=old-secret";

/// `comm100-bridge comm100 webhooks ARGS` with `env`: success, standard output, errors.
async fn webhooks(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let mut command = bridge_command();
    command.args(["comm100", "webhooks"]).args(args);
    command.envs(env.iter().cloned());
    outcome_blocking(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_register_creates_the_missing_seven_once_and_unregister_removes_them() {
    let comm100 = FakeComm100::start().await;
    let env = comm100.env();
    comm100.add_webhook("chatEnds", OLD);
    comm100.add_webhook("visitorSubmitsForm", "https://crm.example.com/forms");

    let (ok, out, err) = webhooks(&["register", "--target-url", TARGET], &env).await;
    assert!(ok, "{err}");
    assert_eq!(out.matches(": created ").count(), 7, "{out}");
    assert!(out.contains("7 events post to https://bridge.example.com/webhooks/comm100?token=<redacted>: 7 created, 0 kept"), "{out}");
    assert!(
        out.contains("also posts chatEnds to https://old.example.com/hook?token=<redacted>"),
        "{out}"
    );
    assert!(
        !out.contains("s3cr3t") && !out.contains("old-secret") && !err.contains("s3cr3t"),
        "{out}{err}"
    );
    let targets: Vec<(String, String)> = comm100
        .state
        .lock()
        .unwrap()
        .webhooks
        .iter()
        .filter(|w| w["targetUrl"] == TARGET)
        .map(|w| {
            (
                w["event"].as_str().unwrap().to_owned(),
                w["targetUrl"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(targets.len(), 7);

    // Idempotent: a second run keeps all seven and creates nothing.
    let posts = comm100.requests("POST ");
    let (ok, out, err) = webhooks(&["register", "--target-url", TARGET], &env).await;
    assert!(ok, "{err}");
    assert_eq!(out.matches(": kept ").count(), 7, "{out}");
    assert_eq!(
        comm100.requests("POST "),
        posts,
        "no subscription created again"
    );

    let (ok, out, err) = webhooks(&["list", "--target-url", TARGET], &env).await;
    assert!(ok, "{err}");
    assert_eq!(out.matches(", to the bridge)").count(), 7, "{out}");
    assert!(out.contains("chat_ended, elsewhere"), "{out}");
    assert!(out.contains("not an event the bridge takes"), "{out}");
    assert!(out.contains("all seven events post to"), "{out}");
    assert!(out.contains("9 subscriptions"), "{out}");
    assert!(!out.contains("s3cr3t"), "{out}");

    let (ok, out, err) = webhooks(&["unregister", "--target-url", TARGET], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("7 subscriptions to"), "{out}");
    let left: Vec<String> = comm100
        .state
        .lock()
        .unwrap()
        .webhooks
        .iter()
        .map(|w| w["targetUrl"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [OLD, "https://crm.example.com/forms"]);
    let (ok, out, _) = webhooks(&["list", "--target-url", TARGET], &env).await;
    assert!(ok);
    assert!(
        out.contains("not posting to") && out.contains("chatIsTransferred"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_and_server_errors_are_waited_out_and_bad_answers_named() {
    let comm100 = FakeComm100::start().await;
    let env = comm100.env();

    // 429 with Retry-After, then a 503: the list is asked for three times, and answered.
    comm100.fault(Fault::Status(429, Some(1)));
    comm100.fault(Fault::Status(503, None));
    let started = std::time::Instant::now();
    let (ok, out, err) = webhooks(&["list"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("0 subscriptions"), "{out}");
    assert_eq!(comm100.requests("GET /v4/livechat/webhooks"), 3);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After was not waited for"
    );

    // A slow answer is waited for.
    comm100.fault(Fault::Slow(std::time::Duration::from_millis(500)));
    let (ok, _, err) = webhooks(&["list"], &env).await;
    assert!(ok, "{err}");

    // Not JSON.
    comm100.fault(Fault::Malformed);
    let (ok, _, err) = webhooks(&["list"], &env).await;
    assert!(!ok);
    assert!(
        err.contains("not what its documentation shows") && err.contains("GET livechat/webhooks"),
        "{err}"
    );

    // A create the rate limit refused is made once it allows: one subscription each.
    comm100.fault(Fault::Status(200, None)); // the list: {"message": ...}, not a list
    let (ok, _, err) = webhooks(&["register", "--target-url", TARGET], &env).await;
    assert!(!ok && err.contains("expected a list"), "{err}");
    comm100.fault(Fault::Pass); // the list
    comm100.fault(Fault::Status(429, Some(0))); // the first create
    let (ok, out, err) = webhooks(&["register", "--target-url", TARGET], &env).await;
    assert!(ok, "{err}");
    assert_eq!(out.matches(": created ").count(), 7, "{out}");
    assert_eq!(comm100.requests("POST "), 8);
    assert_eq!(comm100.state.lock().unwrap().webhooks.len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_wrong_setting_is_named() {
    let comm100 = FakeComm100::start().await;
    let with = |key: &str, value: &str| {
        let mut env = comm100.env();
        env.retain(|(k, _)| !k.ends_with(key));
        if !value.is_empty() {
            env.push((format!("COMM100_BRIDGE__COMM100__{key}"), value.to_owned()));
        }
        env
    };
    for (env, says) in [
        (with("API_KEY", "wrong-key"), "comm100.api_key"),
        (with("SITE_ID", "999"), "comm100.site_id"),
        (
            with("API_BASE", "http://127.0.0.1:9/v4"),
            "cannot reach Comm100's API",
        ),
        (with("API_BASE", ""), "comm100.api_base is not set"),
        (with("API_KEY", ""), "comm100.api_email and comm100.api_key"),
        (with("API_BASE", "api15.comm100.io"), "comm100.api_base"),
    ] {
        let (ok, _, err) = webhooks(&["register", "--target-url", TARGET], &env).await;
        assert!(!ok, "{env:?}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(
            !err.contains("s3cr3t") && !err.contains(COMM100_KEY),
            "{err}"
        );
    }
    assert_eq!(
        comm100.requests("POST "),
        0,
        "nothing created with a wrong setting"
    );
}

/// `comm100-bridge backfill ARGS` against `bootstrap` and the stand-in of `env`.
async fn backfill(
    args: &[&str],
    bootstrap: &str,
    env: &[(String, String)],
) -> (bool, String, String) {
    let checkpoint = tempfile::tempdir().unwrap();
    let mut command = bridge_command();
    command
        .arg("backfill")
        .args(args)
        .arg("--checkpoint")
        .arg(checkpoint.path().join("backfill.json"))
        .env("COMM100_BRIDGE__KAFKA__BROKERS", bootstrap)
        .env("COMM100_BRIDGE__AUTH__TOKENS", TOKEN);
    command.envs(env.iter().cloned());
    outcome_blocking(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_refuses_bad_windows_types_and_credentials_naming_each() {
    let cluster = cluster();
    let bootstrap = cluster.bootstrap_servers();
    let comm100 = FakeComm100::start().await;
    let env = comm100.env();
    let past = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let later = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let without = |key: &str, value: &str| {
        let mut env = comm100.env();
        env.retain(|(k, _)| !k.ends_with(key));
        if !value.is_empty() {
            env.push((format!("COMM100_BRIDGE__COMM100__{key}"), value.to_owned()));
        }
        env
    };
    for (args, env, says) in [
        (
            vec!["--from", &past, "--to", &future],
            env.clone(),
            "is in the future",
        ),
        (
            vec!["--from", &later, "--to", &past],
            env.clone(),
            "is not before --to",
        ),
        (
            vec!["--from", "yesterday", "--to", &past],
            env.clone(),
            "--from `yesterday`",
        ),
        (
            vec!["--from", &past, "--to", &later, "--types", "chat_started"],
            env.clone(),
            "chat_started cannot be backfilled",
        ),
        (
            vec![
                "--from",
                &past,
                "--to",
                &later,
                "--types",
                "agent_status_changed",
            ],
            env.clone(),
            "does not keep these events",
        ),
        (
            vec!["--from", &past, "--to", &later],
            without("API_KEY", ""),
            "comm100.api_email and comm100.api_key",
        ),
        (
            vec!["--from", &past, "--to", &later],
            without("API_KEY", "wrong"),
            "comm100.api_key",
        ),
        (
            vec!["--from", &past, "--to", &later],
            without("SITE_ID", "999"),
            "comm100.site_id",
        ),
    ] {
        let (ok, out, err) = backfill(&args, &bootstrap, &env).await;
        assert!(!ok, "{args:?}: {out}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(!out.contains("published"), "{out}");
    }

    // Nothing in the window: nothing to publish, and it says so per type.
    let (ok, out, err) = backfill(&["--from", &past, "--to", &later], &bootstrap, &env).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(
            "chat_ended: 0 in Comm100's API for the window, 0 already in their topic, 0 published"
        ),
        "{out}"
    );
}
