//! The `banter` binary: the server (`banter serve`), the command-line client
//! and the load simulator, one subcommand each.

mod bench;
mod cli;
mod serve;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// jemalloc rather than the system allocator: frames, messages and their
/// futures are allocated on one thread and freed on another all the time,
/// which glibc's allocator handles with locks and chunk consolidation.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Banter: a real-time chat server and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "banter", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Measure a server: throughput, latency, and that nothing was lost.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("BANTER_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match &cli.command {
        // The bench's open-loop clock wakes senders from a thread of its own.
        Command::Bench(_) => {
            builder.global_queue_interval(bench::GLOBAL_QUEUE_INTERVAL);
        }
        // The main runtime runs every connection task: it delivers.
        Command::Serve(args) => {
            let workers = args.worker_threads.map_or_else(banter_server::threads::main_workers, usize::from);
            builder.worker_threads(workers);
            let priority = args.delivery_priority;
            builder.on_thread_start(move || banter_server::priority::enter_delivery_thread(priority));
        }
        Command::Client(_) => {}
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::serve(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Client(cmd) => cli::run(cmd).await,
        }
    })
}
