//! Corpora: where every run's training and eval tokens come from.
//!
//! Owns the built-in synthetic language ([`SynthLang`]: a seeded generator that knows its own
//! probabilities, so the exact Bayes floor of the eval split is computed here by the forward
//! algorithm), text-file and pre-tokenized `u16` corpora, and the [`Corpus`] value a sweep
//! shares: one training stream (runs read its first D tokens, so data is nested across runs)
//! and one fixed set of eval windows, identical for every run.
//!
//! # The built-in language
//! A hidden Markov source over *words*. The hidden state of each word is a pair
//! (topic, grammatical class). Topics persist (by default stay probability 0.98 per word, so a topic
//! lasts ~50 words, far beyond short contexts) and pick which content words are frequent;
//! classes follow a small grammar (determiner → adjective* → noun → verb | preposition | punctuation …).
//! Each class owns a Zipf–Mandelbrot distributed vocabulary (by default 2,643 words in all) spelled from
//! letters in syllables, with class-specific suffixes; frequent words are short. A word's
//! bytes end with a delimiter (space or newline) that never occurs inside a word, so the code
//! is prefix-free and the byte stream parses uniquely into words.
//!
//! Structure therefore exists at several ranges: spelling (a few bytes), grammar (a few
//! words), topic (hundreds of bytes) and a long Zipf tail of words to memorise, so bigger
//! models keep reaching lower loss.
//!
//! # The Bayes floor
//! For a byte string that starts at a word boundary, `P(b_j | b_<j)` under the true source is
//! computed exactly: a forward pass keeps the predictive distribution over the hidden state
//! of the current word; within a word, the probability of the next byte is the ratio of the
//! masses of the words consistent with the longer and the shorter prefix (words are kept
//! sorted, so each prefix is a contiguous range and masses are prefix sums). At a delimiter
//! the word is known, the state posterior is updated and pushed through the transition.
//! The eval windows start at word boundaries and the floor uses the same protocol as the
//! models' eval loss (only in-window history, position 0 not scored), so it is the lowest
//! eval loss any model can reach. `tests` checks it against brute-force enumeration.

use std::path::{Path, PathBuf};

use crate::bail_user;
use crate::hashing::{fnv1a, splitmix64, Permutation, Rng};
use crate::spec::DataOrder;

/// Sample an index from unnormalised cumulative weights.
fn sample_cum(cum: &[f64], rng: &mut Rng) -> usize {
    let u = rng.next_f64() * cum[cum.len() - 1];
    cum.partition_point(|&c| c <= u).min(cum.len() - 1)
}

fn stationary(trans: &[Vec<f64>]) -> Vec<f64> {
    let n = trans.len();
    let mut p = vec![1.0 / n as f64; n];
    for _ in 0..10_000 {
        let mut q = vec![0.0; n];
        for (i, row) in trans.iter().enumerate() {
            for (j, t) in row.iter().enumerate() {
                q[j] += p[i] * t;
            }
        }
        let diff: f64 = p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum();
        p = q;
        if diff < 1e-15 {
            break;
        }
    }
    p
}

/// The built-in language's knobs (`corpus.builtin: {topics, lexicon, zipf, topic_stay}`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LangKnobs {
    /// Number of topics (1..=64).
    pub topics: usize,
    /// Scale of the open classes' vocabularies (1.0: 400 adjectives, 1,500 nouns, 700 verbs;
    /// 2,643 words in all).
    pub lexicon: f64,
    /// Zipf exponent of word frequencies within a class: weight ∝ 1/(rank + 2.7)^zipf.
    pub zipf: f64,
    /// Probability that the topic stays the same from one word to the next.
    pub topic_stay: f64,
}

impl Default for LangKnobs {
    /// The spec's defaults (`corpus.builtin` with no keys).
    fn default() -> Self {
        let b = crate::spec::BuiltinSpec::default();
        LangKnobs {
            topics: b.topics,
            lexicon: b.lexicon,
            zipf: b.zipf,
            topic_stay: b.topic_stay,
        }
    }
}

impl LangKnobs {
    /// The part of the corpus fingerprint the knobs add: empty for the default knobs (so
    /// folders made before the knobs existed keep their run ids).
    fn fingerprint_suffix(&self) -> String {
        let d = LangKnobs {
            topics: self.topics,
            ..LangKnobs::default()
        };
        if *self == d {
            String::new()
        } else {
            format!(
                ":lex{}:zipf{}:stay{}",
                self.lexicon, self.zipf, self.topic_stay
            )
        }
    }
}

/// A hidden-Markov word language with a product state (topic × class); see the module docs.
#[derive(Clone, Debug)]
pub struct SynthLang {
    /// Topic transition matrix, rows sum to 1.
    pub topic_trans: Vec<Vec<f64>>,
    /// Class (grammar) transition matrix, rows sum to 1.
    pub class_trans: Vec<Vec<f64>>,
    /// Word spellings, sorted; each ends with exactly one delimiter byte (b' ' or b'\n').
    pub words: Vec<Vec<u8>>,
    /// Class of each word.
    pub word_class: Vec<usize>,
    /// `emit[t][w]` = P(word w | topic t, class(w)); sums to 1 over each class's words.
    pub emit: Vec<Vec<f64>>,
    /// Stationary distribution over states `t * n_classes + c`.
    pub stationary: Vec<f64>,
    /// Cumulative emission weights per state, over that class's words (`state_words`).
    state_cum: Vec<Vec<f64>>,
    state_words: Vec<Vec<usize>>,
}

/// A generated stretch of text and the byte offsets where its words start.
pub struct SynthText {
    pub bytes: Vec<u8>,
    pub word_starts: Vec<usize>,
}

const DELIMS: [u8; 2] = [b' ', b'\n'];

fn is_delim(b: u8) -> bool {
    DELIMS.contains(&b)
}

/// Topic Markov chain: stay with probability `stay`, else move to any other topic.
fn topic_transitions(n_topics: usize, stay: f64) -> Vec<Vec<f64>> {
    let p = |i: usize, j: usize| match () {
        _ if n_topics == 1 => 1.0,
        _ if i == j => stay,
        _ => (1.0 - stay) / (n_topics - 1) as f64,
    };
    (0..n_topics)
        .map(|i| (0..n_topics).map(|j| p(i, j)).collect())
        .collect()
}

