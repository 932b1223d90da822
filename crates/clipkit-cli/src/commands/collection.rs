//! What every collection command shares: opening the store named by `--store`, and loading
//! the model its vectors came from (by default the one recorded in the store, so
//! `clipkit search "…"` needs no `--model` after `clipkit index add -m … DIR`).

use anyhow::{anyhow, bail, Context, Result};
use clipkit_core::Clip;
use clipkit_index::{CollectionInfo, IndexError, Store, StoreAddress};

use crate::cli::{ModelArgs, StoreArgs};
use crate::settings::load_model;

pub fn address(args: &StoreArgs) -> Result<StoreAddress> {
    Ok(StoreAddress::parse(&args.store)?)
}

pub fn info_of(clip: &Clip) -> CollectionInfo {
    CollectionInfo {
        model: clip.name().to_owned(),
        dim: clip.embedding_dim(),
        preprocess: clip.preprocess_mode(),
        family: Some(clip.family().name().to_owned()),
    }
}

/// Opens a store that must already exist.
pub fn open_existing(args: &StoreArgs) -> Result<Box<dyn Store>> {
    Ok(clipkit_index::open(&address(args)?, None)?)
}

/// Opens (creating if needed) the store for `clip`'s embeddings.
pub fn open_for(args: &StoreArgs, clip: &Clip) -> Result<Box<dyn Store>> {
    clipkit_index::open(&address(args)?, Some(&info_of(clip))).map_err(|e| match e {
        // The library does not know the flag; the hint belongs to the command line.
        IndexError::ModelMismatch { ref stored, .. } => {
            anyhow!("{e} (use a new store, or --model {stored})")
        }
        other => other.into(),
    })
}

/// The model a store's queries must be embedded with: `--model` when given, else the
/// store's own; either way it must produce vectors the store can compare.
pub fn model_for(store: &dyn Store, args: &ModelArgs) -> Result<Clip> {
    let info = store.info();
    let defaulted = args.model == clipkit_core::hub::DEFAULT_MODEL
        && std::env::var_os("CLIPKIT_MODEL").is_none();
    let clip = if defaulted {
        let stored = ModelArgs {
            model: info.model.clone(),
            preprocess: Some(info.preprocess),
            ignore_exif: args.ignore_exif,
            jpeg_draft: args.jpeg_draft,
            max_pixels: args.max_pixels,
            batch_size: args.batch_size,
            device: args.device.clone(),
            precision: args.precision,
            cpu_kernels: args.cpu_kernels,
        };
        load_model(&stored)
            .with_context(|| format!("the store {} was built with this model", store.address()))?
    } else {
        load_model(args)?
    };
    if let Some(stored) = &info.family {
        if stored != clip.family().name() {
            bail!(clipkit_index::IndexError::ModelMismatch {
                store: store.address(),
                stored: info.describe(),
                requested: info_of(&clip).describe(),
            });
        }
    }
    if clip.embedding_dim() != info.dim {
        bail!(clipkit_index::IndexError::WrongVectorDimension {
            store: store.address(),
            expected: info.dim,
            got: clip.embedding_dim(),
        });
    }
    if clip.name() != info.model {
        eprintln!(
            "warning: the store {} holds embeddings of `{}`; querying with `{}`",
            store.address(),
            info.model,
            clip.name()
        );
    }
    Ok(clip)
}
