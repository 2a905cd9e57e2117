//! The training loop: class-weighted cross-entropy, AdamW, cosine or step learning rate,
//! early stopping on validation macro-F1 (the best epoch's weights are kept), deterministic
//! seeds, a progress bar with loss and F1 per epoch.

use std::collections::HashMap;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::data::{CohortData, Part};
use crate::error::Result;
use crate::evaluation::scores;
use crate::model::{Arch, ResNet1d};
use crate::spec::CohortSpec;

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean validation loss (null without a validation set).
    pub val_loss: Option<f64>,
    /// Validation macro-F1 over the scored classes, per window.
    pub val_macro_f1: Option<f64>,
    /// Validation macro-F1 per record (mean probability over a record's windows).
    pub val_macro_f1_records: Option<f64>,
    /// Training windows per second in this epoch.
    pub windows_per_sec: f64,
}

/// A trained network with its history.
pub struct Trained {
    /// The variables (best epoch's weights).
    pub vs: nn::VarStore,
    /// The network.
    pub model: ResNet1d,
    /// The architecture.
    pub arch: Arch,
    /// Per-epoch figures.
    pub history: Vec<EpochStats>,
    /// The epoch whose weights were kept.
    pub best_epoch: usize,
    /// Training steps taken.
    pub steps: usize,
}

/// The architecture a spec asks for.
pub fn arch_of(spec: &CohortSpec) -> Arch {
    Arch {
        in_channels: 1,
        classes: spec.classes.len() as i64,
        channels: spec.train.channels.clone(),
        blocks_per_stage: spec.train.blocks_per_stage,
        kernel: spec.train.kernel,
        dropout: spec.train.dropout,
        features: if spec.train.beat_features {
            crate::data::BEAT_FEATURES as i64
        } else {
            0
        },
    }
}

/// Rows `idx` of a row-major matrix (`row(i)`, `width` values each) as a tensor of `shape`
/// (whose first dimension is `idx.len()`).
fn gather<'a>(
    idx: &[usize],
    width: usize,
    row: impl Fn(usize) -> &'a [f32],
    shape: &[i64],
    device: Device,
) -> Tensor {
    let mut v = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        v.extend_from_slice(row(i));
    }
    Tensor::from_slice(&v).view(shape).to_device(device)
}

/// The (batch, features) tensor of rows `idx`; `None` when the rows carry no features.
pub fn batch_features(data: &CohortData, idx: &[usize], device: Device) -> Option<Tensor> {
    (data.features > 0).then(|| {
        let shape = [idx.len() as i64, data.features as i64];
        gather(idx, data.features, |i| data.row_features(i), &shape, device)
    })
}

/// A (batch, 1, window) tensor of rows `idx`.
pub fn batch_tensor(data: &CohortData, idx: &[usize], device: Device) -> Tensor {
    let shape = [idx.len() as i64, 1, data.window as i64];
    gather(idx, data.window, |i| data.row(i), &shape, device)
}

/// A training batch with augmentation: each row scaled by U(0.85, 1.15) and shifted by up to
/// a tenth of the window (zero-filled), from `rng`.
fn augmented_batch(
    data: &CohortData,
    idx: &[usize],
    rng: &mut rand_chacha::ChaCha8Rng,
    device: Device,
) -> Tensor {
    use rand::Rng;
    let w = data.window;
    let max_shift = (w / 10) as i64;
    let mut v = vec![0f32; idx.len() * w];
    for (b, &i) in idx.iter().enumerate() {
        let scale: f32 = rng.gen_range(0.85..1.15);
        let shift = if max_shift > 0 {
            rng.gen_range(-max_shift..=max_shift)
        } else {
            0
        };
        let src = data.row(i);
        let dst = &mut v[b * w..(b + 1) * w];
        for (t, d) in dst.iter_mut().enumerate() {
            let s = t as i64 - shift;
            if (0..w as i64).contains(&s) {
                *d = src[s as usize] * scale;
            }
        }
    }
    Tensor::from_slice(&v)
        .view([idx.len() as i64, 1, w as i64])
        .to_device(device)
}

