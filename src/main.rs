//! The `lexiflow` binary: a thin command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lexiflow::{app::App, config::Config, db, http::router, jobs, server, telemetry::tracing_setup};

/// mimalloc instead of the system allocator: a request allocates many small, short-lived
/// objects, and glibc's malloc showed up as the largest single cost in a profile of
/// `GET /api/v1/cases/{id}` under load. `main` configures it first
/// ([`lexiflow_alloc::configure`]: no transparent huge pages, freed memory returned at once).
/// (Not with `--features system-alloc`: a build for heap profilers that hook malloc.)
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: lexiflow_alloc::MiMalloc = lexiflow_alloc::MiMalloc;

#[derive(Parser)]
#[command(name = "lexiflow", version, about = "LexiFlow legal practice management back end")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the HTTP server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Run a job worker only (no HTTP), until SIGTERM or SIGINT; run as many as you like.
    Worker,
    /// Print the OpenAPI document as JSON.
    Openapi,
    /// The audit trail: verify its hash chains, or prune past the retention period.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Import cases or parties from a CSV file (one transaction; rejects to a file).
    Import {
        #[command(subcommand)]
        what: ImportWhat,
    },
    /// Webhook subscriptions' stored secrets.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Seal every subscription's secrets again under WEBHOOK_SECRET_KEY (after a key change);
    /// exits non-zero when a secret no configured key opens, or one could not be written.
    Reseal,
}

