//! `chronicle`: the one binary. See `chronicle --help`.

use std::net::SocketAddr;

use anyhow::Context;
use chronicle::app::stop_on_signals;
use chronicle::{Application, Config, Roles};
use clap::{Parser, Subcommand};
use eventstore::crypto::{Key, KeyStore};
use eventstore::database;
use projections::{checkpoint, ReadModel};

/// Chronicle: an event-sourced backend for accounts, usage and messages.
///
/// Every change is a command that appends events to PostgreSQL; a relay publishes them to
/// NATS JetStream; projectors build the read models that the HTTP API serves.
/// Configuration comes from the environment and `.env` (see .env.example).
#[derive(Debug, Parser)]
#[command(name = "chronicle", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Chronicle: the API, the relay and the projectors in one process (by default).
    ///
    /// Creates the database if it is missing, applies migrations and creates the stream.
    #[command(after_help = chronicle::env_help::SERVE)]
    Serve {
        /// Run only these parts, comma-separated: api, relay, projector, mailer, assistant
        /// (the assistant runs only when LLM_BASE_URL and LLM_API_KEY are set).
        #[arg(long, default_value = "api,relay,projector,mailer,assistant")]
        roles: Roles,
        /// Listen here instead of BIND.
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Run one background worker (the same as `serve --roles <role>`).
    #[command(after_help = chronicle::env_help::SERVE)]
    Worker {
        /// relay, projector, mailer or assistant
        role: chronicle::Role,
    },
    /// Create the database if it is missing and apply pending migrations, then exit.
    #[command(after_help = chronicle::env_help::MIGRATE)]
    Migrate,
    /// Inspect and rebuild read models.
    #[command(after_help = chronicle::env_help::DATABASE_AND_KEYS)]
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Run the service from a terminal: users, roles, audit trails, admin API keys.
    ///
    /// Talks to the database directly (the same operations as the admin API). Exit codes:
    /// 0 done, 1 failure, 2 bad input, 3 not found, 4 refused, 5 read models behind.
    #[command(after_help = chronicle::env_help::ADMIN)]
    Admin {
        #[command(subcommand)]
        command: chronicle::admin_cli::AdminCommand,
    },
    /// The event log: export it (NDJSON or CSV), import an export into an empty log,
    /// follow the NATS stream.
    #[command(after_help = chronicle::env_help::TAIL)]
    Events {
        #[command(subcommand)]
        command: chronicle::events_cli::EventsCommand,
    },
    /// Print the OpenAPI document the server serves at /openapi.json (no configuration or
    /// database needed), for client generators and contract checks.
    Openapi,
    /// The master key that wraps every user's data key.
    #[command(after_help = chronicle::env_help::KEYS)]
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new random master key (64 hex digits) for MASTER_KEY.
    Generate,
    /// Re-wrap every user's data key, and the system key (API keys' secrets), with
    /// MASTER_KEY (old keys in MASTER_KEY_PREVIOUS). The event log is not touched.
    #[command(after_help = chronicle::env_help::KEYS)]
    Rotate,
}