/// The signal input of rows `idx` for `model`: their windows (augmented from `augment`'s
/// stream when given), or an empty (batch, 1, 0) tensor for a network that does not read the
/// signal, so that no window is copied for it.
fn signal_input(
    model: &ResNet1d,
    data: &CohortData,
    idx: &[usize],
    augment: Option<&mut rand_chacha::ChaCha8Rng>,
    device: Device,
) -> Tensor {
    match augment {
        _ if !model.reads_signal() => {
            Tensor::zeros([idx.len() as i64, 1, 0], (Kind::Float, device))
        }
        Some(rng) => augmented_batch(data, idx, rng, device),
        None => batch_tensor(data, idx, device),
    }
}

/// Softmax probabilities of rows `idx`, in evaluation mode, row-major over all rows of
/// `data` (`data.len() × classes`; rows not in `idx` stay 0).
pub fn predict(model: &ResNet1d, data: &CohortData, idx: &[usize], device: Device) -> Vec<f32> {
    let k = model.classes();
    let mut out = vec![0f32; data.len() * k];
    tch::no_grad(|| {
        for chunk in idx.chunks(256) {
            let feats = batch_features(data, chunk, device);
            let x = signal_input(model, data, chunk, None, device);
            let p = model
                .forward_rows(&x, feats.as_ref(), false)
                .softmax(-1, Kind::Float)
                .to_device(Device::Cpu)
                .contiguous()
                .view([-1]);
            let p = Vec::<f32>::try_from(&p).unwrap_or_default();
            for (&i, row) in chunk.iter().zip(p.chunks_exact(k)) {
                out[i * k..(i + 1) * k].copy_from_slice(row);
            }
        }
    });
    out
}

fn lr_at(spec: &CohortSpec, step: usize, total: usize, epoch: usize) -> f64 {
    let t = &spec.train;
    if t.schedule == "step" {
        return t.lr * 0.5f64.powi((epoch / t.step_epochs.max(1)) as i32);
    }
    let f = step as f64 / total.max(1) as f64;
    t.lr * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * f).cos()))
}

/// Class weights of the loss: (rows / rows of the class)^`power`, scaled to mean 1 over the
/// training rows; 0 for a class without training rows.
fn class_weights(data: &CohortData, train_idx: &[usize], k: usize, power: f64) -> Vec<f32> {
    let mut counts = vec![0f64; k];
    for &i in train_idx {
        counts[data.meta[i].class] += 1.0;
    }
    class_weights_of(&counts, power)
}

/// Validation loss and macro-F1 per window and per record (`None` without validation rows).
fn validate(
    model: &ResNet1d,
    data: &CohortData,
    val_idx: &[usize],
    spec: &CohortSpec,
    classes: &[String],
    device: Device,
) -> (Option<f64>, Option<f64>, Option<f64>) {
    if val_idx.is_empty() {
        return (None, None, None);
    }
    let k = spec.classes.len();
    let probs = predict(model, data, val_idx, device);
    let sc = scores(val_idx, &data.meta, &probs, k, classes, &spec.scored);
    let nll: f64 = val_idx
        .iter()
        .map(|&i| -(probs[i * k + data.meta[i].class].max(1e-7) as f64).ln())
        .sum::<f64>()
        / val_idx.len() as f64;
    (Some(nll), sc.windows.macro_f1, sc.records.macro_f1)
}

/// One epoch's figures on the progress bar and, with `progress`, as a line above it (plain
/// lines in a log file).
fn report_epoch(pb: &ProgressBar, progress: bool, epochs: usize, stats: &EpochStats) {
    let fmt = |v: Option<f64>, digits: usize| v.map_or("-".into(), |v| format!("{v:.digits$}"));
    pb.set_message(format!(
        "epoch {}/{epochs} loss {:.4} val F1 {}",
        stats.epoch,
        stats.train_loss,
        fmt(stats.val_macro_f1, 3)
    ));
    if progress {
        pb.suspend(|| eprintln!(
            "epoch {:>3}  lr {:.2e}  train loss {:.4}  val loss {}  val macro-F1 windows {} records {}  {:.0} windows/s",
            stats.epoch,
            stats.lr,
            stats.train_loss,
            fmt(stats.val_loss, 4),
            fmt(stats.val_macro_f1, 4),
            fmt(stats.val_macro_f1_records, 4),
            stats.windows_per_sec
        ));
    }
}

