//! The reference documents stay complete: docs/configuration.md lists every key the
//! configuration accepts (found by asking the loader itself), with its real default and
//! environment name; the README's table of answers lists every status a webhook gets.

use std::collections::BTreeSet;

use crate::common::repo;
use comm100_bridge::auth::AuthError;
use comm100_bridge::config::Config;
use comm100_bridge::http::Refusal;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// The answer of `check-config` to `toml`: Ok, or its error text.
fn load(toml: &str) -> Result<Config, String> {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, toml.as_bytes()).unwrap();
    let config = Config::load_with_env(Some(file.path()), Some(Default::default()))
        .map_err(|e| e.to_string())?;
    comm100_bridge::check(&config).map_err(|e| e.to_string())?;
    Ok(config)
}

/// The fields of the table at `path` (`""` for the top level), from the loader's
/// "unknown field" error; `None` when `path` is not a table of fixed fields (a value, or a
/// map such as `kafka.properties`).
fn fields(path: &str) -> Option<Vec<String>> {
    let probe = if path.is_empty() {
        "zz_probe = 1\n".to_owned()
    } else {
        format!("[{path}]\nzz_probe = 1\n")
    };
    let err = load(&probe).err()?;
    let rest = err.split("unknown field `zz_probe`, expected ").nth(1)?;
    let list = rest.split(" for key").next().unwrap();
    let list = list.split(": ").next().unwrap();
    Some(
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect(),
    )
}

/// Every key the configuration accepts, dotted; maps are one key each.
fn every_key() -> BTreeSet<String> {
    fn walk(path: &str, keys: &mut BTreeSet<String>) {
        match fields(path) {
            Some(names) => {
                for name in names {
                    let key = if path.is_empty() {
                        name
                    } else {
                        format!("{path}.{name}")
                    };
                    walk(&key, keys);
                }
            }
            None => {
                keys.insert(path.to_owned());
            }
        }
    }
    let mut keys = BTreeSet::new();
    walk("", &mut keys);
    keys
}

fn env_name(key: &str) -> String {
    format!("COMM100_BRIDGE__{}", key.replace('.', "__").to_uppercase())
}

/// The rows of docs/configuration.md's key tables (those of four columns): (key, default,
/// environment).
fn documented() -> Vec<(String, String, String)> {
    read("docs/configuration.md")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|cells| cells.len() == 4)
        .map(|cells| {
            (
                cells[0].trim_matches('`').to_owned(),
                cells[1].clone(),
                cells[2].trim_matches('`').to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_configuration_reference_lists_every_key_with_its_default_and_variable() {
    let keys = every_key();
    assert!(keys.len() > 40, "the walk found too few keys: {keys:?}");
    assert!(keys.contains("http.tls.cert") && keys.contains("kafka.properties"));
    let rows = documented();
    let defaults: toml::Value = toml::from_str(&load("").unwrap().to_redacted_toml()).unwrap();

    for key in &keys {
        // A map is documented as `<key>.<name>`.
        let row = rows
            .iter()
            .find(|(k, _, _)| {
                k == key
                    || k.strip_prefix(key.as_str())
                        .is_some_and(|r| r.starts_with(".<"))
            })
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{key}`"));
        let (documented_key, default, env) = row;
        let want_env = if documented_key == key {
            env_name(key)
        } else if key == "kafka.properties" {
            "COMM100_BRIDGE__KAFKA__PROPERTIES__<NAME>".to_owned()
        } else {
            format!(
                "{}__<{}>",
                env_name(key),
                documented_key
                    .rsplit('<')
                    .next()
                    .unwrap()
                    .trim_end_matches('>')
                    .to_uppercase()
            )
        };
        assert_eq!(env, &want_env, "`{key}`: environment name");
        if documented_key != key {
            continue;
        }
        let mut value = Some(&defaults);
        for part in key.split('.') {
            value = value.and_then(|v| v.get(part));
        }
        let want_default = match value {
            Some(v) => format!("`{v}`"),
            None => "unset".to_owned(),
        };
        assert_eq!(default, &want_default, "`{key}`: default");
    }
    // No row for a key that does not exist.
    for (key, _, _) in &rows {
        let base = key.split(".<").next().unwrap();
        assert!(
            keys.contains(base),
            "docs/configuration.md documents `{key}`, which is no key"
        );
    }
}

#[test]
fn the_readme_lists_every_answer_a_webhook_can_get() {
    let readme = read("README.md");
    let table: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("## What an answer means"))
        .take_while(|l| !l.starts_with("Every error body"))
        .filter(|l| l.starts_with('|'))
        .collect();
    for refusal in Refusal::ALL {
        let status = refusal.status().as_u16().to_string();
        let code = refusal.code();
        assert!(
            table
                .iter()
                .any(|l| l.contains(&status) && l.contains(&format!("`{code}`"))),
            "the README's answers table lacks {status} `{code}`"
        );
    }
    // hyper's own answers: heads too large, and what no route takes.
    for status in ["404", "405", "431"] {
        assert!(
            table.iter().any(|l| l.contains(status)),
            "the README's answers table lacks {status}"
        );
    }
    let reasons = AuthError::ALL.map(AuthError::reason);
    for reason in reasons {
        assert!(
            readme.contains(&format!("`{reason}`")),
            "auth failure reason `{reason}`"
        );
    }
}

#[test]
fn the_changelog_has_a_section_for_this_version() {
    let changelog = read("CHANGELOG.md");
    let heading = format!("## [{}] - ", comm100_bridge::VERSION);
    assert!(
        changelog.contains(&heading),
        "CHANGELOG.md lacks `{heading}…`"
    );
    assert!(changelog.contains("## [Unreleased]"));
    assert!(
        changelog.contains("kafka_retries_total") && changelog.contains("body_too_complex"),
        "the renamed metric and the new refusal are operator-facing changes"
    );
}
