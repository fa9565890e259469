//! `pmq run RECIPE.yaml`: merge → quantize → export → evaluate from one file, into one
//! directory, resumable.
//!
//! The recipe names the base, the experts with their calibration (and optional evaluation)
//! data, the merge (pmq's own form, whose keys are `pmq merge`'s flags, or mergekit's
//! configuration, inline or as a file: [`mergekit`]), the quantization (`pmq quantize`'s
//! flags), the outputs and the evaluation. Each step runs the same code as its command
//! (`pmq merge`, `pmq quantize`), so a recipe means exactly what those flags mean. See
//! [`steps`] for the directory layout and how reruns skip finished steps.

pub mod mergekit;
pub mod schema;
pub mod steps;

use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The recipe (YAML); relative paths in it are relative to its directory.
    pub recipe: PathBuf,
    /// Output directory [default: the recipe's `out`].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Recompute every step, even those finished with the same inputs and settings.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let recipe = schema::Recipe::load(&args.recipe)?;
    let out = match (&args.out, &recipe.out) {
        (Some(o), _) => o.clone(),
        (None, Some(o)) => o.clone(),
        (None, None) => anyhow::bail!(
            "{}: no output directory: set `out:` in the recipe or pass --out",
            args.recipe.display()
        ),
    };
    let summary = steps::run(&recipe, &out, args.force)?;
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
