//! Command line: parse arguments, load config, hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use siptrack::config::Config;

#[derive(Parser)]
#[command(
    name = "siptrack",
    version,
    about = "SIP call-tracking proxy with CRM hooks"
)]
struct Cli {
    /// Log format; the level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy with the given configuration.
    Run {
        /// The configuration file (TOML; every key is in the shipped one).
        #[arg(long, default_value = "config/siptrack.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file; every error names its key and line.
    CheckConfig {
        /// The configuration file to check.
        file: PathBuf,
    },
    /// Replay captured SIP (pcap, pcapng) through the proxy and the lead
    /// pipeline on a virtual clock; JSON lines out.
    Replay {
        /// Captures (pcap or pcapng), replayed one after the other.
        #[arg(required = true)]
        pcaps: Vec<PathBuf>,
        /// Default: siptrack between every caller and a PBX at 192.0.2.1.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output file, or - for stdout.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        /// Where recorded calls' WAVs are written (created if missing).
        /// Default: a temporary directory removed at the end (the output
        /// keeps each WAV's SHA-256). Never media.recordings_dir: a replay
        /// must not overwrite the recording of the call it replays.
        #[arg(long)]
        recordings: Option<PathBuf>,
    },
    /// Print a fresh signed link to a call's recording (exit 1 when the
    /// call has none).
    RecordingUrl {
        /// The call's Call-ID, as in `GET /api/v1/calls` (`id`).
        call_id: String,
        /// The configuration file naming the database and the API address.
        #[arg(long, default_value = "config/siptrack.toml")]
        config: PathBuf,
    },
    /// Print the lead log (newest first) from the configured store.
    Leads {
        /// The configuration file naming the database (storage.url).
        #[arg(long, default_value = "config/siptrack.toml")]
        config: PathBuf,
        /// How many leads, newest first (1 to 100000, as the API's limit).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read a password from stdin (one line) and print its argon2 hash
    /// for `password_hash` of a `[[ui.users]]` entry.
    HashPassword,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(siptrack::log_lines::LogLines::default)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: &std::path::Path) -> Option<Config> {
    match Config::load(path) {
        Ok(c) => Some(c),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{}: {e}", path.display());
            }
            None
        }
    }
}

/// The commands that print for a reader (`leads | head`, `replay … |
/// less`) end quietly when the reader goes, as Unix tools do: Rust
/// ignores SIGPIPE, so `println!` into a closed pipe panicked with a
/// backtrace. `run` keeps ignoring it: a write to a TCP peer that went
/// away must be an error there, never the end of the proxy.
fn restore_sigpipe_for_printing(command: &Command) {
    if !matches!(command, Command::Run { .. }) {
        // SAFETY: signal(2) with SIG_DFL, before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    restore_sigpipe_for_printing(&cli.command);
    init_logging(cli.log_format);
    match cli.command {
        Command::CheckConfig { file } => match Config::load_checked(&file) {
            Ok(cfg) => {
                println!("{}: ok", file.display());
                println!("database: {}", cfg.storage.describe());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors.0 {
                    eprintln!("{}: {e}", file.display());
                }
                ExitCode::FAILURE
            }
        },
        Command::Leads {
            config,
            limit,
            json,
        } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::FAILURE;
            };
            match siptrack::leads::log::print(&cfg, limit.clamp(1, 100_000), json) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("siptrack: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::RecordingUrl { call_id, config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::FAILURE;
            };
            match siptrack::recording::cli::recording_url(&cfg, &call_id) {
                Ok(url) => {
                    println!("{url}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("siptrack: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Replay {
            pcaps,
            config,
            out,
            recordings,
        } => {
            let cfg = match &config {
                Some(path) => load(path),
                None => Config::parse(siptrack::replay::DEFAULT_CONFIG)
                    .map_err(|e| eprintln!("siptrack: built-in replay config: {e}"))
                    .ok(),
            };
            if let (None, Some(c)) = (&config, &cfg) {
                // Said, not assumed silently (trial, 2026-12-02: a Mexican
                // caller's national number came out with Russia's 7).
                eprintln!(
                    "siptrack: no --config: a PBX at sip:192.0.2.1:5060, every source trusted, callers' national numbers read with country code {} (phone.country_code); replay with --config for your own",
                    c.rewrite.phone.country_code
                );
            }
            let Some(cfg) = cfg else {
                return ExitCode::FAILURE;
            };
            match siptrack::replay::cli::run(&pcaps, &cfg, &out, recordings.as_deref()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("siptrack: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HashPassword => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().read_line(&mut line) {
                eprintln!("siptrack: reading the password from stdin: {e}");
                return ExitCode::FAILURE;
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("siptrack: an empty password; type one line on stdin");
                return ExitCode::FAILURE;
            }
            match siptrack::ui::login::new_password_hash(password) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("siptrack: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            let Some(cfg) = load(&config) else {
                return ExitCode::FAILURE;
            };
            match siptrack::server::run(cfg, &config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("siptrack: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
