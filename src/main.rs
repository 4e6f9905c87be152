use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use comm100_bridge::config::{Config, LogFormat};
use comm100_bridge::delivery::kafka::Publisher;
use comm100_bridge::delivery::order::Order;
use comm100_bridge::delivery::spool::replay::{Memory, Replay};
use comm100_bridge::delivery::spool::{self, Spool};
use comm100_bridge::event::{EventType, Record, Site, Timestamp};
use comm100_bridge::metrics::Metrics;
use comm100_bridge::registry::{self, Compatibility, Framing, Registry};
use comm100_bridge::route::Router;
use comm100_bridge::{dev, serve, Listeners};

/// Receives Comm100 Live Chat webhooks and publishes each event, normalized, to Kafka.
#[derive(Parser)]
#[command(version = comm100_bridge::LONG_VERSION, about)]
struct Cli {
    /// Configuration file (TOML), for `serve` when no command is given.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge (the default command).
    Serve {
        /// Configuration file (TOML), layered over the built-in defaults and under
        /// COMM100_BRIDGE__* environment variables.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the bridge against an embedded in-memory Kafka cluster and print every record.
    Dev {
        /// Address to receive webhooks on, without a token (host:port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Print what would be published for a payload: {"topic","key","headers","value"}.
    Normalize {
        /// Payload file, or - for standard input.
        #[arg(default_value = "-")]
        file: PathBuf,
        /// Site label, as in /webhooks/comm100/{site}.
        #[arg(long)]
        site: Option<String>,
        /// Configuration file (TOML) for topics and the Kafka message size.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the layered configuration and print it with secrets redacted.
    CheckConfig {
        /// Configuration file (TOML) to check, with the environment applied over it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// The JSON Schema of every record type, generated from the code that declares them.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Look into, or empty, a spool directory (for example one a removed replica left).
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Check, or create, the topics the bridge writes to (record topics, unknown, the DLQ).
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Work with the dead-letter topic.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Work with the Comm100 site through its API ([comm100] settings).
    #[command(subcommand)]
    Comm100(Comm100Command),
    /// Publish the events of a window that Comm100's API knows and the topics lack
    /// (offline messages, ended chats, wrap-ups), as records with origin "backfill".
    Backfill {
        /// The window's start, RFC 3339 (e.g. 2026-12-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        from: String,
        /// The window's end, RFC 3339, not in the future.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// Only these record types, comma-separated (default: offline_message_submitted,
        /// chat_ended, chat_wrapped_up).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// Print what would be published; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// The progress file, so that an interrupted run continues where it stopped.
        #[arg(
            long,
            value_name = "FILE",
            default_value = "comm100-bridge-backfill.json"
        )]
        checkpoint: PathBuf,
        /// The site label the records carry (as webhooks to /webhooks/comm100/<site> do).
        #[arg(long, value_name = "LABEL")]
        site: Option<String>,
        /// Items asked of Comm100 per page (1 to 100).
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
        page_size: u16,
        /// Configuration file: [comm100], Kafka and the topics.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Exit 0 if URL answers 2xx within 3 s: a container's health check without curl.
    Healthcheck {
        /// An http:// URL, such as the admin listener's /healthz or /readyz.
        #[arg(long, default_value = "http://127.0.0.1:9464/healthz")]
        url: hyper::Uri,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Write `<type>.schema.json` for every record type into DIR (created if missing),
    /// replacing files of those names.
    Write {
        /// The directory to write into.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Configuration file (TOML) whose topic names the schemas mention.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Register the schema of every record type as subject `<topic>-value` (schemaType
    /// JSON) in a Confluent-compatible schema registry; a schema it holds already is kept.
    /// When one would be refused as incompatible, none is registered.
    Register {
        /// Base URL of the registry's API (default: schema_registry.url), e.g.
        /// http://host:8081, or http://host:8080/apis/ccompat/v7 for Apicurio Registry.
        #[arg(long, value_name = "URL")]
        registry: Option<String>,
        /// Set each subject's compatibility mode first: BACKWARD, BACKWARD_TRANSITIVE,
        /// FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE.
        #[arg(long, value_name = "MODE")]
        compatibility: Option<Compatibility>,
        /// Configuration file (TOML): topic names and the registry's credentials.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Comm100Command {
    /// The site's webhook subscriptions.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// List the site's subscriptions, marking the seven the bridge takes (and, with
    /// --target-url, which post there, which post elsewhere and which are missing).
    List {
        /// The bridge's webhook URL, token included.
        #[arg(long, value_name = "URL")]
        target_url: Option<String>,
        /// Configuration file ([comm100] settings).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Subscribe the seven events to URL: an identical subscription is kept, a missing one
    /// created; subscriptions to other URLs are left alone and listed.
    Register {
        /// The bridge's webhook URL, token included.
        #[arg(long, value_name = "URL")]
        target_url: String,
        /// Configuration file ([comm100] settings).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Delete every subscription that posts to URL.
    Unregister {
        /// The webhook URL whose subscriptions to delete.
        #[arg(long, value_name = "URL")]
        target_url: String,
        /// Configuration file ([comm100] settings).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Re-publish dead-lettered records whose cause can pass (unknown_topic,
    /// topic_authorization_failed) to their original topic, as they were, in order; a
    /// second run re-publishes nothing. Prints each record and the counts per reason.
    Redrive {
        /// Only these reasons, comma-separated (default: every reason that can pass).
        #[arg(long, value_delimiter = ',')]
        reason: Vec<String>,
        /// Print what would be re-published; publish and remember nothing.
        #[arg(long)]
        dry_run: bool,
        /// Configuration file for Kafka and the dead-letter topic (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Print each topic with its partition count; exit 1 naming missing topics or
    /// partition counts that differ.
    Check {
        /// Configuration file for Kafka and the topic names (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Create the missing topics (topics.partitions, topics.replication_factor,
    /// topics.config), never changing an existing one, then check.
    Ensure {
        /// Configuration file for Kafka, the topic names and their settings (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Print, as JSON, what a spool holds (records, bytes, received_at range, per type),
    /// without changing it.
    Inspect {
        /// The spool directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Publish every record of a spool directory to Kafka, in order, then exit 0 with the
    /// spool empty; refuses a directory another process holds.
    Drain {
        /// The spool directory.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Configuration file for Kafka, topics and the dead-letter topic (TOML).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    return_large_buffers_to_the_os();
    let cli = Cli::parse();
    let result = match cli.command {
        None => run_serve(cli.config.as_deref()),
        Some(Command::Serve { config }) => run_serve(config.or(cli.config).as_deref()),
        Some(Command::Dev { listen }) => run_dev(listen),
        Some(Command::Normalize { file, site, config }) => {
            normalize(&file, site.as_deref(), config.or(cli.config).as_deref())
        }
        Some(Command::CheckConfig { config }) => check_config(config.or(cli.config).as_deref()),
        Some(Command::Schemas(SchemasCommand::Write { dir, config })) => {
            schemas_write(&dir, config.or(cli.config).as_deref())
        }
        Some(Command::Schemas(SchemasCommand::Register {
            registry,
            compatibility,
            config,
        })) => schemas_register(
            registry.as_deref(),
            compatibility,
            config.or(cli.config).as_deref(),
        ),
        Some(Command::Spool(SpoolCommand::Inspect { dir })) => spool_inspect(&dir),
        Some(Command::Spool(SpoolCommand::Drain { dir, config })) => {
            spool_drain(&dir, config.or(cli.config).as_deref())
        }
        Some(Command::Topics(TopicsCommand::Check { config })) => {
            topics(false, config.or(cli.config).as_deref())
        }
        Some(Command::Topics(TopicsCommand::Ensure { config })) => {
            topics(true, config.or(cli.config).as_deref())
        }
        Some(Command::Dlq(DlqCommand::Redrive {
            reason,
            dry_run,
            config,
        })) => dlq_redrive(&reason, dry_run, config.or(cli.config).as_deref()),
        Some(Command::Comm100(Comm100Command::Webhooks(command))) => {
            let config = match &command {
                WebhooksCommand::List { config, .. }
                | WebhooksCommand::Register { config, .. }
                | WebhooksCommand::Unregister { config, .. } => config.clone(),
            };
            webhooks(command, config.or(cli.config).as_deref())
        }
        Some(Command::Backfill {
            from,
            to,
            types,
            dry_run,
            checkpoint,
            site,
            page_size,
            config,
        }) => backfill(
            (&from, &to),
            &types,
            dry_run,
            checkpoint,
            (site.as_deref(), page_size.into()),
            config.or(cli.config).as_deref(),
        ),
        Some(Command::Healthcheck { url }) => healthcheck(url),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("comm100-bridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Makes glibc's malloc serve every allocation of 128 KiB or more (request bodies, records,
/// spool frames) with its own mapping, returned to the OS when freed. By default the
/// threshold rises after such a block is freed, and later large buffers come from the
/// heap, which keeps what they used: resident memory then grows well past the in-flight
/// budget under bursts of large bodies.
fn return_large_buffers_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: called first in main, before any other thread exists or allocates; mallopt
    // only changes a malloc parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::new(&config.log.level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Writes the schema of every record type into `dir`.
fn schemas_write(dir: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let router = Router::new(&config.topics);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for kind in EventType::ALL {
        let path = dir.join(format!("{kind}.schema.json"));
        std::fs::write(&path, router.schema_text(kind))
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// Registers the schema of every record type in the registry at `url`.
fn schemas_register(
    url: Option<&str>,
    mode: Option<Compatibility>,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    anyhow::ensure!(
        url.is_some() || config.schema_registry.url.is_some(),
        "no registry: give --registry URL or set schema_registry.url"
    );
    let router = Router::new(&config.topics);
    let client = Registry::new(&config.schema_registry, url)?;
    runtime()?.block_on(async {
        let outcomes = registry::register_all(&client, &router, mode).await?;
        for outcome in &outcomes {
            let what = match outcome.new {
                true => "registered",
                false => "already registered",
            };
            let mode = client.compatibility(&outcome.subject).await?;
            println!(
                "{}: {what}, id {}, version {}, compatibility {mode}",
                outcome.subject, outcome.registered.id, outcome.registered.version
            );
        }
        let new = outcomes.iter().filter(|o| o.new).count();
        println!(
            "{new} registered, {} already registered, at {}",
            outcomes.len() - new,
            client.url()
        );
        anyhow::Ok(())
    })
}

/// `backfill`: what Comm100's API knows of the window and the topics lack.
fn backfill(
    (from, to): (&str, &str),
    types: &[String],
    dry_run: bool,
    checkpoint: PathBuf,
    (site, page_size): (Option<&str>, usize),
    config: Option<&Path>,
) -> anyhow::Result<()> {
    use comm100_bridge::backfill;
    let (from, to) = backfill::window(from, to, Timestamp::now())?;
    let kinds = backfill::kinds(types)?;
    let site = site
        .map(|s| {
            Site::parse(s).with_context(|| {
                format!("--site `{s}` is not a site label (letters, digits, _ . -, up to 64)")
            })
        })
        .transpose()?;
    let config = Config::load(config)?;
    init_logging(&config);
    let options = backfill::Options {
        from,
        to,
        kinds,
        dry_run,
        checkpoint,
        site,
        page_size,
    };
    let counts =
        runtime()?.block_on(backfill::run(&config, &options, |line| println!("{line}")))?;
    for (kind, c) in &counts {
        let verb = if dry_run {
            "would be published"
        } else {
            "published"
        };
        println!(
            "{kind}: {} in Comm100's API for the window, {} already in their topic, {} {verb}",
            c.found, c.present, c.published
        );
    }
    Ok(())
}

/// `comm100 webhooks list|register|unregister`.
fn webhooks(command: WebhooksCommand, config: Option<&Path>) -> anyhow::Result<()> {
    use comm100_bridge::comm100::webhooks::{self, redact, Registered};
    let config = Config::load(config)?;
    let api = comm100_bridge::comm100::Api::from_config(&config.comm100)?;
    runtime()?.block_on(async {
        match command {
            WebhooksCommand::List { target_url, .. } => {
                let subscriptions = webhooks::list(&api).await?;
                for s in &subscriptions {
                    let mark = match (s.kind(), &target_url) {
                        (None, _) => "not an event the bridge takes".to_owned(),
                        (Some(kind), Some(t)) if *t == s.target_url => format!("{kind}, to the bridge"),
                        (Some(kind), Some(_)) => format!("{kind}, elsewhere"),
                        (Some(kind), None) => kind.to_string(),
                    };
                    println!("{}  {}  {}  ({mark})", s.id, s.event, redact(&s.target_url));
                }
                if let Some(target) = &target_url {
                    let missing: Vec<&str> = webhooks::EVENTS
                        .iter()
                        .map(|(event, _)| *event)
                        .filter(|e| !subscriptions.iter().any(|s| s.event.eq_ignore_ascii_case(e) && s.target_url == *target))
                        .collect();
                    match missing.is_empty() {
                        true => println!("all seven events post to {}", redact(target)),
                        false => println!("not posting to {}: {} (run comm100 webhooks register)", redact(target), missing.join(", ")),
                    }
                }
                println!("{} subscriptions", subscriptions.len());
            }
            WebhooksCommand::Register { target_url, .. } => {
                let (done, elsewhere) = webhooks::register(&api, &target_url).await?;
                let mut created = 0;
                for (event, outcome) in &done {
                    match outcome {
                        Registered::Kept(id) => println!("{event}: kept {id}"),
                        Registered::Created(id) => {
                            created += 1;
                            println!("{event}: created {id}")
                        }
                    }
                }
                for s in &elsewhere {
                    println!("also posts {} to {} ({}): left alone", s.event, redact(&s.target_url), s.id);
                }
                println!(
                    "{} events post to {}: {created} created, {} kept; Comm100 may take a few minutes to start posting to a new subscription",
                    done.len(),
                    redact(&target_url),
                    done.len() - created
                );
            }
            WebhooksCommand::Unregister { target_url, .. } => {
                let deleted = webhooks::unregister(&api, &target_url).await?;
                for s in &deleted {
                    println!("deleted {} ({})", s.id, s.event);
                }
                println!("{} subscriptions to {} deleted", deleted.len(), redact(&target_url));
            }
        }
        anyhow::Ok(())
    })
}

/// GETs `url` over HTTP/1.1 and fails unless the answer is 2xx within 3 s.
fn healthcheck(url: hyper::Uri) -> anyhow::Result<()> {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    anyhow::ensure!(
        url.scheme_str() == Some("http"),
        "--url must be an http:// URL, not {url}"
    );
    let host = url.host().context("--url has no host")?.to_owned();
    let port = url.port_u16().unwrap_or(80);
    let ask = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("cannot connect to {host}:{port}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(Empty::<bytes::Bytes>::new())?;
        anyhow::Ok(sender.send_request(request).await?.status())
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let status = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(3), ask).await })
        .map_err(|_| anyhow::anyhow!("{url} did not answer within 3 s"))??;
    anyhow::ensure!(status.is_success(), "{url} answered {status}");
    println!("{url}: {status}");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A future that resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a SIGTERM that arrives while the bridge
/// starts is a shutdown, not the default action that ends the process on the spot. Call
/// it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let streams =
        signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
    async move {
        match streams {
            Ok((mut int, mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGINT and SIGTERM; stop the bridge with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
        tracing::info!("shutdown requested");
    }
}

fn run_serve(config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_file)?;
    init_logging(&config);
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let listeners = Listeners::bind(&config).await?;
        serve(config, listeners, shutdown).await?;
        Ok(())
    })
}

fn run_dev(listen: SocketAddr) -> anyhow::Result<()> {
    let defaults = Config::load(None)?;
    init_logging(&defaults);
    let router = Router::new(&defaults.topics);
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let cluster =
            dev::start_cluster(3, &defaults).context("cannot start the embedded Kafka cluster")?;
        let bootstrap = cluster.bootstrap_servers();
        let private = dev::private_dir().context("cannot create a temporary directory")?;
        let config = dev::config(&bootstrap, listen, private.join("spool"))?;
        let listener = TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen} (use --listen to pick another address)")
        })?;
        let listen = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let consumer = dev::consumer(&bootstrap, &router)?;
        let printer = tokio::spawn(dev::print_records(consumer));
        let samples = dev::write_samples(&private).context("cannot write the bundled samples")?;

        println!("comm100-bridge dev: an embedded, in-memory Kafka cluster. NOT FOR PRODUCTION.");
        println!("  Kafka bootstrap: {bootstrap}   (try: kcat -b {bootstrap} -L)");
        println!(
            "  topics:          {}",
            comm100_bridge::topics::expected(&defaults).join(", ")
        );
        println!("  webhook URL:     http://{listen}/webhooks/comm100   (no token needed in dev)");
        println!("  samples:         {}", samples.display());
        println!("Post a sample:");
        println!(
            "  curl -sS http://{listen}/webhooks/comm100 --data-binary @{}",
            samples.join("chat_ended.json").display()
        );
        println!("Every published record is printed below. Ctrl-C stops.");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();

        let listeners = Listeners {
            webhook: listener,
            admin: None,
        };
        serve(config, listeners, shutdown).await?;
        // Stop the consumer before the cluster it reads from goes away.
        printer.abort();
        let _ = printer.await;
        drop(cluster);
        let _ = std::fs::remove_dir_all(&private);
        Ok(())
    })
}

fn normalize(file: &Path, site: Option<&str>, config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_file)?;
    let body = if file == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("cannot read standard input")?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let site = match site {
        Some(label) => match Site::parse(label) {
            Some(site) => Some(site),
            None => bail!("invalid --site `{label}`: use 1 to 64 of A-Z a-z 0-9 _ . -"),
        },
        None => None,
    };
    let record = Record::from_body(&body, site, Timestamp::now())
        .map_err(|e| anyhow::anyhow!("the bridge would reject this payload ({}): {e}", e.code()))?;
    let mut message = Router::new(&config.topics).route(&record);
    // What a webhook without a traceparent of its own gets: a new trace.
    let trace = comm100_bridge::trace::TraceParent::new().to_string();
    message
        .headers
        .push((comm100_bridge::trace::TRACEPARENT.into(), trace.into()));
    println!("{}", serde_json::to_string_pretty(&message.to_json())?);
    Ok(())
}

fn check_config(config_file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config_file)?;
    comm100_bridge::check(&config)?;
    comm100_bridge::load_tokens(&config)?;
    for warning in config.warnings() {
        eprintln!("warning: {warning}");
    }
    print!("{}", config.to_redacted_toml());
    Ok(())
}

/// `topics check` and, with `create`, `topics ensure`.
fn topics(create: bool, config: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    comm100_bridge::check(&config)?;
    runtime()?.block_on(async {
        let admin = comm100_bridge::topics::Admin::new(&config)?;
        let survey = match create {
            false => admin.survey().await?,
            true => {
                let (created, survey) = admin.ensure(&config).await?;
                for topic in &created {
                    println!("created {topic}");
                }
                survey
            }
        };
        print!("{survey}");
        let problems = survey.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(())
    })
}

/// `dlq redrive`.
fn dlq_redrive(reasons: &[String], dry_run: bool, config: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    comm100_bridge::check(&config)?;
    let reasons = comm100_bridge::redrive::reasons(reasons)?;
    runtime()?.block_on(async {
        let counts =
            comm100_bridge::redrive::redrive(&config, &reasons, dry_run, |line| println!("{line}"))
                .await?;
        let verb = if dry_run {
            "would be re-published"
        } else {
            "re-published"
        };
        for (reason, counts) in counts {
            println!("{reason}: {} {verb}", counts.republished);
            if counts.unusable > 0 {
                println!(
                    "{reason}: {} without dlq_original_topic, left alone",
                    counts.unusable
                );
            }
        }
        Ok(())
    })
}

fn spool_inspect(dir: &Path) -> anyhow::Result<()> {
    let inspection = spool::inspect::inspect(dir)?;
    println!("{}", serde_json::to_string_pretty(&inspection)?);
    Ok(())
}

fn spool_drain(dir: &Path, config_file: Option<&Path>) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: name a spool directory (spool.dir)",
            dir.display()
        );
    }
    let mut config = Config::load(config_file)?;
    config.spool.dir = dir.to_owned();
    init_logging(&config);
    runtime()?.block_on(async {
        let metrics = Metrics::new();
        let spool = Spool::open(
            &config.spool,
            spool::frame_limit(config.kafka.message_max_bytes()),
            metrics.clone(),
        )?;
        let pending = spool.pending_events();
        if pending > 0 {
            let framing = Framing::from_config(&config).await?;
            let publisher = Publisher::new(&config, metrics.clone(), framing)?;
            tracing::info!(records = pending, dir = %dir.display(), brokers = %config.kafka.brokers.join(","), "draining the spool to Kafka");
            let order = Arc::new(Order::new());
            let replay = Replay::spawn(
                spool.clone(),
                publisher.clone(),
                order,
                metrics,
                Memory::own(),
            );
            let left = replay.drain(shutdown_signal(), false).await;
            if let Err(e) = publisher.flush(Duration::from_secs(10)).await {
                tracing::warn!(error = %e, "producer not fully flushed");
            }
            let closing = spool.clone();
            tokio::task::spawn_blocking(move || closing.close()).await.ok();
            if left > 0 {
                bail!(
                    "{left} of {pending} records are still in {} (run spool drain again)",
                    dir.display()
                );
            }
        }
        println!("drained {pending} records from {}; the spool is empty", dir.display());
        Ok(())
    })
}
