//! The `walpipe` binary: parses the command line and the environment,
//! starts logging and the runtime, and prints errors as one sentence.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use walpipe::{cli, config};

#[derive(Debug, Parser)]
#[command(
    name = "walpipe",
    version,
    about = "Stream a database's changes (a PostgreSQL slot, a MySQL or MariaDB binlog) into a sink, idempotently."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sidecar: the job defined by the environment, plus the jobs of the state store.
    Run,
    /// Check the source and the sink and print each finding with its fix; exit 1 on an error.
    Check,
    /// Stream the decoded changes of an existing slot to stdout as JSON lines.
    Tail(cli::tail::TailArgs),
    /// Control jobs through the API: list, show, watch, create, start, pause, resume, stop, restart, retry, delete, history.
    Jobs(cli::jobs::JobsArgs),
    /// Print a shell completion script: `walpipe completions bash > /etc/bash_completion.d/walpipe`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print walpipe's man page (roff): `walpipe man > walpipe.1; man ./walpipe.1`.
    Man,
}

fn main() -> ExitCode {
    walpipe::cli::malloc_tuning::return_large_buffers();
    let cli = Cli::parse();
    // These two need neither the environment nor a runtime.
    match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "walpipe", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&format!("could not write the man page: {error}")),
            };
        }
        _ => {}
    }
    let config = match config::Config::from_env() {
        Ok(config) => config,
        Err(error) => return fail(&error.to_string()),
    };
    // On a terminal, `walpipe run` draws its copies as progress bars.
    let bars = matches!(cli.command, Command::Run)
        && config.log_format == "text"
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    if let Err(error) = init_logging(&config, bars) {
        return fail(&error);
    }
    // One crypto provider for every TLS client (replication, SQL, HTTP).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("could not start the async runtime: {error}")),
    };
    let result = match cli.command {
        Command::Tail(args) => runtime.block_on(cli::tail::run(args, config.source_url.clone())),
        Command::Run => runtime.block_on(cli::run::run(&config)),
        Command::Check => runtime.block_on(cli::check::run(&config)),
        Command::Jobs(args) => {
            runtime.block_on(cli::jobs::run(args, &config.http_addr, config.api_token.clone()))
        }
        Command::Completions { .. } | Command::Man => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Every error is written as one sentence that already names its cause.
        Err(error) => fail(&error.to_string()),
    }
}

/// One line on stderr, exit 1: user errors are sentences, not stack traces.
fn fail(message: &str) -> ExitCode {
    eprintln!("walpipe: {message}");
    ExitCode::FAILURE
}

fn init_logging(config: &config::Config, bars: bool) -> Result<(), String> {
    // The SQL driver's notices ("schema ... already exists, skipping") are noise at info.
    let directives = if config.log.contains("tokio_postgres") {
        config.log.clone()
    } else {
        format!("{},tokio_postgres=warn", config.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives).map_err(|error| {
        format!("WALPIPE_LOG={:?} is not a log filter ({error}): use e.g. info or walpipe=debug", config.log)
    })?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if config.log_format == "json" {
        builder.json().init();
    } else if bars {
        builder.with_writer(cli::progress::draw_bars()).init();
    } else {
        builder.init();
    }
    Ok(())
}
