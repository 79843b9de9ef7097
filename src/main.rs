//! The `lexiflow` binary: a thin command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lexiflow::{
    app::App,
    config::{Config, LogFormat},
    db,
    http::router,
    server,
};
use tracing_subscriber::EnvFilter;

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
    /// Print the OpenAPI document as JSON.
    Openapi,
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into())))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        let doc = router::openapi().to_pretty_json().context("cannot render the OpenAPI document")?;
        #[allow(clippy::print_stdout)]
        {
            println!("{doc}");
        }
        return Ok(());
    }
    let config = Config::load()?;
    init_tracing(config.log_format);
    match cli.command {
        Some(Command::Migrate) => {
            let conn = db::connect(&config.database).await.context("cannot connect to the database")?;
            db::migrate(&conn).await.context("migration failed")?;
            tracing::info!("migrations applied");
        }
        _ => {
            let addr = std::net::SocketAddr::new(config.host, config.port);
            let app = App::build(config).await?;
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let local = listener.local_addr()?;
            tracing::info!(
                url = %format!("http://{local}"),
                docs = %format!("http://{local}/api/docs"),
                backend = ?app.db.get_database_backend(),
                "LexiFlow is serving"
            );
            server::serve(app, listener).await?;
            tracing::info!("stopped");
        }
    }
    Ok(())
}