/// A new pronounceable word (syllables, a class suffix, a trailing space), unique in `seen`;
/// frequent ranks get shorter words.
fn new_word(
    rng: &mut Rng,
    class: usize,
    rank: usize,
    seen: &mut std::collections::HashSet<String>,
) -> Vec<u8> {
    const ONSETS: [&str; 24] = [
        "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
        "st", "tr", "br", "ch", "th", "sh",
    ];
    const VOWELS: [&str; 8] = ["a", "e", "i", "o", "u", "a", "e", "ou"];
    const CODAS: [&str; 6] = ["n", "r", "s", "l", "m", "nt"];
    const SUFFIXES: [&[&str]; 6] = [
        &[""],
        &["ous", "al", "y", "ic", ""],
        &["", "", "er", "ion"],
        &["ed", "s", "ing", "es", ""],
        &[""],
        &[""],
    ];
    loop {
        let base = 1 + ((rank as f64 + 1.0).ln() / 8f64.ln()) as usize;
        let n_syll = (base + rng.below(2)).min(5);
        let mut s = String::new();
        for _ in 0..n_syll {
            s.push_str(ONSETS[rng.below(ONSETS.len())]);
            s.push_str(VOWELS[rng.below(VOWELS.len())]);
            if rng.below(3) == 0 {
                s.push_str(CODAS[rng.below(CODAS.len())]);
            }
        }
        let suf = SUFFIXES[class];
        s.push_str(suf[rng.below(suf.len())]);
        if seen.insert(s.clone()) {
            let mut b = s.into_bytes();
            b.push(b' ');
            return b;
        }
    }
}

impl SynthLang {
    /// Build a language from explicit parts. `words[i]` belongs to `word_class[i]`;
    /// `weights[t][i]` is the unnormalised emission weight of word i under topic t.
    pub fn new(
        topic_trans: Vec<Vec<f64>>,
        class_trans: Vec<Vec<f64>>,
        words: Vec<Vec<u8>>,
        word_class: Vec<usize>,
        weights: Vec<Vec<f64>>,
    ) -> Self {
        let n_topics = topic_trans.len();
        let n_classes = class_trans.len();
        // Sort words (with their class and weights) by spelling.
        let mut order: Vec<usize> = (0..words.len()).collect();
        order.sort_by(|&a, &b| words[a].cmp(&words[b]));
        let words: Vec<Vec<u8>> = order.iter().map(|&i| words[i].clone()).collect();
        let word_class: Vec<usize> = order.iter().map(|&i| word_class[i]).collect();
        for w in &words {
            assert!(!w.is_empty() && is_delim(*w.last().unwrap()));
            assert!(!w[..w.len() - 1].iter().any(|&b| is_delim(b)));
        }
        let mut emit = vec![vec![0.0; words.len()]; n_topics];
        for t in 0..n_topics {
            let mut total = vec![0.0; n_classes];
            for (k, &i) in order.iter().enumerate() {
                emit[t][k] = weights[t][i];
                total[word_class[k]] += weights[t][i];
            }
            for k in 0..words.len() {
                emit[t][k] /= total[word_class[k]];
            }
        }
        let pt = stationary(&topic_trans);
        let pc = stationary(&class_trans);
        let mut stat = vec![0.0; n_topics * n_classes];
        let mut state_cum = vec![Vec::new(); n_topics * n_classes];
        let mut state_words = vec![Vec::new(); n_topics * n_classes];
        for t in 0..n_topics {
            for c in 0..n_classes {
                let s = t * n_classes + c;
                stat[s] = pt[t] * pc[c];
                let mut acc = 0.0;
                for k in 0..words.len() {
                    if word_class[k] == c {
                        acc += emit[t][k];
                        state_cum[s].push(acc);
                        state_words[s].push(k);
                    }
                }
            }
        }
        SynthLang {
            topic_trans,
            class_trans,
            words,
            word_class,
            emit,
            stationary: stat,
            state_cum,
            state_words,
        }
    }

    pub fn n_topics(&self) -> usize {
        self.topic_trans.len()
    }

    pub fn n_classes(&self) -> usize {
        self.class_trans.len()
    }

    /// The built-in language with the default knobs ([`LangKnobs::default`]) and `n_topics`.
    pub fn builtin(seed: u64, n_topics: usize) -> Self {
        Self::with_knobs(
            seed,
            LangKnobs {
                topics: n_topics,
                ..LangKnobs::default()
            },
        )
    }

    /// The built-in language with explicit knobs (`corpus.builtin` in the spec).
    pub fn with_knobs(seed: u64, k: LangKnobs) -> Self {
        let n_topics = k.topics;
        let mut rng = Rng::new(seed ^ 0x5CA1_E1AB);
        // Classes: 0 determiner, 1 adjective, 2 noun, 3 verb, 4 preposition, 5 punctuation;
        // the open classes (1-3) scale with `lexicon`.
        let open = |n: f64| ((n * k.lexicon).round() as usize).max(4);
        let sizes = [16usize, open(400.0), open(1500.0), open(700.0), 24, 3];
        let content = [false, true, true, true, false, false];
        let class_trans = vec![
            vec![0.0, 0.3, 0.7, 0.0, 0.0, 0.0],
            vec![0.0, 0.15, 0.85, 0.0, 0.0, 0.0],
            vec![0.0, 0.0, 0.0, 0.45, 0.25, 0.30],
            vec![0.5, 0.1, 0.1, 0.0, 0.2, 0.1],
            vec![0.7, 0.0, 0.3, 0.0, 0.0, 0.0],
            vec![0.6, 0.0, 0.3, 0.0, 0.1, 0.0],
        ];
        let topic_trans = topic_transitions(n_topics, k.topic_stay);
        let mut seen = std::collections::HashSet::new();
        let mut words = Vec::new();
        let mut word_class = Vec::new();
        let mut weights = vec![Vec::new(); n_topics];
        for (c, &size) in sizes.iter().enumerate() {
            for rank in 0..size {
                let spelling = if c == 5 {
                    [&b", "[..], b". ", b".\n"][rank].to_vec()
                } else {
                    new_word(&mut rng, c, rank, &mut seen)
                };
                // Zipf-like weights; a content word may have a home topic where it is 12x likelier.
                let base_w = 1.0 / (rank as f64 + 2.7).powf(k.zipf);
                let home = if content[c] && rng.next_f64() < 0.6 {
                    Some(rng.below(n_topics))
                } else {
                    None
                };
                for (t, w) in weights.iter_mut().enumerate() {
                    w.push(if home == Some(t) {
                        base_w * 12.0
                    } else {
                        base_w
                    });
                }
                words.push(spelling);
                word_class.push(c);
            }
        }
        SynthLang::new(topic_trans, class_trans, words, word_class, weights)
    }

