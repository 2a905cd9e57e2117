//! The residual 1-D CNN (libtorch through tch): a strided stem, stages of pre-activation-free
//! residual blocks (conv–BN–ReLU–conv–BN plus a projected shortcut where the shape changes),
//! global average and max pooling, dropout and a linear classifier. The same architecture is in
//! `bench/torch_baseline.py` for the throughput comparison.

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT};

/// Architecture settings (saved in the model card).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arch {
    /// Input leads (channels).
    pub in_channels: i64,
    /// Classes.
    pub classes: i64,
    /// Channels per stage; every stage after the first halves the length. Empty: no
    /// convolutional path, the network is a linear classifier over the scalar features
    /// (multinomial logistic regression; needs `features` > 0).
    pub channels: Vec<i64>,
    /// Residual blocks per stage.
    pub blocks_per_stage: usize,
    /// Kernel size (odd).
    pub kernel: i64,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Scalar features per row besides the signal (RR intervals for beats; 0: none). They
    /// pass a linear layer of [`FEATURE_UNITS`] units with ReLU and join the pooled
    /// convolutional features before the classifier.
    #[serde(default)]
    pub features: i64,
}

/// Units of the layer that embeds the scalar features.
pub(crate) const FEATURE_UNITS: i64 = 32;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv1D {
    nn::conv1d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding: k / 2,
            bias: false,
            ..Default::default()
        },
    )
}

#[derive(Debug)]
struct Block {
    c1: nn::Conv1D,
    b1: nn::BatchNorm,
    c2: nn::Conv1D,
    b2: nn::BatchNorm,
    short: Option<(nn::Conv1D, nn::BatchNorm)>,
}