/// Trains on the `Train` rows, stopping early on the `Val` rows' macro-F1.
pub fn train(
    data: &CohortData,
    parts: &[Part],
    spec: &CohortSpec,
    device: Device,
    progress: bool,
) -> Result<Trained> {
    let t = &spec.train;
    if t.threads > 0 {
        tch::set_num_threads(t.threads);
    }
    tch::manual_seed(spec.seed as i64);
    let train_idx: Vec<usize> = (0..data.len())
        .filter(|&i| parts[i] == Part::Train)
        .collect();
    let val_idx: Vec<usize> = (0..data.len()).filter(|&i| parts[i] == Part::Val).collect();
    if train_idx.is_empty() {
        return Err(crate::error::TrainerError::NoTrainingRows);
    }
    let arch = arch_of(spec);
    if arch.features as usize != data.features {
        return Err(crate::error::TrainerError::Features {
            network: arch.features as usize,
            data: data.features,
        });
    }
    let vs = nn::VarStore::new(device);
    let model = ResNet1d::new(&vs.root(), &arch);
    let mut opt = nn::AdamW {
        wd: t.weight_decay,
        ..Default::default()
    }
    .build(&vs, t.lr)?;
    let weights = class_weights(data, &train_idx, spec.classes.len(), t.class_weight_power);
    let mut run = EpochLoop {
        data,
        spec,
        device,
        model: &model,
        class_w: Tensor::from_slice(&weights).to_device(device),
        steps_per_epoch: steps_per_epoch(train_idx.len(), t.batch_size, t.max_steps_per_epoch),
        step: 0,
        pb: ProgressBar::hidden(),
    };
    run.pb = progress_bar(progress, run.steps_per_epoch * t.epochs);
    let classes = spec.class_names();
    let mut history = Vec::new();
    let mut best: Option<Best> = None;
    let mut since_best = 0usize;
    for epoch in 1..=t.epochs {
        let (train_loss, seen, lr, secs) = run.epoch(&mut opt, &train_idx, epoch);
        let (val_loss, val_f1, val_f1_records) =
            validate(&model, data, &val_idx, spec, &classes, device);
        let stats = EpochStats {
            epoch,
            lr,
            train_loss,
            val_loss,
            val_macro_f1: val_f1,
            val_macro_f1_records: val_f1_records,
            windows_per_sec: seen as f64 / secs,
        };
        report_epoch(&run.pb, progress, t.epochs, &stats);
        history.push(stats);
        let chosen = if t.select_on == "records" {
            val_f1_records
        } else {
            val_f1
        };
        let score = chosen.unwrap_or(f64::NEG_INFINITY);
        // Without a validation set every epoch is the best so far: the last one is kept.
        if val_idx.is_empty() || best.as_ref().is_none_or(|b| score > b.score) {
            best = Some(Best::of(&vs, score, epoch));
            since_best = 0;
            continue;
        }
        since_best += 1;
        if !val_idx.is_empty() && since_best >= t.patience.max(1) {
            if progress {
                run.pb.suspend(|| {
                    eprintln!("early stop: no better validation macro-F1 for {since_best} epochs")
                });
            }
            break;
        }
    }
    run.pb.finish_and_clear();
    let best_epoch = match &best {
        Some(b) => b.restore(&vs),
        None => t.epochs,
    };
    Ok(Trained {
        steps: run.step,
        vs,
        model,
        arch,
        history,
        best_epoch,
    })
}

