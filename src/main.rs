//! The `lexiflow` binary: a thin command line over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use lexiflow::{app::App, config::Config, db, http::router, server, telemetry::tracing_setup};

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
    let telemetry = tracing_setup::init(config.log_format, config.otlp_endpoint.as_deref())
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))?;
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
    telemetry.shutdown();
    Ok(())
}
