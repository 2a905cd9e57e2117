//! `ecgfed predict`: classifies WFDB (`.hea` + `.dat`/`.mat`) records from disk with a saved
//! model: the card's lead, rate and window; a record is cut into consecutive windows (one
//! zero-padded window when shorter) and its class is the argmax of the mean probability.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::data::{fit_window, pick_lead, to_rate};
use crate::error::{Result, TrainerError};
use crate::model::ResNet1d;
use crate::run::ModelCard;

/// A loaded model.
pub struct Model {
    /// The card.
    pub card: ModelCard,
    _vs: nn::VarStore,
    net: ResNet1d,
}

/// One record's prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The record's header file.
    pub record: String,
    /// Predicted class.
    pub class: String,
    /// Mean probability per class, in the card's class order.
    pub probabilities: Vec<f32>,
    /// Windows the record gave.
    pub windows: usize,
    /// The lead used.
    pub lead: String,
}

impl Model {
    /// Loads `dir/model-card.json` and `dir/model.safetensors`, checking the weights' SHA-256
    /// against the card.
    pub fn load(dir: &Path) -> Result<Model> {
        let card_path = dir.join("model-card.json");
        let text = std::fs::read(&card_path).map_err(|e| TrainerError::io(&card_path, e))?;
        let card: ModelCard = serde_json::from_slice(&text)
            .map_err(|e| TrainerError::spec(&card_path, e.to_string()))?;
        let w = dir.join("model.safetensors");
        let bytes = std::fs::read(&w).map_err(|e| TrainerError::io(&w, e))?;
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        if sha != card.weights_sha256 {
            return Err(TrainerError::spec(
                &w,
                format!(
                    "SHA-256 {sha} differs from the model card's {}",
                    card.weights_sha256
                ),
            ));
        }
        if card.arch.features > 0 {
            return Err(TrainerError::spec(
                &card_path,
                "the model takes beat features (RR intervals, templates) of beat windows; predict \
                 classifies whole records and needs a model without them",
            ));
        }
        let mut vs = nn::VarStore::new(Device::Cpu);
        let net = ResNet1d::new(&vs.root(), &card.arch);
        vs.load(&w)?;
        Ok(Model { card, _vs: vs, net })
    }

    /// Classifies one record: its `.hea` file (or the data file next to it), or an EDF/BDF,
    /// DICOM or aECG file.
    pub fn predict_record(&self, path: &Path) -> Result<Prediction> {
        use ecgfed_datasets::{aecg, dicom, edf};
        let whole_file = edf::is_edf(path) || aecg::is_aecg(path) || dicom::is_dicom(path);
        let hea: PathBuf = if path.extension().is_some_and(|e| e == "hea") || whole_file {
            path.to_path_buf()
        } else {
            path.with_extension("hea")
        };
        let err = |reason: String| TrainerError::Record {
            path: hea.display().to_string(),
            reason,
        };
        let rec =
            ecgfed_datasets::load::load_record(&hea, ecgfed_datasets::record::Verification::Warn)
                .map_err(|e| err(e.to_string()))?;
        let li = pick_lead(&rec.leads, &self.card.signal.lead).ok_or_else(|| {
            err(format!(
                "no lead {} among {:?}",
                self.card.signal.lead, rec.leads
            ))
        })?;
        // Only the lead the model reads: the record's other signals may be no voltage at all.
        let lead = rec.lead_mv(li).map_err(|e| err(e.to_string()))?;
        let fs = rec.fs() * f64::from(rec.samples_per_frame(li));
        let samples =
            to_rate(&lead, fs as f32, &self.card.signal).map_err(|e| err(e.to_string()))?;
        let len = self.card.window_samples;
        let mut windows: Vec<Vec<f32>> = samples
            .chunks_exact(len)
            .map(|c| fit_window(c, len))
            .collect();
        if windows.is_empty() {
            windows.push(fit_window(&samples, len));
        }
        let flat: Vec<f32> = windows.iter().flatten().copied().collect();
        let x = Tensor::from_slice(&flat).view([windows.len() as i64, 1, len as i64]);
        let p = tch::no_grad(|| {
            self.net
                .forward_t(&x, false)
                .softmax(-1, Kind::Float)
                .mean_dim(0, false, Kind::Float)
        });
        let probabilities = Vec::<f32>::try_from(&p)?;
        let best = probabilities
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
        Ok(Prediction {
            record: hea.display().to_string(),
            class: self.card.classes[best].name.clone(),
            probabilities,
            windows: windows.len(),
            lead: rec.leads[li].clone(),
        })
    }
}