/// One site's local training in a federated round.
pub struct LocalRun<'a> {
    /// The site's rows.
    pub data: &'a CohortData,
    /// Its training rows.
    pub train_idx: &'a [usize],
    /// The cohort spec (batch size, weight decay, augmentation).
    pub spec: &'a CohortSpec,
    /// Class weights of the loss (the cohort's, the same at every site).
    pub class_weights: &'a [f32],
    /// Learning rate of the round.
    pub lr: f64,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Most optimiser steps (0: no limit).
    pub max_steps: usize,
    /// FedProx's μ (0: plain FedAvg).
    pub mu: f64,
    /// Seed of the shuffle and the augmentation.
    pub seed: u64,
    /// Device.
    pub device: Device,
    /// DP-SGD instead of plain steps: (clipping norm C, noise multiplier σ).
    pub dp: Option<(f64, f64)>,
}

/// What a local run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalStats {
    /// Mean training loss (without the proximal term).
    pub loss: f64,
    /// Optimiser steps.
    pub steps: usize,
    /// DP-SGD: the Poisson sampling rate of a step (expected batch size / training rows).
    pub sample_rate: f64,
}

/// `n` draws of N(0, 1) from the operating system's random source (Box–Muller over a ChaCha12
/// stream seeded from it): DP noise no seed in a spec or a log can predict.
fn gaussian_noise(n: usize) -> Vec<f32> {
    use rand::Rng;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.r#gen::<f64>();
        let u2: f64 = rng.r#gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

impl LocalRun<'_> {
    /// Trains `model` (whose variables are `vs`, holding the global weights) with AdamW at a
    /// constant rate, adding `mu/2 · ‖w − w_global‖²` over the trainable weights when μ > 0.
    /// With `dp`, each step is DP-SGD ([`LocalRun::dp_step`]).
    pub fn run(&self, model: &ResNet1d, vs: &nn::VarStore) -> Result<LocalStats> {
        if let Some((clip, sigma)) = self.dp {
            return self.run_dp(model, vs, clip, sigma);
        }
        let t = &self.spec.train;
        let mut opt = nn::AdamW {
            wd: t.weight_decay,
            ..Default::default()
        }
        .build(vs, self.lr)?;
        let global: Vec<(Tensor, Tensor)> = if self.mu > 0.0 {
            tch::no_grad(|| {
                vs.trainable_variables()
                    .into_iter()
                    .map(|v| {
                        let g = v.detach().copy();
                        (v, g)
                    })
                    .collect()
            })
        } else {
            Vec::new()
        };
        let class_w = Tensor::from_slice(self.class_weights).to_device(self.device);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        let (mut loss_sum, mut seen, mut steps) = (0.0, 0usize, 0usize);
        'epochs: for _ in 0..self.epochs {
            let mut order = self.train_idx.to_vec();
            order.shuffle(&mut rng);
            for chunk in order.chunks(t.batch_size) {
                if self.max_steps > 0 && steps >= self.max_steps {
                    break 'epochs;
                }
                let x = signal_input(
                    model,
                    self.data,
                    chunk,
                    t.augment.then_some(&mut rng),
                    self.device,
                );
                let y: Vec<i64> = chunk
                    .iter()
                    .map(|&i| self.data.meta[i].class as i64)
                    .collect();
                let y = Tensor::from_slice(&y).to_device(self.device);
                let feats = batch_features(self.data, chunk, self.device);
                let logits = model.forward_rows(&x, feats.as_ref(), true);
                let loss =
                    logits.cross_entropy_loss(&y, Some(&class_w), tch::Reduction::Mean, -100, 0.0);
                loss_sum += loss.double_value(&[]) * chunk.len() as f64;
                let total = if global.is_empty() {
                    loss
                } else {
                    let prox = global
                        .iter()
                        .map(|(w, g)| (w - g).square().sum(Kind::Float))
                        .fold(Tensor::zeros([], (Kind::Float, self.device)), |a, b| a + b);
                    loss + prox * (self.mu / 2.0)
                };
                opt.backward_step(&total);
                seen += chunk.len();
                steps += 1;
            }
        }
        Ok(LocalStats {
            loss: loss_sum / seen.max(1) as f64,
            steps,
            sample_rate: 0.0,
        })
    }

    /// DP-SGD (Abadi et al. 2016): as many steps as the plain run would take, each over a
    /// Poisson sample of the training rows at rate q = batch size / rows; every row's gradient
    /// (of the loss, with batch normalisation on its running statistics, which are not
    /// updated, and no dropout, so that it depends on that row alone) clipped to norm `clip`
    /// over all trainable weights; their sum plus N(0, (σ·clip)²) noise per coordinate,
    /// divided by the expected batch size, is the step's gradient (plus FedProx's
    /// `μ (w − w_global)`, which no row touches), taken by AdamW.
    fn run_dp(
        &self,
        model: &ResNet1d,
        vs: &nn::VarStore,
        clip: f64,
        sigma: f64,
    ) -> Result<LocalStats> {
        use rand::Rng;
        let t = &self.spec.train;
        let n = self.train_idx.len();
        let (q, steps) = dp_schedule(n, t.batch_size, self.epochs, self.max_steps);
        let mut opt = nn::AdamW {
            wd: t.weight_decay,
            ..Default::default()
        }
        .build(vs, self.lr)?;
        let params = vs.trainable_variables();
        let global: Vec<Tensor> =
            tch::no_grad(|| params.iter().map(|w| w.detach().copy()).collect());
        let class_w = Tensor::from_slice(self.class_weights).to_device(self.device);
        // Sampling and augmentation from the OS random source: the accountant's amplification
        // by sampling holds only if no one can predict the sample.
        let mut rng = rand_chacha::ChaCha8Rng::from_entropy();
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for _ in 0..steps {
            let batch: Vec<usize> = self
                .train_idx
                .iter()
                .copied()
                .filter(|_| rng.r#gen::<f64>() < q)
                .collect();
            let mut sum: Vec<Tensor> = params.iter().map(|p| p.zeros_like()).collect();
            for &i in &batch {
                opt.zero_grad();
                let x = signal_input(
                    model,
                    self.data,
                    &[i],
                    t.augment.then_some(&mut rng),
                    self.device,
                );
                let y =
                    Tensor::from_slice(&[self.data.meta[i].class as i64]).to_device(self.device);
                let feats = batch_features(self.data, &[i], self.device);
                // Summed, not averaged: with one row a weighted mean would drop its class weight.
                let loss = model
                    .forward_rows(&x, feats.as_ref(), false)
                    .cross_entropy_loss(&y, Some(&class_w), tch::Reduction::Sum, -100, 0.0);
                loss.backward();
                loss_sum += loss.double_value(&[]);
                seen += 1;
                tch::no_grad(|| {
                    // A weight the row does not reach has no gradient (zero).
                    let grads: Vec<Option<Tensor>> = params
                        .iter()
                        .map(|p| Some(p.grad()).filter(Tensor::defined))
                        .collect();
                    let norm = grads
                        .iter()
                        .flatten()
                        .map(|g| g.square().sum(Kind::Double).double_value(&[]))
                        .sum::<f64>()
                        .sqrt();
                    let scale = (clip / (norm + 1e-12)).min(1.0);
                    for (acc, g) in sum.iter_mut().zip(&grads) {
                        if let Some(g) = g {
                            *acc += g * scale;
                        }
                    }
                });
            }
            let expected = q * n as f64;
            let noisy: Vec<Tensor> = tch::no_grad(|| {
                sum.iter()
                    .zip(&params)
                    .zip(&global)
                    .map(|((acc, p), g0)| {
                        let noise = Tensor::from_slice(&gaussian_noise(acc.numel()))
                            .view(acc.size().as_slice())
                            .to_device(self.device);
                        let g = (acc + noise * (sigma * clip)) / expected;
                        if self.mu > 0.0 {
                            g + (p - g0) * self.mu
                        } else {
                            g
                        }
                    })
                    .collect()
            });
            // The step's gradient set through a surrogate whose gradient it is: Σ ⟨w, g⟩.
            opt.zero_grad();
            params
                .iter()
                .zip(&noisy)
                .map(|(p, g)| (p * g).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, self.device)), |a, b| a + b)
                .backward();
            opt.step();
        }
        Ok(LocalStats {
            loss: loss_sum / seen.max(1) as f64,
            steps,
            sample_rate: q,
        })
    }
}