    /// Generate `n_bytes` (or slightly more, to finish the last word) of text, starting from
    /// the stationary state distribution.
    pub fn generate(&self, seed: u64, n_bytes: usize) -> SynthText {
        let mut rng = Rng::new(seed);
        let nc = self.n_classes();
        let stat_cum: Vec<f64> = self
            .stationary
            .iter()
            .scan(0.0, |a, &p| {
                *a += p;
                Some(*a)
            })
            .collect();
        let topic_cum: Vec<Vec<f64>> = self.topic_trans.iter().map(|r| cumsum(r)).collect();
        let class_cum: Vec<Vec<f64>> = self.class_trans.iter().map(|r| cumsum(r)).collect();
        let mut s = sample_cum(&stat_cum, &mut rng);
        let mut bytes = Vec::with_capacity(n_bytes + 64);
        let mut word_starts = Vec::with_capacity(n_bytes / 4);
        while bytes.len() < n_bytes {
            let k = self.state_words[s][sample_cum(&self.state_cum[s], &mut rng)];
            word_starts.push(bytes.len());
            bytes.extend_from_slice(&self.words[k]);
            let t = sample_cum(&topic_cum[s / nc], &mut rng);
            let c = sample_cum(&class_cum[s % nc], &mut rng);
            s = t * nc + c;
        }
        SynthText { bytes, word_starts }
    }

    /// `ln P(b_j | b_0..b_{j-1})` under the true source for every byte of `bytes`, which must
    /// start at a word boundary; the hidden state of the first word is drawn from the
    /// stationary distribution. Returns `-inf` for a byte the source cannot produce.
    pub fn log_probs(&self, bytes: &[u8]) -> Vec<f64> {
        let nt = self.n_topics();
        let nc = self.n_classes();
        let nw = self.words.len();
        let mut alpha = self.stationary.clone();
        let mut cum = vec![0.0; nw + 1];
        let mut out = Vec::with_capacity(bytes.len());
        let mut depth = 0usize;
        let (mut lo, mut hi) = (0usize, nw);
        for &b in bytes {
            if depth == 0 {
                // Mass of every word under the predictive state distribution.
                for k in 0..nw {
                    let c = self.word_class[k];
                    let mut p = 0.0;
                    for t in 0..nt {
                        p += alpha[t * nc + c] * self.emit[t][k];
                    }
                    cum[k + 1] = cum[k] + p;
                }
                lo = 0;
                hi = nw;
            }
            let before = cum[hi] - cum[lo];
            let words = &self.words[lo..hi];
            let nlo = lo + words.partition_point(|w| w[depth] < b);
            let nhi = lo + words.partition_point(|w| w[depth] <= b);
            let after = cum[nhi] - cum[nlo];
            out.push(if after > 0.0 {
                (after / before).ln()
            } else {
                f64::NEG_INFINITY
            });
            if nlo == nhi {
                // Impossible byte: restart parsing at the next byte as a new word.
                depth = 0;
                alpha = self.stationary.clone();
                continue;
            }
            lo = nlo;
            hi = nhi;
            depth += 1;
            if is_delim(b) {
                // Word complete: exactly one word has this spelling (prefix-free code).
                let w = lo;
                let cw = self.word_class[w];
                let mut post = vec![0.0; nt];
                for (t, p) in post.iter_mut().enumerate() {
                    *p = alpha[t * nc + cw] * self.emit[t][w];
                }
                let z: f64 = post.iter().sum();
                for t2 in 0..nt {
                    let pt: f64 = (0..nt).map(|t| post[t] / z * self.topic_trans[t][t2]).sum();
                    for c2 in 0..nc {
                        alpha[t2 * nc + c2] = pt * self.class_trans[cw][c2];
                    }
                }
                depth = 0;
            }
        }
        out
    }
}

fn cumsum(v: &[f64]) -> Vec<f64> {
    v.iter()
        .scan(0.0, |a, &p| {
            *a += p;
            Some(*a)
        })
        .collect()
}

/// The exact loss floor of the built-in corpus's eval windows.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct Floor {
    /// Mean `-ln P` per scored byte of the eval windows (same protocol as the eval loss).
    pub nats_per_token: f64,
    /// The same in bits per byte.
    pub bits_per_byte: f64,
    /// Entropy rate with unlimited history, estimated on a long stream (bits per byte).
    pub entropy_rate_bits_per_byte: f64,
}

/// Where the tokens of a sweep come from (resolved from the spec).
#[derive(Clone, Debug)]
pub enum CorpusSource {
    /// The built-in synthetic language.
    Builtin { seed: u64, lang: LangKnobs },
    /// UTF-8 text files: byte-level tokens (vocab 256), or byte-level BPE with `bpe_vocab`
    /// tokens trained on the training split (cached next to the corpus).
    Text {
        files: Vec<PathBuf>,
        bpe_vocab: Option<usize>,
        split_seed: u64,
    },
    /// Raw little-endian u16 tokens (nanoGPT `.bin`).
    Tokens {
        file: PathBuf,
        vocab_size: usize,
        split_seed: u64,
    },
}

/// Tokens of a chunk of the built-in training stream.
pub const SYNTH_CHUNK: usize = 1 << 24;

/// A corpus's training stream.
pub enum TrainStream {
    /// Tokens held in memory (file corpora); read in order, wrapping around (repeated epochs).
    Tokens(Vec<u16>),
    /// The built-in language, generated on demand in chunks of [`SYNTH_CHUNK`] tokens, so a
    /// sweep of any size needs no memory for its data and never repeats it. Chunk 0 is the
    /// stream `generate(seed)`, chunk k the stream `generate(seed + k·φ)`; each is generated
    /// only as far as it is read (a longer prefix of a generated stream is the same stream).
    Synth { lang: Box<SynthLang>, seed: u64 },
}

impl TrainStream {
    /// A reader with its own chunk cache (one per training segment).
    pub fn reader(&self) -> StreamReader<'_> {
        StreamReader {
            stream: self,
            cache: [None, None],
        }
    }

    /// How many windows of `context` tokens a shuffled order permutes together: all of a
    /// run's windows for an in-memory stream; those of one chunk for the built-in stream
    /// (the chunks themselves are visited in a shuffled order), so a chunk is generated
    /// once per run whatever the order.
    pub fn shuffle_group(&self, context: usize) -> u64 {
        match self {
            TrainStream::Tokens(_) => u64::MAX,
            TrainStream::Synth { .. } => (SYNTH_CHUNK / context).max(1) as u64,
        }
    }
}

impl StreamReader<'_> {
    /// At least the first `need` tokens of built-in chunk `k`, from the cache or generated
    /// (growing a cached prefix geometrically, so reads stay linear in the tokens read).
    fn chunk(&mut self, lang: &SynthLang, seed: u64, k: usize, need: usize) -> &[u16] {
        let hit = self
            .cache
            .iter()
            .position(|c| matches!(c, Some((ck, _)) if *ck == k));
        if let Some(i) = hit {
            self.cache.swap(0, i);
        } else {
            self.cache.swap(0, 1);
            self.cache[0] = None;
        }
        let have = self.cache[0].as_ref().map_or(0, |c| c.1.len());
        if have < need {
            let n = need.max(2 * have).max(1 << 16).min(SYNTH_CHUNK);
            let chunk_seed = seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let text = lang.generate(chunk_seed, n);
            let v: Vec<u16> = text.bytes[..n].iter().map(|&b| b as u16).collect();
            self.cache[0] = Some((k, v));
        }
        &self.cache[0].as_ref().unwrap().1
    }
}

