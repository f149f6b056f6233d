//! n-gram baselines: interpolated Kneser-Ney language models over token ids.
//!
//! Owns training an order-n model on a token stream, its probabilities, and scoring it on
//! the sweep's eval windows under the same protocol as the neural runs (each window of
//! `context + 1` tokens predicts its last `context` tokens from the tokens before them in the
//! window). The smoothing is interpolated Kneser-Ney (Chen & Goodman 1998) with one absolute
//! discount per order, D = n1 / (n1 + 2·n2) from that order's counts of counts:
//!
//! P_k(w | h) = max(c_k(h w) − D_k, 0) / c_k(h ·) + D_k · T_k(h) / c_k(h ·) · P_{k−1}(w | h′)
//!
//! where c_n are raw counts at the highest order and c_k (k < n) are continuation counts
//! (how many distinct tokens precede the k-gram), T_k(h) is the number of distinct tokens
//! seen after h, h′ drops the oldest token, a context never seen falls through to the lower
//! order, and P_0 is uniform over the vocabulary, so every token has non-zero probability
//! and every distribution sums to one.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::hashing::splitmix64;
use crate::record::BaselineRow;

/// A fast hasher for packed n-gram keys (splitmix64 finaliser).
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        splitmix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Map<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

/// Pack up to 8 token ids (16 bits each) into a key.
fn key(tokens: &[u16]) -> u128 {
    tokens.iter().fold(0u128, |k, &t| (k << 16) | t as u128)
}

/// One order: counts of k-grams and, per (k−1)-token context, (total count, distinct
/// continuations).
struct Level {
    counts: Map<u32>,
    contexts: Map<(u32, u32)>,
    discount: f64,
}

/// An interpolated Kneser-Ney model of order `order`.
pub struct KneserNey {
    pub order: usize,
    pub vocab_size: usize,
    /// `levels[k-1]` is order k.
    levels: Vec<Level>,
}

impl KneserNey {
    /// Train on `tokens` (ids below `vocab_size`, at most 65,536; order 1..=8).
    pub fn train(tokens: &[u16], order: usize, vocab_size: usize) -> KneserNey {
        assert!((1..=8).contains(&order), "n-gram order must be 1..=8");
        let mut raw: Map<u32> = Map::default();
        if tokens.len() >= order {
            for w in tokens.windows(order) {
                *raw.entry(key(w)).or_insert(0) += 1;
            }
        }
        // Orders n, n-1, ..., 1: raw counts at the top, continuation counts below.
        let mut by_order: Vec<Map<u32>> = vec![raw];
        for k in (1..order).rev() {
            let upper = by_order.last().unwrap();
            let mask = (1u128 << (16 * k)) - 1;
            let mut cont: Map<u32> = Map::default();
            for &g in upper.keys() {
                *cont.entry(g & mask).or_insert(0) += 1;
            }
            by_order.push(cont);
        }
        by_order.reverse();
        let levels = by_order
            .into_iter()
            .map(|counts| {
                let mut contexts: Map<(u32, u32)> = Map::default();
                let (mut n1, mut n2) = (0u64, 0u64);
                for (&g, &c) in &counts {
                    let e = contexts.entry(g >> 16).or_insert((0, 0));
                    e.0 += c;
                    e.1 += 1;
                    match c {
                        1 => n1 += 1,
                        2 => n2 += 1,
                        _ => {}
                    }
                }
                let discount = if n1 > 0 && n2 > 0 {
                    (n1 as f64 / (n1 as f64 + 2.0 * n2 as f64)).clamp(0.05, 0.95)
                } else {
                    0.75
                };
                Level {
                    counts,
                    contexts,
                    discount,
                }
            })
            .collect();
        KneserNey {
            order,
            vocab_size,
            levels,
        }
    }

    /// P(w | history): the last `order − 1` tokens of `history` are used (fewer when it is
    /// shorter).
    pub fn prob(&self, history: &[u16], w: u16) -> f64 {
        let hist = &history[history.len().saturating_sub(self.order - 1)..];
        let mut p = 1.0 / self.vocab_size as f64;
        for k in 1..=hist.len() + 1 {
            let ctx = &hist[hist.len() + 1 - k..];
            let lvl = &self.levels[k - 1];
            let Some(&(total, types)) = lvl.contexts.get(&key(ctx)) else {
                continue;
            };
            let mut full = ctx.to_vec();
            full.push(w);
            let c = lvl.counts.get(&key(&full)).copied().unwrap_or(0) as f64;
            let (total, d) = (total as f64, lvl.discount);
            p = (c - d).max(0.0) / total + d * types as f64 / total * p;
        }
        p
    }

