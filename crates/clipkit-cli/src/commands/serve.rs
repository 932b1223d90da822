//! `clipkit serve`: load the model (and the collection), then hand both to clipkit-server and
//! run until Ctrl-C or SIGTERM, draining requests in flight before exiting.

use anyhow::{Context, Result};

use super::collection::{model_for, open_existing};
use super::Outcome;
use crate::cli::{ServeArgs, StoreArgs};
use crate::settings::{load_model, server_config};

pub fn run(args: &ServeArgs) -> Result<Outcome> {
    // Flags are checked before the (slower) model load, then again with its name.
    server_config(args, &args.model.model)?;
    let (clip, store) = match &args.store {
        Some(address) => {
            let store = open_existing(&StoreArgs {
                store: address.clone(),
            })?;
            let clip = model_for(&*store, &args.model)?;
            (clip, Some(store))
        }
        None => (load_model(&args.model)?, None),
    };
    let config = server_config(args, clip.name())?;
    let server = clipkit_server::Server::new(clip, store, config)?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.http_threads {
        anyhow::ensure!(n > 0, "--http-threads must be at least 1");
        runtime.worker_threads(n);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("clipkit-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let local = listener.local_addr()?;
        // Tests and scripts read this line to find a port chosen with :0.
        eprintln!("clipkit serve: listening on http://{local}");
        server
            .serve(listener, clipkit_server::shutdown_signal())
            .await?;
        eprintln!("clipkit serve: stopped");
        anyhow::Ok(())
    })?;
    Ok(Outcome::Success)
}