/// Seed of every `shuffled` window order: runs of equal D read the same order whatever their
/// model seed (the seed varies the initialisation only). `shuffled_per_seed` mixes the run's
/// seed into it.
pub const ORDER_SEED: u64 = 0x0DA7_A0DE_5EED;

/// The shuffle seed of a run with model seed `seed`.
fn order_seed(order: DataOrder, seed: u64) -> u64 {
    match order {
        // Mixed, so seeds 0, 1, 2 give unrelated orders.
        DataOrder::ShuffledPerSeed => ORDER_SEED ^ splitmix64(seed),
        DataOrder::Sequential | DataOrder::Shuffled => ORDER_SEED,
    }
}

/// Which window a run reads at each read index: exactly the run's first `windows` windows of
/// the stream (window k starts at token k·context), in order or in a seeded shuffled order
/// that depends only on `windows`, the group size and the shuffle seed (fixed, or the run's
/// seed for `shuffled_per_seed`). So runs of equal D read the same windows, in the same order
/// for equal shuffle seeds, and a longer run's windows contain a shorter run's.
#[derive(Debug, Clone, Copy)]
pub struct WindowOrder {
    order: DataOrder,
    windows: u64,
    group: u64,
    full_groups: u64,
    seed: u64,
    groups: Permutation,
}

impl WindowOrder {
    /// `run_seed` matters only for [`DataOrder::ShuffledPerSeed`].
    pub fn new(order: DataOrder, windows: u64, group: u64, run_seed: u64) -> Self {
        let group = group.min(windows).max(1);
        let full_groups = windows / group;
        let seed = order_seed(order, run_seed);
        WindowOrder {
            order,
            windows,
            group,
            full_groups,
            seed,
            groups: Permutation::new(full_groups.max(1), seed),
        }
    }

    /// The window read at read index `k` (< windows).
    pub fn window(&self, k: u64) -> u64 {
        if self.order == DataOrder::Sequential {
            return k;
        }
        let (s, j) = (k / self.group, k % self.group);
        if s < self.full_groups {
            let g = self.groups.apply(s);
            return g * self.group + Permutation::new(self.group, self.seed ^ g).apply(j);
        }
        // The partial last group (windows not a multiple of the group), read last.
        let base = self.full_groups * self.group;
        let rest = self.windows - base;
        base + Permutation::new(rest, self.seed ^ self.full_groups).apply(k - base)
    }
}

/// Reads from a [`TrainStream`] at any position.
pub struct StreamReader<'a> {
    stream: &'a TrainStream,
    /// Two (chunk index, generated prefix of that chunk) entries, most recent first: a
    /// window that spans two chunks, or a shuffled group that does, never regenerates one.
    cache: [Option<(usize, Vec<u16>)>; 2],
}

impl StreamReader<'_> {
    /// See [`TrainStream::shuffle_group`].
    pub fn shuffle_group(&self, context: usize) -> u64 {
        self.stream.shuffle_group(context)
    }

    /// Append the `len` tokens at stream position `pos` to `out`. In-memory streams wrap
    /// around (position modulo the tokens that fit a whole window).
    pub fn read(&mut self, pos: usize, len: usize, out: &mut Vec<u16>) {
        match self.stream {
            TrainStream::Tokens(v) => {
                let start = pos % (v.len() - len);
                out.extend_from_slice(&v[start..start + len]);
            }
            TrainStream::Synth { lang, seed } => {
                let (mut pos, mut left) = (pos, len);
                while left > 0 {
                    let (k, off) = (pos / SYNTH_CHUNK, pos % SYNTH_CHUNK);
                    let take = left.min(SYNTH_CHUNK - off);
                    let chunk = self.chunk(lang, *seed, k, off + take);
                    out.extend_from_slice(&chunk[off..off + take]);
                    pos += take;
                    left -= take;
                }
            }
        }
    }
}

/// The data every run of a sweep shares.
pub struct Corpus {
    pub description: String,
    pub vocab_size: usize,
    /// Training stream; a run with D tokens reads the first D (+1) tokens in order.
    pub train: TrainStream,
    /// Eval windows of `context + 1` tokens each, flattened.
    pub eval: Vec<u16>,
    pub context: usize,
    /// Exact loss floor (built-in corpus only).
    pub floor: Option<Floor>,
    /// Stable identity of the corpus contents (feeds the run ids).
    pub fingerprint: u64,
    /// Mean bytes of text per scored eval token (1 for byte-level corpora): converts nats
    /// per token to bits per byte, so runs with different tokenizers compare.
    pub eval_bytes_per_token: f64,
    /// Unique training tokens (None: the built-in stream, which never repeats).
    pub unique_train_tokens: Option<u64>,
    /// The BPE tokenizer (`tokenizer.json`), when the corpus has one.
    pub tokenizer_json: Option<String>,
    /// The token cache used, and whether it was already there.
    pub cache: Option<(PathBuf, bool)>,
}

impl Corpus {
    pub fn n_eval_windows(&self) -> usize {
        self.eval.len() / (self.context + 1)
    }

    /// Bits per byte of a loss in nats per token on the eval windows.
    pub fn bits_per_byte(&self, nats_per_token: f64) -> f64 {
        nats_per_token / std::f64::consts::LN_2 / self.eval_bytes_per_token
    }

    /// Keep only the first `u` training tokens: longer runs repeat them (epochs > 1).
    pub fn cap_unique_tokens(&mut self, u: usize, context: usize) -> anyhow::Result<()> {
        if u < 2 * (context + 1) {
            bail_user!(
                "corpus.train_tokens: {u} is too few; a training window needs {} tokens",
                context + 1
            );
        }
        let have = self.unique_train_tokens.map_or(usize::MAX, |n| n as usize);
        if u >= have {
            return Ok(());
        }
        let mut v = Vec::with_capacity(u);
        self.train.reader().read(0, u, &mut v);
        self.train = TrainStream::Tokens(v);
        self.unique_train_tokens = Some(u as u64);
        self.fingerprint ^= fnv1a(format!("cap:{u}").as_bytes()).rotate_left(7);
        self.description += &format!("; capped at {u} unique training tokens");
        Ok(())
    }

    /// Training tokens that are new to a run of `d` tokens, and its epochs over them.
    pub fn unique_and_epochs(&self, d: u64) -> (u64, f64) {
        match self.unique_train_tokens {
            Some(u) if d > u => (u, d as f64 / u as f64),
            _ => (d, 1.0),
        }
    }
}

