//! Federated mode (docs/training.md "Federated mode"): the model travels, the ECGs stay home.
//! [`site`] is the training a gateway runs at home ([`SiteTrainer`], the gateway's
//! `LocalTrainer`); [`coordinator`] is the scientist's `ecgfed train` for a federated cohort:
//! rounds against every site at once, secure aggregation of their masked updates, evaluation
//! at the gateways, `ModelTrained` with the rounds' entries as its inputs. Here: the model's
//! parameters as one flat vector, the order both sides agree on.

pub mod coordinator;
pub mod site;

pub use coordinator::{FederatedOutcome, RoundStats, run_federated};
pub use site::SiteTrainer;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::error::{Result, TrainerError};

/// Every variable of `vs` (weights, biases, batch-norm running statistics) in name order, each
/// flattened in its own (row-major) order: the model as a round carries it.
pub fn flatten(vs: &VarStore) -> Vec<f32> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Vec::new();
    for (_, v) in vars {
        let flat = v
            .detach()
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view([-1]);
        out.extend(Vec::<f32>::try_from(&flat).unwrap_or_default());
    }
    out
}

/// Number of values [`flatten`] gives for `vs`.
pub fn parameter_count(vs: &VarStore) -> usize {
    vs.variables().values().map(|v| v.numel()).sum()
}

/// Loads a flat vector (as [`flatten`] orders it) into `vs`.
pub fn load_flat(vs: &VarStore, values: &[f32]) -> Result<()> {
    let want = parameter_count(vs);
    if values.len() != want {
        return Err(TrainerError::ModelSize {
            expected: want,
            got: values.len(),
        });
    }
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut at = 0;
    tch::no_grad(|| {
        for (_, mut v) in vars {
            let n = v.numel();
            let src = Tensor::from_slice(&values[at..at + n])
                .view(v.size().as_slice())
                .to_device(v.device());
            v.copy_(&src);
            at += n;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variables made from values (no draw from libtorch's global generator, which other
    /// tests seed).
    fn store(offset: f32) -> VarStore {
        let vs = VarStore::new(tch::Device::Cpu);
        let root = vs.root();
        let t = |n: usize, shape: &[i64]| {
            let v: Vec<f32> = (0..n).map(|i| i as f32 + offset).collect();
            Tensor::from_slice(&v).view(shape)
        };
        // Made out of name order: the flat order is by name, then row-major.
        let _ = root.var_copy("z_fc", &t(6, &[2, 3]));
        let _ = root.var_copy("a_stem", &t(4, &[4]));
        let _ = root.var_copy("m_bn", &t(2, &[1, 2]));
        vs
    }

    #[test]
    fn flat_parameters_are_in_name_order_and_load_back() {
        let a = store(0.0);
        let flat = flatten(&a);
        assert_eq!(parameter_count(&a), 12);
        // a_stem 0..4, m_bn 0..2, z_fc 0..6 (row-major).
        let want: Vec<f32> = [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0].to_vec();
        assert_eq!(flat, want);
        let b = store(100.0);
        assert_ne!(flatten(&b), flat);
        load_flat(&b, &flat).unwrap();
        assert_eq!(flatten(&b), flat);
        assert!(matches!(
            load_flat(&b, &flat[1..]),
            Err(TrainerError::ModelSize {
                expected: 12,
                got: 11
            })
        ));
    }
}