    /// Mean negative log-likelihood (nats/token) over eval windows of `context + 1` tokens:
    /// every window predicts tokens 1..=context from the tokens before them in the window.
    pub fn eval_windows(&self, eval: &[u16], context: usize) -> f64 {
        use rayon::prelude::*;
        let w = context + 1;
        let n = eval.len() / w;
        let total: f64 = (0..n)
            .into_par_iter()
            .map(|i| {
                let win = &eval[i * w..(i + 1) * w];
                (1..w)
                    .map(|t| -self.prob(&win[..t], win[t]).ln())
                    .sum::<f64>()
            })
            .sum();
        total / (n * context).max(1) as f64
    }

    /// Distinct n-grams stored (all orders).
    pub fn size(&self) -> usize {
        self.levels.iter().map(|l| l.counts.len()).sum()
    }
}

/// Baselines for every (order, size), trained on the tokens the runs saw (the first D
/// tokens of the training stream, repeated epochs included) and scored like the runs.
pub fn baselines(
    corpus: &crate::corpus::Corpus,
    orders: &[usize],
    sizes: &[u64],
    mut progress: impl FnMut(&BaselineRow),
) -> Vec<BaselineRow> {
    let mut out = Vec::new();
    for &d in sizes {
        // Read as the runs do: windows of context + 1 tokens at multiples of context (an
        // in-memory stream wraps around per window, so D beyond the unique tokens repeats them).
        let (ctx, d) = (corpus.context, d as usize);
        let mut tokens = Vec::with_capacity(d + ctx + 1);
        let mut reader = corpus.train.reader();
        let mut window = Vec::with_capacity(ctx + 1);
        for pos in (0..d).step_by(ctx) {
            window.clear();
            reader.read(pos, ctx + 1, &mut window);
            tokens.extend_from_slice(&window[..ctx.min(d - pos)]);
        }
        let d = d as u64;
        for &n in orders {
            let t0 = std::time::Instant::now();
            let m = KneserNey::train(&tokens, n, corpus.vocab_size);
            let loss = m.eval_windows(&corpus.eval, corpus.context);
            let row = BaselineRow {
                order: n,
                train_tokens: d,
                eval_loss: loss,
                eval_bits_per_token: loss / std::f64::consts::LN_2,
                eval_bits_per_byte: corpus.bits_per_byte(loss),
                n_grams: m.size() as u64,
                seconds: t0.elapsed().as_secs_f64(),
            };
            progress(&row);
            out.push(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::Rng;

    fn zipf_stream(n: usize, vocab: u16, seed: u64) -> Vec<u16> {
        // A Markov-ish stream: the next token depends on the previous one.
        let mut rng = Rng::new(seed);
        let mut out = vec![0u16];
        for _ in 1..n {
            let prev = *out.last().unwrap() as u64;
            let r = rng.next_f64();
            let t = if r < 0.6 {
                (prev * 7 + 3) % vocab as u64
            } else {
                ((r * r * r) * vocab as f64) as u64 % vocab as u64
            };
            out.push(t as u16);
        }
        out
    }

    #[test]
    fn probabilities_sum_to_one_and_unseen_tokens_get_mass() {
        let v = 50u16;
        let train = zipf_stream(20_000, v, 1);
        for order in 1..=5 {
            let m = KneserNey::train(&train, order, v as usize);
            let mut rng = Rng::new(order as u64);
            for _ in 0..20 {
                // Sampled contexts: seen ones from the stream, and random (mostly unseen) ones.
                let at = (rng.next_f64() * (train.len() - 10) as f64) as usize;
                let seen = &train[at..at + order.saturating_sub(1)];
                let random: Vec<u16> = (0..order.saturating_sub(1))
                    .map(|_| (rng.next_f64() * v as f64) as u16)
                    .collect();
                for h in [seen, &random[..], &[]] {
                    let s: f64 = (0..v).map(|w| m.prob(h, w)).sum();
                    assert!((s - 1.0).abs() < 1e-9, "order {order}: sum {s}");
                    assert!((0..v).all(|w| m.prob(h, w) > 0.0), "zero probability");
                }
            }
        }
        // A token never seen in training still has non-zero probability.
        let m = KneserNey::train(&[1, 2, 3, 1, 2, 3, 1, 2], 3, 10);
        assert!(m.prob(&[1, 2], 9) > 0.0);
        assert!(m.prob(&[1, 2], 3) > 0.5, "a seen continuation dominates");
    }

    #[test]
    fn higher_orders_and_more_data_predict_better() {
        let v = 50u16;
        let stream = zipf_stream(60_000, v, 2);
        let (train, eval) = stream.split_at(50_000);
        let ctx = 16;
        let loss = |d: usize, n: usize| {
            KneserNey::train(&train[..d], n, v as usize).eval_windows(eval, ctx)
        };
        let uniform = (v as f64).ln();
        let (l1, l2) = (loss(50_000, 1), loss(50_000, 2));
        assert!(l1 < uniform, "unigram {l1} vs uniform {uniform}");
        assert!(l2 < l1 - 0.3, "bigram {l2} vs unigram {l1}");
        assert!(loss(50_000, 3) < loss(2_000, 3), "more data helps");
    }
}