/// Class weights of the loss from rows per class: (rows / rows of the class)^`power`, scaled
/// to mean 1 over the rows; 0 for a class without rows (as [`train`] computes them from its
/// training rows).
pub fn class_weights_of(counts: &[f64], power: f64) -> Vec<f32> {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 {
        return vec![1.0; counts.len()];
    }
    let raw: Vec<f64> = counts
        .iter()
        .map(|&c| {
            if c > 0.0 {
                (total / c).powf(power)
            } else {
                0.0
            }
        })
        .collect();
    let mean = raw.iter().zip(counts).map(|(w, c)| w * c).sum::<f64>() / total;
    raw.iter().map(|w| (w / mean) as f32).collect()
}

/// The learning rate of round `round` (from 1) of `rounds`: the spec's cosine schedule over
/// rounds (peak `lr`, floor 1 % of it), or its step schedule with rounds for epochs.
pub fn round_lr(spec: &CohortSpec, round: usize, rounds: usize) -> f64 {
    lr_at(
        spec,
        round.saturating_sub(1),
        rounds,
        round.saturating_sub(1),
    )
}

/// DP-SGD's schedule over `rows` training rows: the Poisson sampling rate (batch size / rows,
/// at most 1) and the steps (as many as plain training would take: `epochs` passes of
/// ⌈rows / batch⌉, at most `max_steps` when that is > 0).
pub fn dp_schedule(rows: usize, batch: usize, epochs: usize, max_steps: usize) -> (f64, usize) {
    let q = (batch as f64 / rows.max(1) as f64).min(1.0);
    let steps = epochs * rows.div_ceil(batch);
    (
        q,
        if max_steps > 0 {
            steps.min(max_steps)
        } else {
            steps
        },
    )
}