#[derive(Debug, Subcommand)]
enum ProjectionsCommand {
    /// Each read model's position in the log, lag and state.
    #[command(after_help = chronicle::env_help::DATABASE_AND_KEYS)]
    Status,
    /// Replay a read model from the event log into shadow tables, then swap them in
    /// (readers see the old rows until the new ones are complete; no downtime).
    #[command(after_help = chronicle::env_help::DATABASE_AND_KEYS)]
    Rebuild {
        /// users, sessions, usage, conversations, uploads or event_stats
        name: ReadModel,
    },
    /// Replay read models into shadow tables up to their live checkpoint and compare every
    /// table with its twin (exit code 1 when any row differs). Nothing live changes.
    #[command(after_help = chronicle::env_help::DATABASE_AND_KEYS)]
    Verify {
        /// The read model (or --all).
        #[arg(required_unless_present = "all")]
        name: Option<ReadModel>,
        /// Every read model.
        #[arg(long, conflicts_with = "name")]
        all: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    // before any thread: the arenas the runtime's threads get (src/memory.rs)
    chronicle::memory::limit_malloc_arenas();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(start()),
        Err(e) => {
            eprintln!("chronicle: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn start() {
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    chronicle::telemetry::init_logs_to(matches!(
        cli.command,
        Command::Admin { .. } | Command::Events { .. }
    ));
    if let Err(e) = run(cli).await {
        eprintln!("chronicle: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Openapi) {
        println!("{}", api::openapi::document_json()?);
        return Ok(());
    }
    let mut config = Config::from_env()?;
    match cli.command {
        Command::Serve { roles, bind } => {
            if let Some(bind) = bind {
                config.http.bind = bind;
            }
            serve(config, roles).await
        }
        Command::Worker { role } => serve(config, Roles::only(&[role])).await,
        // printed above, before the configuration (which it does not need) is read
        Command::Openapi => Ok(()),
        Command::Migrate => {
            database::ensure_database(&config.database.url).await?;
            let pool = database::connect(&config.database.url, 2).await?;
            database::migrate(&pool).await?;
            checkpoint::ensure_all(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Events { command } => chronicle::events_cli::run(config, command).await,
        Command::Admin { command } => {
            let code = chronicle::admin_cli::run(config, command).await;
            std::process::exit(code)
        }
        Command::Keys { command } => match command {
            KeysCommand::Generate => {
                println!("{}", Key::random().to_hex());
                Ok(())
            }
            KeysCommand::Rotate => {
                let pool = database::connect(&config.database.url, 2)
                    .await
                    .context("DATABASE_URL: cannot connect")?;
                let keys = KeyStore::new(pool.clone(), config.keys.master.clone());
                let n = keys.rotate().await?;
                println!(
                    "re-wrapped {n} user keys with master key {}",
                    config.keys.master.current.id()
                );
                Ok(())
            }
        },
        Command::Projections { command } => {
            let pool = database::connect(&config.database.url, 2)
                .await
                .context("DATABASE_URL: cannot connect")?;
            match command {
                ProjectionsCommand::Status => projections_status(&pool).await,
                ProjectionsCommand::Rebuild { name } => {
                    let keys = KeyStore::new(pool.clone(), config.keys.master.clone());
                    rebuild(&pool, &keys, name).await
                }
                ProjectionsCommand::Verify { name, all, json } => {
                    let keys = KeyStore::new(pool.clone(), config.keys.master.clone());
                    let models: Vec<ReadModel> = match (name, all) {
                        (Some(m), _) => vec![m],
                        (None, _) => ReadModel::ALL.to_vec(),
                    };
                    if !verify(&pool, &keys, &models, json).await? {
                        std::process::exit(1);
                    }
                    Ok(())
                }
            }
        }
    }
}

async fn serve(config: Config, roles: Roles) -> anyhow::Result<()> {
    metrics_touch();
    // development: a private PostgreSQL / NATS when the configured one is not reachable
    let services = chronicle::dev_services::DevServices::start_missing(&config).await?;
    let result = async {
        let app = Application::build(config, roles).await?;
        stop_on_signals(app.stop_token());
        app.run_until_stopped().await
    }
    .await;
    services.stop().await;
    result
}

fn metrics_touch() {
    let _ = chronicle::telemetry::metrics_handle();
}

async fn projections_status(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let all = checkpoint::all(pool).await?;
    println!(
        "{:<14} {:<11} {:>10} {:>10}  {:<33} error",
        "read model", "state", "applied", "lag", "position"
    );
    for cp in all {
        let (lag, _) = eventstore::log::backlog(pool, cp.cursor).await?;
        println!(
            "{:<14} {:<11} {:>10} {:>10}  {:<33} {}",
            cp.name,
            cp.status,
            cp.events_applied,
            lag,
            cp.cursor,
            cp.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

/// A progress bar on standard error (hidden when it is not a terminal).
fn progress_bar(message: String) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events ({per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(message);
    bar
}

/// Verify each read model; whether all match.
async fn verify(
    pool: &sqlx::PgPool,
    keys: &KeyStore,
    models: &[ReadModel],
    json: bool,
) -> anyhow::Result<bool> {
    let mut all_match = true;
    let mut reports = vec![];
    for model in models {
        let bar = progress_bar(format!("verifying {model}"));
        let report = projections::rebuild::verify(pool, keys, *model, |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        })
        .await?;
        bar.finish_and_clear();
        all_match &= report.matches();
        if !json {
            for t in &report.tables {
                println!(
                    "{:<14} {:<20} {:<9} live {:>8} rows, replayed {:>8} rows; only live {}, only replayed {}  (at {}, {} events)",
                    report.read_model,
                    t.table,
                    if t.matches() { "ok" } else { "DIFFERS" },
                    t.live_rows,
                    t.replayed_rows,
                    t.only_live,
                    t.only_replayed,
                    report.cursor,
                    report.events_replayed
                );
            }
        }
        reports.push(report);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else if all_match {
        println!("every read model matches a replay of the log");
    } else {
        println!("some read models differ from a replay of the log");
    }
    Ok(all_match)
}

async fn rebuild(pool: &sqlx::PgPool, keys: &KeyStore, model: ReadModel) -> anyhow::Result<()> {
    let bar = progress_bar(format!("rebuilding {model}"));
    let report = projections::rebuild::rebuild(pool, keys, model, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    println!(
        "rebuilt {model}: {} events replayed, now at {}",
        report.events_applied, report.cursor
    );
    Ok(())
}