/// Load a corpus (the built-in one generates its training tokens on demand);
/// `eval_tokens` is the number of scored eval tokens.
pub fn load(
    source: &CorpusSource,
    context: usize,
    eval_tokens: usize,
    eval_fraction: f64,
) -> anyhow::Result<Corpus> {
    let n_windows = eval_tokens.div_ceil(context).max(1);
    match source {
        CorpusSource::Builtin { seed, lang } => Ok(load_builtin(*seed, *lang, context, n_windows)),
        CorpusSource::Text {
            files,
            bpe_vocab: None,
            split_seed,
        } => {
            let bytes = read_text_files(files)?;
            let description = format!(
                "{} text file(s), {} bytes, byte-level",
                files.len(),
                bytes.len()
            );
            let tokens: Vec<u16> = bytes.iter().map(|&b| b as u16).collect();
            split_stream(tokens, 256, context, n_windows, *split_seed, description)
        }
        CorpusSource::Text {
            files,
            bpe_vocab: Some(v),
            split_seed,
        } => {
            let bytes = read_text_files(files)?;
            bpe_corpus(
                files,
                bytes,
                *v,
                *split_seed,
                eval_fraction,
                context,
                n_windows,
            )
        }
        CorpusSource::Tokens {
            file,
            vocab_size,
            split_seed,
        } => {
            let tokens = read_token_file(file, *vocab_size)?;
            let description = format!("u16 tokens from {}", file.display());
            split_stream(
                tokens,
                *vocab_size,
                context,
                n_windows,
                *split_seed,
                description,
            )
        }
    }
}

/// The built-in language: eval windows starting at word boundaries, scored exactly, and the
/// training stream generated on demand.
fn load_builtin(seed: u64, knobs: LangKnobs, context: usize, n_windows: usize) -> Corpus {
    let lang = SynthLang::with_knobs(seed, knobs);
    let topics = knobs.topics;
    let (eval, nats) = builtin_eval_windows(&lang, seed, context, n_windows);
    let rate_text = lang.generate(seed ^ 0xE7A1_0000_0000_0002, 200_000);
    let lp = lang.log_probs(&rate_text.bytes);
    // Skip the first 20,000 bytes so the estimate reflects long history.
    let tail = &lp[20_000..];
    let rate = -tail.iter().sum::<f64>() / tail.len() as f64;
    Corpus {
        description: format!(
            "built-in synthetic language (seed {seed}, {topics} topics, {} words, zipf {}, topic stay {})",
            lang.words.len(),
            knobs.zipf,
            knobs.topic_stay
        ),
        vocab_size: 256,
        fingerprint: fnv1a(
            format!("builtin-v1:{seed}:{topics}{}", knobs.fingerprint_suffix()).as_bytes(),
        ),
        train: TrainStream::Synth {
            lang: Box::new(lang),
            seed,
        },
        eval,
        context,
        floor: Some(Floor {
            nats_per_token: nats,
            bits_per_byte: nats / std::f64::consts::LN_2,
            entropy_rate_bits_per_byte: rate / std::f64::consts::LN_2,
        }),
        eval_bytes_per_token: 1.0,
        unique_train_tokens: None,
        tokenizer_json: None,
        cache: None,
    }
}

/// `n_windows` eval windows of `context + 1` bytes, each starting at a word, and their exact
/// mean loss floor (nats per scored token).
fn builtin_eval_windows(
    lang: &SynthLang,
    seed: u64,
    context: usize,
    n_windows: usize,
) -> (Vec<u16>, f64) {
    let eval_text = lang.generate(seed ^ 0xE7A1_0000_0000_0001, n_windows * (context + 40) * 2);
    let mut eval = Vec::with_capacity(n_windows * (context + 1));
    let mut floor_sum = 0.0;
    let mut pos_idx = 0usize;
    let starts = &eval_text.word_starts;
    for _ in 0..n_windows {
        while pos_idx < starts.len() && starts[pos_idx] + context + 1 > eval_text.bytes.len() {
            pos_idx = starts.len();
        }
        assert!(pos_idx < starts.len(), "eval stream too short");
        let p = starts[pos_idx];
        let window = &eval_text.bytes[p..p + context + 1];
        let lp = lang.log_probs(window);
        floor_sum -= lp[1..].iter().sum::<f64>();
        eval.extend(window.iter().map(|&b| b as u16));
        pos_idx = starts.partition_point(|&s| s < p + context + 1);
    }
    (eval, floor_sum / (n_windows * context) as f64)
}

/// Raw little-endian u16 tokens, every id below `vocab_size`.
fn read_token_file(file: &Path, vocab_size: usize) -> anyhow::Result<Vec<u16>> {
    let data = std::fs::read(file)
        .map_err(|e| crate::error::user(format!("corpus file {}: {e}", file.display())))?;
    if data.len() % 2 != 0 {
        bail_user!(
            "token file {} has an odd number of bytes ({}); expected raw little-endian u16 tokens",
            file.display(),
            data.len()
        );
    }
    let tokens: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
        bail_user!(
            "token file {} holds token id {bad}, but corpus.vocab_size is {vocab_size}; \
             raise corpus.vocab_size above the largest token id",
            file.display()
        );
    }
    Ok(tokens)
}

/// Split a token stream: a block of exactly the eval windows, placed by `split_seed`, is
/// held out; the tokens before and after it are the training stream.
fn split_stream(
    tokens: Vec<u16>,
    vocab_size: usize,
    context: usize,
    n_windows: usize,
    split_seed: u64,
    description: String,
) -> anyhow::Result<Corpus> {
    let w = context + 1;
    let eval_len = n_windows * w;
    if tokens.len() < eval_len + 2 * w {
        bail_user!(
            "corpus has {} tokens, too few for {n_windows} eval window(s) of {w} tokens plus training data \
             (at least {} tokens); use a larger corpus or lower corpus.eval_tokens / model.context",
            tokens.len(),
            eval_len + 2 * w
        );
    }
    let start = Rng::new(split_seed ^ 0x5EED_5B17).below(tokens.len() - eval_len + 1);
    let eval = tokens[start..start + eval_len].to_vec();
    let mut train = tokens;
    train.drain(start..start + eval_len);
    let fingerprint =
        crate::hashing::fnv1a_u16(&train) ^ crate::hashing::fnv1a_u16(&eval).rotate_left(1);
    let n_train = train.len();
    Ok(Corpus {
        description: format!(
            "{description}; held out {eval_len} eval tokens ({n_windows} windows) at token {start} \
             (split_seed {split_seed}); {n_train} training tokens"
        ),
        vocab_size,
        train: TrainStream::Tokens(train),
        eval,
        context,
        floor: None,
        fingerprint,
        eval_bytes_per_token: 1.0,
        unique_train_tokens: Some(n_train as u64),
        tokenizer_json: None,
        cache: None,
    })
}