/// Optimiser steps per epoch: every training row once, or at most `max` steps (0: no limit).
fn steps_per_epoch(rows: usize, batch_size: usize, max: usize) -> usize {
    let s = rows.div_ceil(batch_size);
    if max > 0 { s.min(max) } else { s }
}

/// The bar of `total` steps on standard error (hidden without `progress`).
fn progress_bar(progress: bool, total: usize) -> ProgressBar {
    let pb = if progress {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// What every epoch of one training run shares, and the steps taken so far.
struct EpochLoop<'a> {
    data: &'a CohortData,
    spec: &'a CohortSpec,
    device: Device,
    model: &'a ResNet1d,
    class_w: Tensor,
    steps_per_epoch: usize,
    step: usize,
    pb: ProgressBar,
}

impl EpochLoop<'_> {
    /// One epoch over the training rows `train_idx`, shuffled by the epoch's seed: the mean
    /// training loss, the windows seen, the last learning rate and the seconds it took.
    fn epoch(
        &mut self,
        opt: &mut nn::Optimizer,
        train_idx: &[usize],
        epoch: usize,
    ) -> (f64, usize, f64, f64) {
        let (t, data, device) = (&self.spec.train, self.data, self.device);
        let total = self.steps_per_epoch * t.epochs;
        let mut order = train_idx.to_vec();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.spec.seed ^ (epoch as u64) << 32);
        order.shuffle(&mut rng);
        let started = Instant::now();
        let (mut loss_sum, mut seen, mut lr) = (0.0, 0usize, t.lr);
        for chunk in order.chunks(t.batch_size).take(self.steps_per_epoch) {
            lr = lr_at(self.spec, self.step, total, epoch - 1);
            opt.set_lr(lr);
            let x = signal_input(
                self.model,
                data,
                chunk,
                t.augment.then_some(&mut rng),
                device,
            );
            let y: Vec<i64> = chunk.iter().map(|&i| data.meta[i].class as i64).collect();
            let y = Tensor::from_slice(&y).to_device(device);
            let feats = batch_features(data, chunk, device);
            let logits = self.model.forward_rows(&x, feats.as_ref(), true);
            let loss =
                logits.cross_entropy_loss(&y, Some(&self.class_w), tch::Reduction::Mean, -100, 0.0);
            opt.backward_step(&loss);
            loss_sum += loss.double_value(&[]) * chunk.len() as f64;
            seen += chunk.len();
            self.step += 1;
            self.pb.inc(1);
        }
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        (loss_sum / seen.max(1) as f64, seen, lr, secs)
    }
}