#[derive(Subcommand)]
enum ImportWhat {
    /// Cases: columns caseNumber, title, type, status, description, court, jurisdiction,
    /// judge, filedAt, closedAt, clientName, leadAttorneyId.
    Cases(ImportArgs),
    /// Parties: columns caseNumber (the case), name, kind, type, role, email, phone,
    /// address, website, counsel, notes.
    Parties(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The CSV file (header row first).
    file: std::path::PathBuf,
    /// E-mail address of the user the import acts as (their permissions apply; the audit
    /// trail names them).
    #[arg(long = "as", value_name = "EMAIL")]
    actor: String,
    /// atomic: one bad row and nothing is imported; partial: bad rows are left out.
    #[arg(long, default_value = "atomic", value_parser = ["atomic", "partial"])]
    mode: String,
    /// Cases only: when a case number exists already: fail, skip or update.
    #[arg(long, default_value = "fail", value_parser = ["fail", "skip", "update"])]
    on_conflict: String,
    /// Where rejected rows are written (default FILE.rejects.csv).
    #[arg(long)]
    rejects: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// For commands that open webhook secrets without serving (`worker`, `webhooks reseal`):
/// outside production, the JWT secret `serve` generated into the data directory, since secrets
/// sealed under it must open here too. In production it comes from the environment, and a
/// process without one simply has no key from it.
fn dev_jwt_secret(config: &mut Config) -> anyhow::Result<()> {
    if config.auth.jwt_secret.is_none() && config.env != lexiflow::config::AppEnv::Production {
        config.resolve_secrets().context("cannot read or create the JWT secret")?;
    }
    Ok(())
}

/// Runs `lexiflow import …`; false when nothing was imported because the import was refused.
async fn import_command(app: &App, what: ImportWhat) -> anyhow::Result<bool> {
    use lexiflow::{
        cases::bulk::{BulkMode, OnConflict},
        import,
    };
    let (args, cases) = match what {
        ImportWhat::Cases(a) => (a, true),
        ImportWhat::Parties(a) => (a, false),
    };
    let opts = import::ImportOptions {
        actor: args.actor,
        mode: if args.mode == "partial" { BulkMode::Partial } else { BulkMode::Atomic },
        on_conflict: match args.on_conflict.as_str() {
            "skip" => OnConflict::Skip,
            "update" => OnConflict::Update,
            _ => OnConflict::Fail,
        },
        rejects: args.rejects,
        progress: !args.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = if cases {
        import::cases(app, &args.file, &opts).await?
    } else {
        import::parties(app, &args.file, &opts).await?
    };
    #[allow(clippy::print_stdout)]
    {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(report.committed)
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every firm's chain (or one firm's); exits 1 if any chain is broken.
    Verify {
        /// Only this firm.
        #[arg(long)]
        firm: Option<uuid::Uuid>,
    },
    /// Delete entries older than AUDIT_RETENTION_DAYS, keeping each chain verifiable.
    Prune,
}

/// Runs `lexiflow audit …`; false when a chain is broken.
async fn audit_command(
    conn: &sea_orm::DatabaseConnection,
    config: &Config,
    command: AuditCommand,
) -> anyhow::Result<bool> {
    use lexiflow::audit::chain;
    #[allow(clippy::print_stdout)]
    match command {
        AuditCommand::Verify { firm } => {
            let firms = match firm {
                Some(f) => vec![f],
                None => chain::firms(conn).await?,
            };
            let mut all_valid = true;
            for f in firms {
                let v = chain::verify(conn, f).await?;
                all_valid &= v.valid;
                println!(
                    "{}",
                    serde_json::json!({ "firmId": f, "valid": v.valid, "entriesChecked": v.entries_checked,
                                        "firstInvalidChain": v.first_invalid_chain,
                                        "firstInvalidSequence": v.first_invalid_sequence })
                );
            }
            Ok(all_valid)
        }
        AuditCommand::Prune => {
            let Some(days) = config.audit_retention_days else {
                println!("AUDIT_RETENTION_DAYS is not set: every entry is kept");
                return Ok(true);
            };
            let before = chrono::Utc::now() - chrono::Duration::days(i64::from(days));
            for f in chain::firms(conn).await? {
                let n = chain::prune(conn, f, before).await?;
                println!("{}", serde_json::json!({ "firmId": f, "pruned": n }));
            }
            Ok(true)
        }
    }
}

fn main() -> anyhow::Result<()> {
    lexiflow_alloc::configure();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        let doc = router::openapi().to_pretty_json().context("cannot render the OpenAPI document")?;
        #[allow(clippy::print_stdout)]
        {
            println!("{doc}");
        }
        return Ok(());
    }
    let mut config = Config::load()?;
    let telemetry = tracing_setup::init(config.log_format, config.otlp_endpoint.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
    #[cfg(feature = "system-alloc")]
    tracing::warn!(
        "built with --features system-alloc (the C library's malloc) for heap profiling: not for production"
    );
    match cli.command {
        Some(Command::Audit { command }) => {
            let conn = db::connect(&config.database).await.context("cannot connect to the database")?;
            db::migrate(&conn).await.context("migration failed")?;
            let ok = audit_command(&conn, &config, command).await?;
            telemetry.shutdown();
            if !ok {
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::Webhooks { command: WebhooksCommand::Reseal }) => {
            dev_jwt_secret(&mut config)?;
            let sealer = lexiflow::webhooks::sign::Sealer::from_config(&config)
                .context("neither WEBHOOK_SECRET_KEY nor JWT_SECRET is set: no key to seal with")?;
            let conn = db::connect(&config.database).await.context("cannot connect to the database")?;
            db::migrate(&conn).await.context("migration failed")?;
            let r = lexiflow::webhooks::dispatch::seal_all_again(&conn, &sealer).await?;
            tracing::info!(
                current = r.current,
                moved = r.moved,
                unreadable = r.unreadable,
                skipped = r.skipped,
                "webhook secrets sealed again"
            );
            conn.close().await.ok();
            telemetry.shutdown();
            if r.unreadable > 0 || r.skipped > 0 {
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::Import { what }) => {
            let app = App::build(config).await?;
            let ok = import_command(&app, what).await?;
            // Number the import's events before leaving (PostgreSQL; the sequencer task this
            // process started may not finish before it exits), so servers tailing the outbox
            // see them at once rather than at the next `events.sequence` tick.
            if let Err(e) = lexiflow::events::outbox::sequence_all(&app.db).await {
                tracing::warn!(error = %e, "could not number the imported events; the events.sequence job will");
            }
            app.db.clone().close().await.ok();
            telemetry.shutdown();
            if !ok {
                std::process::exit(1);
            }
            return Ok(());
        }
        Some(Command::Worker) => {
            dev_jwt_secret(&mut config)?;
            let conn = db::connect(&config.database).await.context("cannot connect to the database")?;
            db::migrate(&conn).await.context("migration failed")?;
            lexiflow::telemetry::metrics::install();
            let queue_db = db::connect_for_queue(&config.database).await.context("cannot connect to the database")?;
            let redis = lexiflow::redis_link::RedisLink::from_config(&config)
                .context("REDIS_URL is not usable")?
                .map(std::sync::Arc::new);
            let bus = lexiflow::bus::Bus::new(uuid::Uuid::now_v7(), redis.clone());
            let cache = lexiflow::cache::Cache::new(config.cache, redis, bus);
            let storage = lexiflow::storage::Storage::from_config(&config)
                .map_err(|e| anyhow::anyhow!(e))
                .context("file storage is not usable")?;
            let w = jobs::worker(queue_db.clone(), conn.clone(), &config, cache.clone(), storage)
                .context("cannot set up the job worker")?;
            let ended = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let probes_done = tokio_util::sync::CancellationToken::new();
            let probes = match config.worker_health_port {
                Some(port) => {
                    let listener = tokio::net::TcpListener::bind((config.host, port))
                        .await
                        .with_context(|| format!("cannot listen on {}:{port} (WORKER_HEALTH_PORT)", config.host))?;
                    let url = format!("http://{}", listener.local_addr()?);
                    let router = jobs::probe::router(jobs::probe::Probe {
                        db: queue_db.clone(),
                        cache,
                        metrics_token: config.metrics_token.clone(),
                        ended: ended.clone(),
                        stopping: stopping.clone(),
                    });
                    tracing::info!(url, "worker probes listening");
                    let done = probes_done.clone();
                    Some(tokio::spawn(async move {
                        let served = axum::serve(listener, router).with_graceful_shutdown(done.cancelled_owned()).await;
                        if let Err(e) = served {
                            tracing::warn!(error = %e, "the worker's probe listener failed");
                        }
                    }))
                }
                None => None,
            };
            tracing::info!(worker = w.id(), "job worker running");
            let stop = tokio_util::sync::CancellationToken::new();
            let run = {
                let ended = ended.clone();
                let run = w.run(stop.clone());
                tokio::spawn(async move {
                    run.await;
                    ended.store(true, std::sync::atomic::Ordering::Release);
                })
            };
            server::signal().await;
            // Readiness turns 503 at once; liveness holds while running jobs drain.
            stopping.store(true, std::sync::atomic::Ordering::Release);
            stop.cancel();
            let _ = run.await;
            probes_done.cancel();
            if let Some(mut p) = probes {
                // A probe connection left open (a slow or half-open client) does not hold the exit.
                if tokio::time::timeout(std::time::Duration::from_secs(2), &mut p).await.is_err() {
                    p.abort();
                }
            }
            queue_db.close().await.ok();
            conn.close().await.ok();
            tracing::info!("worker stopped");
        }
        Some(Command::Migrate) => {
            let conn = db::connect(&config.database).await.context("cannot connect to the database")?;
            db::migrate(&conn).await.context("migration failed")?;
            tracing::info!("migrations applied");
        }
        _ => {
            let addr = std::net::SocketAddr::new(config.host, config.port);
            let in_serve = config.worker_in_serve;
            let app = App::build(config).await?;
            let stop_worker = tokio_util::sync::CancellationToken::new();
            let worker = if in_serve {
                let queue_db =
                    db::connect_for_queue(&app.config.database).await.context("cannot connect to the database")?;
                let w =
                    jobs::worker(queue_db.clone(), app.db.clone(), &app.config, app.cache.clone(), app.storage.clone())
                        .context("cannot set up the job worker")?;
                Some((tokio::spawn(w.run(stop_worker.clone())), queue_db))
            } else {
                None
            };
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(
                url = %format!("http://{local}"),
                docs = %format!("http://{local}/api/docs"),
                backend = ?app.db.get_database_backend(),
                "LexiFlow is serving"
            );
            server::serve(app.clone(), listener, stop_worker.clone()).await?;
            stop_worker.cancel();
            if let Some((w, queue_db)) = worker {
                // The worker drains its running jobs within the grace period itself.
                let limit = app.config.shutdown_grace + std::time::Duration::from_secs(5);
                if tokio::time::timeout(limit, w).await.is_err() {
                    tracing::warn!("the job worker did not stop in time; its jobs return through their leases");
                }
                queue_db.close().await.ok();
            }
            app.db.clone().close().await.ok();
            tracing::info!("stopped");
        }
    }
    telemetry.shutdown();
    Ok(())
}