/// Read and concatenate text files (sorted; a newline after each), checking UTF-8.
fn read_text_files(files: &[PathBuf]) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    for f in files {
        let data = std::fs::read(f)
            .map_err(|e| crate::error::user(format!("corpus file {}: {e}", f.display())))?;
        if let Err(e) = std::str::from_utf8(&data) {
            bail_user!(
                "corpus file {} is not UTF-8 text (invalid byte at offset {}); \
                 convert it to UTF-8 or use a `tokens:` corpus",
                f.display(),
                e.valid_up_to()
            );
        }
        bytes.extend_from_slice(&data);
        bytes.push(b'\n');
    }
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        bail_user!(
            "corpus.text: the corpus is empty ({} file(s), no text in {})",
            files.len(),
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(bytes)
}

/// A token cache file: a JSON header line, then raw little-endian u16 tokens (training
/// stream, then held-out stream).
#[derive(serde::Serialize, serde::Deserialize)]
struct CacheHeader {
    train_len: usize,
    heldout_len: usize,
    heldout_bytes: usize,
    heldout_start_byte: usize,
    total_bytes: usize,
}

fn write_cache(path: &Path, h: &CacheHeader, train: &[u16], held: &[u16]) -> anyhow::Result<()> {
    let mut out = serde_json::to_vec(h)?;
    out.push(b'\n');
    out.reserve(2 * (train.len() + held.len()));
    for t in train.iter().chain(held) {
        out.extend_from_slice(&t.to_le_bytes());
    }
    crate::fsio::write_bytes_atomic(path, &out)
}

fn read_cache(path: &Path) -> Option<(CacheHeader, Vec<u16>, Vec<u16>)> {
    let bytes = std::fs::read(path).ok()?;
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let h: CacheHeader = serde_json::from_slice(&bytes[..nl]).ok()?;
    let body = &bytes[nl + 1..];
    if body.len() != 2 * (h.train_len + h.heldout_len) {
        return None;
    }
    let all: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let held = all[h.train_len..].to_vec();
    let mut train = all;
    train.truncate(h.train_len);
    Some((h, train, held))
}

/// Remove the files of `dir` whose name contains `needle`.
fn remove_files_containing(dir: &Path, needle: &str) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().contains(needle) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// What [`train_bpe`] returns: the tokenizer, its JSON, the cache header, and the training
/// and held-out tokens.
type BpeSplit = (
    crate::tokenize::Bpe,
    String,
    CacheHeader,
    Vec<u16>,
    Vec<u16>,
);

/// Hold out `eval_fraction` of the text (placed by `split_seed`, cut at line ends), train
/// the tokenizer on the rest, and tokenize both parts.
fn train_bpe(
    text: &str,
    vocab: usize,
    split_seed: u64,
    eval_fraction: f64,
) -> anyhow::Result<BpeSplit> {
    let n = text.len();
    let want = ((n as f64 * eval_fraction) as usize).max(1);
    let snap = |mut i: usize| {
        while i < n && (!text.is_char_boundary(i) || (i > 0 && text.as_bytes()[i - 1] != b'\n')) {
            i += 1;
        }
        i
    };
    let start = snap(Rng::new(split_seed ^ 0x5EED_5B17).below(n - want + 1));
    let end = snap((start + want).min(n));
    let train_text = format!("{}{}", &text[..start], &text[end..]);
    let held_text = &text[start..end];
    let bpe = crate::tokenize::Bpe::train(&train_text, vocab)?;
    let json = bpe.to_json()?;
    let train = bpe.encode(&train_text)?;
    let held = bpe.encode(held_text)?;
    let h = CacheHeader {
        train_len: train.len(),
        heldout_len: held.len(),
        heldout_bytes: held_text.len(),
        heldout_start_byte: start,
        total_bytes: n,
    };
    Ok((bpe, json, h, train, held))
}

/// A user error when the BPE split leaves too few tokens for the eval windows or training.
fn check_bpe_sizes(held: usize, train: usize, n_windows: usize, w: usize) -> anyhow::Result<()> {
    if held < n_windows * w {
        bail_user!(
            "corpus.eval_fraction: the held-out text is {held} BPE tokens, too few for {n_windows} eval windows \
             of {w} tokens; raise corpus.eval_fraction or lower corpus.eval_tokens"
        );
    }
    if train < 2 * w {
        bail_user!(
            "corpus has {train} training tokens after BPE, fewer than two windows of {w}; use a larger corpus"
        );
    }
    Ok(())
}

