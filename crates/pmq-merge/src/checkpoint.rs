//! An input checkpoint: its tensor store, its `config.json`, and a label for messages.

use std::path::{Path, PathBuf};

use pmq_io::TensorStore;
use serde_json::Value;

use crate::MergeError;

/// One opened input model (base or expert).
pub struct Checkpoint {
    pub dir: PathBuf,
    /// "base (dir)" or "expert i (dir)", used in every message about this checkpoint.
    pub label: String,
    pub store: TensorStore,
    /// Parsed `config.json`, if the directory has one.
    pub config: Option<Value>,
}

impl Checkpoint {
    /// Opens `dir` (HF layout); `label` names it in messages.
    pub fn open(dir: &Path, label: String) -> Result<Self, MergeError> {
        if let Some(evidence) = pmq_io::gptq_evidence(dir) {
            let role = label.split(" (").next().unwrap_or("an input").to_string();
            return Err(MergeError::Quantized {
                message: pmq_io::gptq_refusal(dir, &evidence, &format!("the {role} of a merge")),
            });
        }
        let store = TensorStore::open_dir(dir)?;
        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            let text = std::fs::read_to_string(&config_path).map_err(|e| MergeError::Config {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
            Some(serde_json::from_str(&text).map_err(|e| MergeError::Config {
                path: config_path.clone(),
                reason: format!("invalid JSON: {e}"),
            })?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            label,
            store,
            config,
        })
    }

    /// Refuses an expert whose `config.json` names another `architectures` or `model_type`
    /// than the base's. Fields absent on either side are not compared.
    pub fn check_same_architecture(&self, expert: &Checkpoint) -> Result<(), MergeError> {
        let (Some(base), Some(other)) = (&self.config, &expert.config) else {
            if self.config.is_some() != expert.config.is_some() {
                tracing::warn!(
                    "only one of {} and {} has a config.json; architectures not compared",
                    self.label,
                    expert.label
                );
            }
            return Ok(());
        };
        for field in ["architectures", "model_type"] {
            if let (Some(a), Some(b)) = (base.get(field), other.get(field)) {
                if a != b {
                    return Err(MergeError::Architecture {
                        field,
                        base: self.dir.clone(),
                        expert: expert.label.clone(),
                        base_value: a.to_string(),
                        expert_value: b.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