/// The best epoch so far: its score, its number and a copy of its weights.
struct Best {
    score: f64,
    epoch: usize,
    weights: HashMap<String, Tensor>,
}

impl Best {
    /// The weights of `vs` now, as epoch `epoch` of score `score`.
    fn of(vs: &nn::VarStore, score: f64, epoch: usize) -> Best {
        let weights = tch::no_grad(|| {
            vs.variables()
                .into_iter()
                .map(|(n, v)| (n, v.detach().copy()))
                .collect()
        });
        Best {
            score,
            epoch,
            weights,
        }
    }

    /// Puts the kept weights back into `vs`; returns the epoch they are from.
    fn restore(&self, vs: &nn::VarStore) -> usize {
        tch::no_grad(|| {
            for (n, mut v) in vs.variables() {
                if let Some(s) = self.weights.get(&n) {
                    v.copy_(s);
                }
            }
        });
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{BEAT_FEATURES, RowMeta};
    use crate::spec::CohortSpec;
    use rand::Rng;

    #[test]
    fn linear_model_without_validation_keeps_its_last_epoch() {
        // Beat features only (no convolutions), no validation rows: the class is the quadrant
        // of features 0 and 1, which a linear classifier separates.
        let mut spec: CohortSpec =
            toml::from_str("purpose = \"t\"\ntask = \"aami-beats\"\n").unwrap();
        spec.fill_defaults();
        spec.train.channels = vec![];
        spec.train.beat_features = true;
        spec.train.dropout = 0.0;
        spec.train.val_fraction = 0.0;
        spec.train.epochs = 10;
        spec.train.lr = 0.1;
        spec.train.batch_size = 64;
        assert_eq!(spec.classes.len(), 4);
        let rows = 800;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let f: Vec<f32> = (0..rows * BEAT_FEATURES)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect();
        let class = |i: usize| {
            usize::from(f[i * BEAT_FEATURES] > 0.0) * 2
                + usize::from(f[i * BEAT_FEATURES + 1] > 0.0)
        };
        let meta: Vec<RowMeta> = (0..rows)
            .map(|i| RowMeta {
                site: "s".into(),
                source: "x".into(),
                segment_id: format!("x/r@{i}"),
                record_id: "r".into(),
                group: "r".into(),
                sex: "unknown".into(),
                age_band: "unknown".into(),
                label: String::new(),
                class: class(i),
                held_out: false,
                centre_ms: 0,
            })
            .collect();
        let data = CohortData {
            window: 4,
            windows: vec![0.0; rows * 4],
            meta,
            features: BEAT_FEATURES,
            feature_values: f.clone(),
            other_lead: vec![],
        };
        let parts = vec![Part::Train; rows];
        let trained = train(&data, &parts, &spec, Device::Cpu, false).unwrap();
        assert_eq!((trained.best_epoch, trained.history.len()), (10, 10));
        let idx: Vec<usize> = (0..rows).collect();
        let p = predict(&trained.model, &data, &idx, Device::Cpu);
        let right = (0..rows)
            .filter(|&i| {
                let row = &p[i * 4..(i + 1) * 4];
                let best = (0..4).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
                best == class(i)
            })
            .count();
        assert!(right * 10 >= rows * 9, "{right} of {rows}");
    }
}