/// A text corpus with a byte-level BPE tokenizer trained on its training split. The held-out
/// block (`eval_fraction` of the bytes, placed by `split_seed`, cut at line ends) never
/// reaches the tokenizer's training. Tokenizer and tokens are cached in `.scalelab-cache/`
/// beside the first file, keyed by a hash of the text and the tokenizer settings, so a sweep
/// tokenizes once and a changed corpus is tokenized again.
fn bpe_corpus(
    files: &[PathBuf],
    bytes: Vec<u8>,
    vocab: usize,
    split_seed: u64,
    eval_fraction: f64,
    context: usize,
    n_windows: usize,
) -> anyhow::Result<Corpus> {
    let text = String::from_utf8(bytes).expect("checked UTF-8");
    let hash = fnv1a(text.as_bytes());
    // No dots in the tag: it is part of file names.
    let tag = format!(
        "bpe{vocab}-s{split_seed}-f{}ppm",
        (eval_fraction * 1e6).round() as u64
    );
    let dir = files[0]
        .parent()
        .unwrap_or(Path::new("."))
        .join(".scalelab-cache");
    let (tok_path, json_path) = (
        dir.join(format!("{hash:016x}-{tag}.tokens")),
        dir.join(format!("{hash:016x}-{tag}.tokenizer.json")),
    );
    let cached = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|j| Some((crate::tokenize::Bpe::from_json(&j).ok()?, j)))
        .and_then(|(b, j)| Some((b, j, read_cache(&tok_path)?)));
    let hit = cached.is_some();
    let (bpe, json, header, train, held) = match cached {
        Some((b, j, (h, t, e))) => (b, j, h, t, e),
        None => {
            let (b, j, h, t, e) = train_bpe(&text, vocab, split_seed, eval_fraction)?;
            // Drop stale caches of the same settings (the corpus changed), then write the
            // tokenizer and, last, the tokens (the commit point).
            remove_files_containing(&dir, &format!("-{tag}."));
            crate::fsio::write_text_atomic(&json_path, &j)?;
            write_cache(&tok_path, &h, &t, &e)?;
            (b, j, h, t, e)
        }
    };
    let w = context + 1;
    check_bpe_sizes(held.len(), train.len(), n_windows, w)?;
    let eval = held[..n_windows * w].to_vec();
    let lens = bpe.byte_lengths();
    let scored: u64 = (0..n_windows)
        .flat_map(|k| eval[k * w + 1..(k + 1) * w].iter())
        .map(|&t| lens.get(t as usize).copied().unwrap_or(1) as u64)
        .sum();
    let fingerprint = hash ^ fnv1a(format!("{tag}:ctx{context}:win{n_windows}").as_bytes());
    Ok(Corpus {
        description: format!(
            "{} text file(s), {} bytes, byte-level BPE with {} tokens ({}); held out {} bytes = {} tokens \
             at byte {} (split_seed {split_seed}), scored on {} tokens ({n_windows} windows); {} training tokens",
            files.len(),
            header.total_bytes,
            bpe.vocab_size(),
            if hit { "from cache" } else { "trained now" },
            header.heldout_bytes,
            held.len(),
            header.heldout_start_byte,
            n_windows * context,
            train.len()
        ),
        vocab_size: bpe.vocab_size(),
        unique_train_tokens: Some(train.len() as u64),
        train: TrainStream::Tokens(train),
        eval,
        context,
        floor: None,
        fingerprint,
        eval_bytes_per_token: scored as f64 / (n_windows * context) as f64,
        tokenizer_json: Some(json),
        cache: Some((tok_path, hit)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in stream of language `seed` (2 topics), generated from the same seed.
    fn synth_stream(seed: u64) -> TrainStream {
        TrainStream::Synth {
            lang: Box::new(SynthLang::builtin(seed, 2)),
            seed,
        }
    }

    /// Windows in sorted order: the multiset a run reads, whatever its order.
    fn sorted(mut v: Vec<Vec<u16>>) -> Vec<Vec<u16>> {
        v.sort();
        v
    }

    /// The tokens a run of `windows` windows reads, in read order.
    fn read_tokens(
        stream: &TrainStream,
        order: DataOrder,
        windows: u64,
        ctx: usize,
        group: u64,
        seed: u64,
    ) -> Vec<Vec<u16>> {
        let o = WindowOrder::new(order, windows, group, seed);
        let mut r = stream.reader();
        (0..windows)
            .map(|k| {
                let mut w = Vec::new();
                r.read(o.window(k) as usize * ctx, ctx + 1, &mut w);
                w
            })
            .collect()
    }

    #[test]
    fn shuffled_order_reads_the_same_nested_windows() {
        let stream = synth_stream(3);
        let ctx = 16;
        for group in [7u64, 1000] {
            let seq = read_tokens(&stream, DataOrder::Sequential, 50, ctx, group, 0);
            let shuf = read_tokens(&stream, DataOrder::Shuffled, 50, ctx, group, 0);
            assert_ne!(seq, shuf, "the order changes");
            // Equal D: the same windows (token multisets), whatever the order ...
            assert_eq!(sorted(seq.clone()), sorted(shuf.clone()));
            // ... in the same order every time (seeded, no state) ...
            assert_eq!(
                shuf,
                read_tokens(&stream, DataOrder::Shuffled, 50, ctx, group, 0)
            );
            // ... and a longer run's windows contain a shorter run's.
            let longer = read_tokens(&stream, DataOrder::Shuffled, 80, ctx, group, 0);
            assert!(shuf.iter().all(|w| longer.contains(w)));
            assert_eq!(
                sorted(longer),
                sorted(read_tokens(
                    &stream,
                    DataOrder::Sequential,
                    80,
                    ctx,
                    group,
                    0
                ))
            );
        }
    }

    #[test]
    fn per_seed_orders_differ_by_seed_but_read_the_same_nested_windows() {
        let stream = synth_stream(3);
        let (ctx, per_seed) = (16, DataOrder::ShuffledPerSeed);
        for group in [7u64, 1000] {
            let s0 = read_tokens(&stream, per_seed, 50, ctx, group, 0);
            let s1 = read_tokens(&stream, per_seed, 50, ctx, group, 1);
            let shared = read_tokens(&stream, DataOrder::Shuffled, 50, ctx, group, 1);
            // Seeds give different orders (and differ from the shared shuffle) ...
            assert_ne!(s0, s1);
            assert_ne!(s1, shared);
            // ... of the same windows, deterministically ...
            assert_eq!(sorted(s0.clone()), sorted(s1.clone()));
            assert_eq!(sorted(s1.clone()), sorted(shared));
            assert_eq!(s1, read_tokens(&stream, per_seed, 50, ctx, group, 1));
            // ... and a longer run's windows contain a shorter run's, whatever the seed.
            let longer = read_tokens(&stream, per_seed, 80, ctx, group, 0);
            assert!(s1.iter().all(|w| longer.contains(w)));
        }
        // The shared shuffle ignores the run seed.
        assert_eq!(
            read_tokens(&stream, DataOrder::Shuffled, 50, ctx, 7, 0),
            read_tokens(&stream, DataOrder::Shuffled, 50, ctx, 7, 5)
        );
    }

    #[test]
    fn shuffled_groups_visit_every_window_once() {
        for (windows, group) in [(10u64, 3u64), (12, 4), (5, 100), (1, 1)] {
            let o = WindowOrder::new(DataOrder::Shuffled, windows, group, 0);
            let mut seen: Vec<u64> = (0..windows).map(|k| o.window(k)).collect();
            seen.sort();
            assert_eq!(seen, (0..windows).collect::<Vec<_>>());
        }
    }

    #[test]
    fn reads_across_chunks_use_both_cache_slots() {
        let stream = synth_stream(5);
        let mut r = stream.reader();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        // A window spanning chunks 0 and 1, then chunk 0 again: both stay cached and agree
        // with a fresh reader.
        r.read(SYNTH_CHUNK - 3, 8, &mut a);
        r.read(10, 8, &mut a);
        let mut fresh = stream.reader();
        fresh.read(SYNTH_CHUNK - 3, 8, &mut b);
        let mut fresh = stream.reader();
        fresh.read(10, 8, &mut b);
        assert_eq!(a, b);
        assert_eq!(r.cache.iter().flatten().count(), 2);
    }

    /// A tiny language: 2 topics, 2 classes, 5 words.
    fn tiny() -> SynthLang {
        SynthLang::new(
            vec![vec![0.8, 0.2], vec![0.3, 0.7]],
            vec![vec![0.4, 0.6], vec![0.9, 0.1]],
            vec![
                b"a ".to_vec(),
                b"ab ".to_vec(),
                b"b\n".to_vec(),
                b"ba ".to_vec(),
                b"c ".to_vec(),
            ],
            vec![0, 0, 0, 1, 1],
            vec![vec![1.0, 2.0, 3.0, 1.0, 1.0], vec![3.0, 1.0, 0.5, 0.2, 2.0]],
        )
    }

    /// P(byte string) by enumerating every hidden state sequence.
    fn brute_prob(lang: &SynthLang, bytes: &[u8]) -> f64 {
        // Parse into complete words and a trailing partial prefix.
        let mut words = Vec::new();
        let mut cur = Vec::new();
        for &b in bytes {
            cur.push(b);
            if is_delim(b) {
                let Some(k) = lang.words.iter().position(|w| *w == cur) else {
                    return 0.0;
                };
                words.push(k);
                cur.clear();
            }
        }
        let (nt, nc) = (lang.n_topics(), lang.n_classes());
        let ns = nt * nc;
        let len = words.len() + 1;
        let mut total = 0.0;
        let mut seq = vec![0usize; len];
        loop {
            let mut p = lang.stationary[seq[0]];
            for i in 0..len {
                let (t, c) = (seq[i] / nc, seq[i] % nc);
                if i < words.len() {
                    let w = words[i];
                    p *= if lang.word_class[w] == c {
                        lang.emit[t][w]
                    } else {
                        0.0
                    };
                    let (t2, c2) = (seq[i + 1] / nc, seq[i + 1] % nc);
                    p *= lang.topic_trans[t][t2] * lang.class_trans[c][c2];
                } else if !cur.is_empty() {
                    let m: f64 = (0..lang.words.len())
                        .filter(|&k| lang.word_class[k] == c && lang.words[k].starts_with(&cur))
                        .map(|k| lang.emit[t][k])
                        .sum();
                    p *= m;
                }
            }
            total += p;
            // Next sequence (odometer).
            let mut i = 0;
            loop {
                if i == len {
                    return total;
                }
                seq[i] += 1;
                if seq[i] < ns {
                    break;
                }
                seq[i] = 0;
                i += 1;
            }
        }
    }

    #[test]
    fn forward_matches_brute_force() {
        let lang = tiny();
        let text = lang.generate(7, 14);
        let bytes = &text.bytes[..text.bytes.len().min(14)];
        let lp = lang.log_probs(bytes);
        for j in 0..bytes.len() {
            let num = brute_prob(&lang, &bytes[..=j]);
            let den = if j == 0 {
                1.0
            } else {
                brute_prob(&lang, &bytes[..j])
            };
            let want = (num / den).ln();
            assert!(
                (lp[j] - want).abs() < 1e-9,
                "byte {j}: forward {} vs brute {}",
                lp[j],
                want
            );
        }
    }

    #[test]
    fn knobs_shape_the_language_and_default_knobs_keep_the_fingerprint() {
        let default = SynthLang::builtin(1, 8);
        assert_eq!(default.words.len(), 2643);
        let k = |lexicon: f64, zipf: f64, topic_stay: f64| LangKnobs {
            topics: 8,
            lexicon,
            zipf,
            topic_stay,
        };
        assert_eq!(
            SynthLang::with_knobs(1, k(1.0, 1.1, 0.98)).words.len(),
            2643
        );
        // Open classes scale: 16 + 100 + 375 + 175 + 24 + 3.
        let small = SynthLang::with_knobs(1, k(0.25, 1.1, 0.98));
        assert_eq!(small.words.len(), 693);
        // Topic persistence reaches the transition matrix.
        let sticky = SynthLang::with_knobs(1, k(1.0, 1.1, 0.5));
        assert!((sticky.topic_trans[0][0] - 0.5).abs() < 1e-12);
        // A steeper Zipf concentrates mass on a class's first words: lower entropy text.
        let h = |lang: &SynthLang| {
            let t = lang.generate(5, 30_000);
            let lp = lang.log_probs(&t.bytes);
            -lp.iter().sum::<f64>() / lp.len() as f64
        };
        assert!(h(&SynthLang::with_knobs(1, k(1.0, 1.6, 0.98))) < h(&default));
        assert!(h(&small) < h(&default));
        // Default knobs keep the fingerprint (and so run ids) of folders made before the knobs.
        assert_eq!(k(1.0, 1.1, 0.98).fingerprint_suffix(), "");
        assert_ne!(k(0.25, 1.1, 0.98).fingerprint_suffix(), "");
    }

    #[test]
    fn next_byte_distribution_sums_to_one() {
        let lang = SynthLang::builtin(3, 4);
        let text = lang.generate(11, 300);
        let prefix = &text.bytes[..57];
        let mut total = 0.0;
        for b in 0..=255u8 {
            let mut s = prefix.to_vec();
            s.push(b);
            let lp = lang.log_probs(&s);
            total += lp[lp.len() - 1].exp();
        }
        assert!((total - 1.0).abs() < 1e-9, "sum {total}");
    }

    #[test]
    fn floor_below_unigram_entropy_and_generated_text_is_likely() {
        let lang = SynthLang::builtin(1, 8);
        let text = lang.generate(5, 50_000);
        let lp = lang.log_probs(&text.bytes);
        assert!(lp.iter().all(|x| x.is_finite()));
        let h = -lp.iter().sum::<f64>() / lp.len() as f64;
        let mut counts = [0f64; 256];
        for &b in &text.bytes {
            counts[b as usize] += 1.0;
        }
        let n = text.bytes.len() as f64;
        let unigram: f64 = counts
            .iter()
            .filter(|&&c| c > 0.0)
            .map(|&c| -(c / n) * (c / n).ln())
            .sum();
        assert!(
            h > 0.3 && h < unigram - 0.5,
            "source entropy {h} vs unigram {unigram}"
        );
    }

    #[test]
    fn builtin_words_are_prefix_free_and_unique() {
        let lang = SynthLang::builtin(1, 8);
        assert_eq!(lang.words.len(), 2643);
        for w in lang.words.windows(2) {
            assert!(w[0] < w[1]);
            assert!(!w[1].starts_with(&w[0]));
        }
    }

    #[test]
    fn synthetic_stream_reads_across_chunks() {
        let lang = SynthLang::builtin(4, 2);
        let direct = lang.generate(4, 100_000).bytes;
        let stream = TrainStream::Synth {
            lang: Box::new(lang.clone()),
            seed: 4,
        };
        let mut r = stream.reader();
        // Chunk 0 is the plain generated stream, whatever the read pattern.
        let mut a = Vec::new();
        r.read(0, 1000, &mut a);
        r.read(90_000, 500, &mut a);
        assert!(a[..1000].iter().zip(&direct).all(|(x, &y)| *x == y as u16));
        assert!(a[1000..]
            .iter()
            .zip(&direct[90_000..])
            .all(|(x, &y)| *x == y as u16));
        // A window across the chunk boundary is chunk 0's tail then chunk 1's head.
        let mut w = Vec::new();
        r.read(SYNTH_CHUNK - 3, 8, &mut w);
        let mut tail = Vec::new();
        stream.reader().read(SYNTH_CHUNK - 3, 3, &mut tail);
        let mut head = Vec::new();
        stream.reader().read(SYNTH_CHUNK, 5, &mut head);
        assert_eq!(w, [tail, head].concat());
    }

    #[test]
    fn glob() {}
}