impl Block {
    fn new(p: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> Block {
        let short = (cin != cout || stride != 1).then(|| {
            (
                conv(p / "sc", cin, cout, 1, stride),
                nn::batch_norm1d(p / "sc_bn", cout, Default::default()),
            )
        });
        Block {
            c1: conv(p / "c1", cin, cout, k, stride),
            b1: nn::batch_norm1d(p / "bn1", cout, Default::default()),
            c2: conv(p / "c2", cout, cout, k, 1),
            b2: nn::batch_norm1d(p / "bn2", cout, Default::default()),
            short,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x
            .apply(&self.c1)
            .apply_t(&self.b1, train)
            .relu()
            .apply(&self.c2)
            .apply_t(&self.b2, train);
        let s = match &self.short {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + s).relu()
    }
}

/// The network.
#[derive(Debug)]
pub struct ResNet1d {
    stem: Option<(nn::Conv1D, nn::BatchNorm)>,
    blocks: Vec<Block>,
    feat: Option<nn::Linear>,
    features: i64,
    fc: nn::Linear,
    dropout: f64,
    classes: usize,
}

impl ResNet1d {
    /// Builds the network's variables under `p`.
    pub fn new(p: &nn::Path, a: &Arch) -> ResNet1d {
        let stem = a.channels.first().map(|&c0| {
            (
                conv(p / "stem", a.in_channels, c0, 15, 2),
                nn::batch_norm1d(p / "stem_bn", c0, Default::default()),
            )
        });
        let mut blocks = Vec::new();
        let mut cin = a.channels.first().copied().unwrap_or(0);
        for (s, &cout) in a.channels.iter().enumerate() {
            for b in 0..a.blocks_per_stage {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                blocks.push(Block::new(
                    &(p / format!("s{s}b{b}")),
                    cin,
                    cout,
                    a.kernel,
                    stride,
                ));
                cin = cout;
            }
        }
        // Features join a convolutional path through their own layer, or alone go straight
        // into the classifier.
        let feat = (a.features > 0 && stem.is_some())
            .then(|| nn::linear(p / "feat", a.features, FEATURE_UNITS, Default::default()));
        let joined = match (&stem, &feat) {
            (None, _) => a.features,
            (Some(_), Some(_)) => 2 * cin + FEATURE_UNITS,
            (Some(_), None) => 2 * cin,
        };
        let fc = nn::linear(p / "fc", joined, a.classes, Default::default());
        ResNet1d {
            stem,
            blocks,
            feat,
            features: a.features,
            fc,
            dropout: a.dropout,
            classes: a.classes as usize,
        }
    }

    /// Number of classes (outputs).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// True when the network reads the signal (it has a convolutional path).
    pub fn reads_signal(&self) -> bool {
        self.stem.is_some()
    }

    /// Scalar features per row the network takes (0: none).
    pub fn features(&self) -> usize {
        self.features as usize
    }

    /// `xs`: (batch, leads, samples) and, for a network with scalar features, `feats`:
    /// (batch, features) → logits (batch, classes). Missing features count as zeros.
    pub fn forward_rows(&self, xs: &Tensor, feats: Option<&Tensor>, train: bool) -> Tensor {
        let f = || match feats {
            Some(f) => f.shallow_clone(),
            None => Tensor::zeros([xs.size()[0], self.features], (xs.kind(), xs.device())),
        };
        let Some((stem, stem_bn)) = &self.stem else {
            return f().dropout(self.dropout, train).apply(&self.fc);
        };
        let mut x =
            xs.apply(stem)
                .apply_t(stem_bn, train)
                .relu()
                .max_pool1d([3], [2], [1], [1], false);
        for b in &self.blocks {
            x = b.forward(&x, train);
        }
        let avg = x.mean_dim(-1, false, tch::Kind::Float);
        let max = x.amax(-1, false);
        let mut parts = vec![avg, max];
        if let Some(l) = &self.feat {
            parts.push(f().apply(l).relu());
        }
        Tensor::cat(&parts, 1)
            .dropout(self.dropout, train)
            .apply(&self.fc)
    }
}

impl ModuleT for ResNet1d {
    /// `xs`: (batch, leads, samples) → logits (batch, classes), scalar features as zeros.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.forward_rows(xs, None, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_determinism() {
        let a = Arch {
            in_channels: 1,
            classes: 4,
            channels: vec![8, 16],
            blocks_per_stage: 1,
            kernel: 5,
            dropout: 0.0,
            features: 0,
        };
        let run = || {
            tch::manual_seed(3);
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let m = ResNet1d::new(&vs.root(), &a);
            let x = Tensor::linspace(-1.0, 1.0, 2 * 500, (tch::Kind::Float, tch::Device::Cpu))
                .view([2, 1, 500]);
            m.forward_t(&x, false)
        };
        let y = run();
        assert_eq!(y.size(), vec![2, 4]);
        assert!(y.equal(&run()));

        // With scalar features: they change the output, and zeros are the default.
        let a = Arch { features: 3, ..a };
        tch::manual_seed(3);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let m = ResNet1d::new(&vs.root(), &a);
        assert_eq!(m.features(), 3);
        let x = Tensor::linspace(-1.0, 1.0, 2 * 500, (tch::Kind::Float, tch::Device::Cpu))
            .view([2, 1, 500]);
        let zeros = Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let ones = Tensor::ones([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let z = m.forward_rows(&x, Some(&zeros), false);
        assert_eq!(z.size(), vec![2, 4]);
        assert!(z.equal(&m.forward_t(&x, false)));
        assert!(!z.equal(&m.forward_rows(&x, Some(&ones), false)));

        // No channels: logistic regression over the features, the signal unused.
        let a = Arch {
            channels: vec![],
            ..a
        };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let m = ResNet1d::new(&vs.root(), &a);
        let vars = vs.variables();
        assert_eq!(vars.len(), 2, "{:?}", vars.keys());
        let (w, b) = (&vars["fc.weight"], &vars["fc.bias"]);
        let f = Tensor::from_slice(&[0.5f32, -1.0, 2.0, 1.0, 0.0, -3.0]).view([2, 3]);
        let got = m.forward_rows(&x, Some(&f), false);
        let by_hand = f.matmul(&w.tr()) + b;
        assert!(got.allclose(&by_hand, 1e-6, 1e-6, false));
        assert!(got.equal(&m.forward_rows(&x.zeros_like(), Some(&f), false)));
    }
}
